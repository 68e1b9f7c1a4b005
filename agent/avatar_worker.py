"""The avatar as its own participant: a worker dispatched by the agent (see worker.py, remote
mode) that receives the agent's speech over LiveKit data streams and publishes the avatar's
audio and video on the agent's behalf. Run it where the renderer should run (a GPU machine):

    python -m agent.avatar_worker start      # or dev

It registers as AVATAR_WORKER_NAME (default `avatar-renderer`) and takes only explicit dispatches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

from livekit import rtc
from livekit.agents import AgentServer, JobContext, JobRequest
from livekit.agents.voice.avatar import DataStreamAudioReceiver

from .cli import run
from .config import Settings
from .worker import PUBLISH_ON_BEHALF, start_job_avatar

logger = logging.getLogger("avatar-worker")

server = AgentServer(initialize_process_timeout=60.0)


async def accept(request: JobRequest) -> None:
    """Join under the identity the agent chose, marked as publishing on the agent's behalf, so
    front ends show this participant's tracks as the agent's face and voice."""
    meta = _metadata(request.job.metadata)
    await request.accept(
        name="avatar",
        identity=meta["avatar_identity"],
        attributes={PUBLISH_ON_BEHALF: meta["agent_identity"]},
    )


@server.rtc_session(
    agent_name=os.environ.get("AVATAR_WORKER_NAME", "avatar-renderer"), on_request=accept
)
async def entrypoint(ctx: JobContext) -> None:
    settings = Settings.from_env()
    agent_identity = _metadata(ctx.job.metadata)["agent_identity"]
    await ctx.connect()

    # This participant answers the avatar's control RPCs. It has no AgentSession to stop, so
    # `avatar.interrupt` clears its own playback (start_avatar's default), as the agent's
    # `lk.clear_buffer` would; speech the agent is still streaming would play afterwards.
    # The avatar is the one the agent forwarded in our dispatch metadata (`avatar_id`).
    await start_job_avatar(
        ctx, DataStreamAudioReceiver(ctx.room, sender_identity=agent_identity), settings
    )

    # The avatar has no reason to stay once the agent it speaks for has left.
    agent_left = asyncio.Event()

    def on_disconnected(participant: rtc.RemoteParticipant) -> None:
        if participant.identity == agent_identity:
            agent_left.set()

    ctx.room.on("participant_disconnected", on_disconnected)
    await agent_left.wait()
    logger.info("agent %s left room %s; avatar leaving", agent_identity, ctx.room.name)
    ctx.shutdown("agent left")


def _metadata(raw: str) -> dict[str, str]:
    meta = json.loads(raw or "{}")
    if not {"agent_identity", "avatar_identity"} <= meta.keys():
        raise ValueError("avatar dispatch metadata needs agent_identity and avatar_identity")
    return meta


if __name__ == "__main__":
    run(server, name="avatar-worker")
