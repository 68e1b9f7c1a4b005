"""Your own agent, its avatar rendered on another machine (a GPU box, say).

On the machine that renders, against the same LiveKit server (`pip install avatar-agents`, plus
the renderer's extra, e.g. `avatar-agents[wav2lip]`):

    avatar-worker download-files && avatar-worker start     # registers as "avatar-renderer"

Here, where the agent runs:

    python remote_avatar.py dev

The agent dispatches the avatar worker into each room and streams its speech to it over LiveKit
data streams; the avatar joins as its own participant, publishing on the agent's behalf (front
ends show it as the agent's face). Avatars travel by catalog id: put `doctor.png` in the avatar
machine's AVATAR_AVATARS_DIR and pass avatar="doctor".
"""

import os

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, cli

from avatar_runtime import AvatarSession
from avatar_runtime.piper_tts import PiperTTS

server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    session = AgentSession(tts=PiperTTS())  # your STT, LLM and TTS here
    avatar = AvatarSession(
        mode="remote",
        renderer=os.environ.get("RENDERER", "meshwarp"),  # one the avatar machine can run
        avatar=os.environ.get("AVATAR_ID"),  # None: the worker's own default
        avatar_worker_name="avatar-renderer",
    )
    await avatar.start(session, room=ctx.room)
    await session.start(agent=Agent(instructions="You are a friendly assistant."), room=ctx.room)
    await avatar.wait_for_join()
    session.say("Hello! My face is rendered on another machine.")
    await avatar.set_emotion("happy", 0.6)


if __name__ == "__main__":
    cli.run_app(server)
