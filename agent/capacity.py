"""How busy a worker is, as LiveKit sees it: by the avatar sessions it runs, not by CPU.

livekit-agents reports the whole machine's CPU use by default, and livekit-server sends a job
only to a worker below its target load (0.7). On a machine shared with other work (a benchmark,
the control API, a second worker) that refuses sessions the worker could run, and on a GPU
worker the CPU says little about capacity at all. An avatar session costs about the same
every second it runs, so capacity is a number of sessions: `AVATAR_WORKER_SESSIONS`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the preflight imports this module; livekit.agents takes a second
    from livekit.agents import AgentServer

FULL_LOAD = 0.7
"""The load at which LiveKit (server target and production worker threshold) sees a worker as
full; reported once the worker runs its most sessions. The worker keeps livekit-agents' own
threshold: setting 0.7 in development too made one job still starting (a "reserved slot",
counted as a whole threshold there) fill the worker."""


def default_worker_sessions() -> int:
    """Two sessions per CPU core: meshwarp sustains 30 fps at that density (docs/benchmarks.md)."""
    return max(1, 2 * (os.cpu_count() or 1))


def session_load(server: AgentServer) -> float:
    """`load_fnc` for AgentServer: FULL_LOAD at AVATAR_WORKER_SESSIONS running jobs."""
    return FULL_LOAD * len(server.active_jobs) / worker_sessions()


def worker_sessions() -> int:
    raw = os.environ.get("AVATAR_WORKER_SESSIONS", "")
    try:
        return max(1, int(raw)) if raw else default_worker_sessions()
    except ValueError:  # the preflight (agent/config.py) rejects it before the worker starts
        return default_worker_sessions()
