"""Leave a room that livekit-server lost.

A single livekit-server keeps its rooms in memory. Killed and started again, it has none; the
job's participant reconnects to it (the SDK retries) and, by joining, creates an empty room of
the same name: no dispatch, no metadata, no session behind it (the control API ends such a
session, control_api/sessions.py). A job that stayed there would hold a worker slot and
publish an avatar nobody asked for, so after every reconnection the job asks the server
whether its room is still the one it was dispatched to (the same room sid), and shuts down if
it is not.
"""

from __future__ import annotations

import asyncio
import logging

from livekit import api
from livekit.agents import JobContext

logger = logging.getLogger("avatar-agent")

_ATTEMPTS = 5
_RETRY_S = 1.0


def leave_when_room_lost(ctx: JobContext) -> None:
    """After each reconnection of the job's room, shut the job down if the server no longer
    has the room it was dispatched to."""
    dispatched_to = ctx.job.room.sid
    if not dispatched_to:
        return  # nothing to compare with (a job made by hand)
    tasks: set[asyncio.Task[None]] = set()

    def on_reconnected() -> None:
        task = asyncio.create_task(_check(ctx, dispatched_to), name="check-room")
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    ctx.room.on("reconnected", on_reconnected)


async def _check(ctx: JobContext, dispatched_to: str) -> None:
    name = ctx.room.name
    for attempt in range(_ATTEMPTS):
        try:
            listed = await ctx.api.room.list_rooms(api.ListRoomsRequest(names=[name]))
            break
        except Exception as error:  # the server may still be starting: ask again
            if attempt == _ATTEMPTS - 1:
                logger.warning("room %s: could not check it after reconnecting: %s", name, error)
                return
            await asyncio.sleep(_RETRY_S)
    sids = [room.sid for room in listed.rooms]
    if dispatched_to in sids:
        return  # the same room (a resumed connection, or a server that kept it)
    logger.warning(
        "room %s: LiveKit lost it (sid %s, now %s; was the server restarted?); ending the job",
        name,
        dispatched_to,
        sids[0] if sids else "none",
    )
    ctx.shutdown("livekit lost the room")
