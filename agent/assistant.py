"""What the agent says and when: an LLM assistant when one is configured, otherwise an agent
that greets the room and speaks back the chat text it is sent."""

from __future__ import annotations

from livekit.agents import Agent, AgentSession
from livekit.agents.voice.room_io import TextInputEvent

INSTRUCTIONS = (
    "You are a friendly assistant with a face: people see you as a talking avatar. "
    "Answer in short, natural spoken sentences without markdown, lists or emoji."
)


class AvatarAssistant(Agent):
    def __init__(self, *, greeting: str, has_llm: bool) -> None:
        super().__init__(instructions=INSTRUCTIONS)
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
