"""The avatar as its own participant: a worker dispatched by the agent (see worker.py, remote
mode) that receives the agent's speech over LiveKit data streams and publishes the avatar's
audio and video on the agent's behalf. Run it where the renderer should run (a GPU machine):

    python -m agent.avatar_worker start      # or dev

It registers as AVATAR_WORKER_NAME (default `avatar-renderer`) and takes only explicit dispatches.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from livekit import rtc
from livekit.agents import AgentServer, JobContext, JobRequest

import renderers
from avatar_runtime import (
    EMOTIONS,
    AvatarState,
    BackgroundLibrary,
    ClearingAudioReceiver,
    RunningAvatar,
    RuntimeOptions,
    start_avatar,
)
from avatar_runtime.controls import DEFAULT_INTENSITY
from avatar_runtime.remote import DEFAULT_WORKER_NAME, PUBLISH_ON_BEHALF, RemoteAvatarRequest

from .avatar_source import avatar_source, with_default_avatar
from .capacity import session_load
from .cli import run
from .config import Settings
from .dead_jobs import remove_participants_of_dead_jobs
from .lost_room import leave_when_room_lost

logger = logging.getLogger("avatar-worker")

# Load by sessions, as the agent worker does (capacity.py): by CPU, LiveKit refused the avatar's
# dispatch whenever the machine was busy, and the agent waited a re-dispatch (6 s and more).
server = AgentServer(initialize_process_timeout=60.0, load_fnc=session_load)
remove_participants_of_dead_jobs(server)


async def accept(request: JobRequest) -> None:
    """Join under the identity the agent chose, marked as publishing on the agent's behalf, so
    front ends show this participant's tracks as the agent's face and voice."""
    try:
        meta = RemoteAvatarRequest.from_metadata(request.job.metadata)
    except ValueError as error:
        logger.error("rejecting an avatar job from room %s: %s", request.room.name, error)
        await request.reject()
        return
    await request.accept(
        name=meta.name or "avatar",
        identity=meta.avatar_identity,
        attributes={PUBLISH_ON_BEHALF: meta.agent_identity},
    )


@server.rtc_session(
    agent_name=os.environ.get("AVATAR_WORKER_NAME", DEFAULT_WORKER_NAME), on_request=accept
)
async def entrypoint(ctx: JobContext) -> None:
    settings = Settings.from_env()
    meta = RemoteAvatarRequest.from_metadata(ctx.job.metadata)
    await ctx.connect()
    leave_when_room_lost(ctx)

    # This participant answers the avatar's control RPCs. It has no AgentSession to stop, so
    # `avatar.interrupt` clears its own playback (start_avatar's default), as the agent's
    # `lk.clear_buffer` would; speech the agent is still streaming would play afterwards.
    # The avatar is the one the agent asked for (`avatar_id`), resolved on this machine.
    # On clear_buffer it also drops what was still arriving of the cleared speech (its end
    # included), so an interruption never counts as an extra utterance.
    receiver = ClearingAudioReceiver(ctx.room, sender_identity=meta.agent_identity)
    renderer, options, state = _requested(meta, settings)

    async def start(source: Path | None) -> RunningAvatar:
        return await start_avatar(
            ctx.room, receiver, renderer=renderer, source=source, options=options, state=state
        )

    source = avatar_source(meta.avatar_id, settings.source)
    avatar = await with_default_avatar(start, source, settings.source)
    ctx.add_shutdown_callback(avatar.aclose)

    # The avatar has no reason to stay once the agent it speaks for has left, or once it has
    # been removed from the room (the agent's AvatarSession.aclose does that).
    done = asyncio.Event()

    def on_participant_left(participant: rtc.RemoteParticipant) -> None:
        if participant.identity == meta.agent_identity:
            logger.info(
                "agent %s left room %s; avatar leaving", participant.identity, ctx.room.name
            )
            done.set()

    ctx.room.on("participant_disconnected", on_participant_left)
    ctx.room.on("disconnected", lambda *_: done.set())
    if meta.agent_identity not in ctx.room.remote_participants:
        done.set()  # it left before we joined
    await done.wait()
    ctx.shutdown("agent left")


def _requested(
    meta: RemoteAvatarRequest, settings: Settings
) -> tuple[str, RuntimeOptions, AvatarState]:
    """What the agent asked for, this worker's configuration where it asked for nothing or
    for what this machine cannot do (logged: the session goes on with what it can)."""
    renderer = meta.renderer or settings.renderer
    if renderer not in renderers.available():
        logger.error("renderer %r is not available here; using %s", renderer, settings.renderer)
        renderer = settings.renderer
    options = RuntimeOptions(
        width=meta.width or settings.width,
        height=meta.height or settings.height,
        fps=meta.fps or settings.fps,
        audio_sample_rate=settings.audio_sample_rate,
        render_timeout_s=settings.render_timeout_s,
    )
    state = AvatarState()
    if meta.emotion is not None:
        if meta.emotion in EMOTIONS:
            intensity = meta.intensity if meta.intensity is not None else DEFAULT_INTENSITY
            state.set_emotion(meta.emotion, intensity)
        else:
            logger.error("unknown emotion %r asked for; starting neutral", meta.emotion[:40])
    if meta.background is not None:
        try:
            state.set_background(meta.background, BackgroundLibrary())
        except ValueError:
            logger.error("unknown background %r asked for; showing the original", meta.background)
    return renderer, options, state


def main() -> None:
    run(server, name="avatar-worker")


if __name__ == "__main__":
    main()
