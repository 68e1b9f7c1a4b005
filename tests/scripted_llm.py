"""A livekit-agents LLM that answers from a script: a stand-in for a model in tests that need
an LLM-driven AgentSession without any API key. Each `chat()` call takes the next step of the
script: text to say, or tool calls to make (the session runs them and calls again)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, llm
from livekit.agents.types import NOT_GIVEN, NotGivenOr


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


class ScriptedLLM(llm.LLM):
    """`steps`: what each call answers, in order: a string (said as the reply) or a list of
    ToolCalls. After the last step every call answers `fallback`. `calls` keeps the chat
    context of each call, to see the tool results the model was given."""

    def __init__(self, steps: Sequence[str | Sequence[ToolCall]], fallback: str = "Okay.") -> None:
        super().__init__()
        self.steps = list(steps)
        self.fallback = fallback
        self.calls: list[llm.ChatContext] = []

    @property
    def model(self) -> str:
        return "scripted"

    @property
    def provider(self) -> str:
        return "tests"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        self.calls.append(chat_ctx.copy())
        step = self.steps.pop(0) if self.steps else self.fallback
        return _ScriptedStream(
            self, step, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options
        )


class _ScriptedStream(llm.LLMStream):
    def __init__(self, model: ScriptedLLM, step: str | Sequence[ToolCall], **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self._step = step

    async def _run(self) -> None:
        request_id = uuid.uuid4().hex
        if isinstance(self._step, str):
            delta = llm.ChoiceDelta(role="assistant", content=self._step)
        else:
            delta = llm.ChoiceDelta(
                role="assistant",
                tool_calls=[
                    llm.FunctionToolCall(
                        name=call.name,
                        arguments=json.dumps(call.arguments),
                        call_id=f"call_{uuid.uuid4().hex[:8]}",
                    )
                    for call in self._step
                ],
            )
        self._event_ch.send_nowait(llm.ChatChunk(id=request_id, delta=delta))
