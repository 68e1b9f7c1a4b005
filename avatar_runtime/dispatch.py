"""Explicit agent dispatch that is made again while the dispatched participant does not join.

livekit-server sends a dispatch's job request once, and only to workers whose last reported
load (their machine's CPU use, averaged over a few seconds) is under its target load, 0.7 by
default; when no worker qualifies it logs "no servers available", drops the request and never
retries. A busy machine does that easily (on two cores, the previous session's job winding
down is enough). The dispatch itself cannot tell a dropped request from a job still starting
(LiveKit may list the job only once the agent has joined), so the only safe signal is the
participant joining; the old dispatch is never deleted, since that would end a job that is
merely slow. A late duplicate resolves itself: a second agent leaves (agent/worker.py), and a
second avatar joins under the same identity, which LiveKit lets replace the first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from livekit import api

logger = logging.getLogger("avatar_runtime")

DISPATCH_CHECKS_S = (6.0, 10.0, 20.0)
"""How long to wait for the participant after each dispatch before dispatching again; after
the last wait, give up. A worker here starts a job in about 2 to 4 s."""
_POLL_S = 0.1


async def dispatch_until_joined(
    lkapi: api.LiveKitAPI,
    request: api.CreateAgentDispatchRequest,
    joined: Callable[[], bool],
    *,
    checks_s: Sequence[float] = DISPATCH_CHECKS_S,
    already_dispatched: bool = False,
) -> bool:
    """`create_dispatch(request)` (unless `already_dispatched`, e.g. with the room), then
    again after each wait of `checks_s` that ends with `joined()` still false. True once it is
    true, False when the last wait ended without."""
    if not already_dispatched:
        await lkapi.agent_dispatch.create_dispatch(request)
    for number, wait_s in enumerate(checks_s, start=1):
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if joined():
                return True
            await asyncio.sleep(_POLL_S)
        if joined():
            return True
        if number == len(checks_s):
            break
        logger.warning(
            "room %s: %s has not joined after %.0f s; dispatching it again",
            request.room,
            request.agent_name,
            wait_s,
        )
        await lkapi.agent_dispatch.create_dispatch(request)
    return False
