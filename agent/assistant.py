"""What the agent says and when: an LLM assistant when one is configured, otherwise an agent
that greets the room and speaks back the chat text it is sent."""

from __future__ import annotations

from collections.abc import Sequence

from livekit.agents import Agent, AgentSession
from livekit.agents.llm import FunctionTool, RawFunctionTool
from livekit.agents.voice.room_io import TextInputEvent

INSTRUCTIONS = (
    "You are a friendly assistant with a face: people see you as a talking avatar. "
    "Answer in short, natural spoken sentences without markdown, lists or emoji."
)
FACE_INSTRUCTIONS = (
    " Your face shows emotion: call set_emotion as the conversation changes (concerned when"
    " someone describes a problem, reassuring when you comfort them, happy when you greet),"
    " and set_background when asked for another scene."
)


class AvatarAssistant(Agent):
    def __init__(
        self,
        *,
        greeting: str,
        has_llm: bool,
        tools: Sequence[FunctionTool | RawFunctionTool] = (),
    ) -> None:
        super().__init__(
            instructions=INSTRUCTIONS + (FACE_INSTRUCTIONS if tools else ""), tools=list(tools)
        )
        self._greeting = greeting
        self._has_llm = has_llm

    async def on_enter(self) -> None:
        if self._has_llm:
            self.session.generate_reply(instructions=f"Greet the user briefly: {self._greeting}")
        else:
            self.session.say(self._greeting)


async def speak_chat_text(session: AgentSession, event: TextInputEvent) -> None:
    """Without an LLM, chat text is said as it is; a new message interrupts the current one."""
    text = event.text.strip()
    if not text:
        return
    await session.interrupt()
    session.say(text)
