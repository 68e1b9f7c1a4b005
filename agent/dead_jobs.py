"""Take a dead job's participant out of its room at once.

When a job process dies (killed, out of memory, a crash in native code), its participant
stays in the room: livekit-server waits about 20 s for it to reconnect before it lets the
others know it left, and until then the control API, the avatar worker and every viewer take
it for live. livekit-server does not dispatch the job again either (the worker reports it as
failed; measured with livekit-server 1.13 and livekit-agents 1.8). The worker process itself
survives and sees the process exit at once, so it removes the participant through the server
API: the room hears `participant_disconnected` (reason PARTICIPANT_REMOVED) within a second,
and the control API dispatches a new agent to the session (control_api/sessions.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from livekit import api
from livekit.agents import AgentServer

from .config import Settings, http_url

logger = logging.getLogger("avatar-agent")


def remove_participants_of_dead_jobs(server: AgentServer) -> None:
    """Once `server` runs, remove the participant of every job whose process ends with an
    error from the job's room."""
    tasks: set[asyncio.Task[None]] = set()

    def on_started() -> None:
        # livekit-agents has no public event for a job process that died; its process pool
        # has one. Checked here, so that a livekit-agents without it is logged, not fatal.
        pool = getattr(server, "_proc_pool", None)
        if pool is None or not hasattr(pool, "on"):
            logger.warning("cannot watch job processes: a dead job's participant stays ~20 s")
            return
        settings = Settings.from_env()
        pool.on("process_closed", lambda proc: on_closed(proc, settings))

    def on_closed(proc: Any, settings: Settings) -> None:
        running = getattr(proc, "running_job", None)
        exitcode = getattr(proc, "exitcode", None)
        if running is None or running.fake_job or exitcode == 0:
            return  # an idle process, a console job, or a job that ended and left by itself
        room, identity = running.job.room.name, running.accept_arguments.identity
        logger.warning(
            "the job process for room %s died (exit code %s); removing %s from the room",
            room,
            exitcode,
            identity,
        )
        task = asyncio.create_task(_remove(settings, room, identity), name="remove-dead-job")
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server.on("worker_started", on_started)


async def _remove(settings: Settings, room: str, identity: str) -> None:
    try:
        async with api.LiveKitAPI(
            http_url(settings.livekit_url), settings.api_key, settings.api_secret
        ) as lkapi:
            await lkapi.room.remove_participant(
                api.RoomParticipantIdentity(room=room, identity=identity)
            )
    except Exception as error:  # gone already, or the room with it: nothing to remove
        logger.info("could not remove %s from room %s: %s", identity, room, error)
