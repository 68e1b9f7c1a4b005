"""Where the time goes from `POST /avatars` to the first video frame a viewer gets.

The real stack on loopback: livekit-server, the control API (`python -m control_api`) and the
agent worker (`python -m agent dev`, meshwarp), as `make demo` runs them. Each trial creates a
session, joins its room as a viewer with the token the answer carries, and deletes it again.
The steps come from three clocks that are one clock on one machine: the HTTP client, the
viewer's room events, and the worker's log lines (wall-clock milliseconds, matched by room).

    python -m bench.sync_startup [--trials 5]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from tests.control_api_process import ControlApi, running_control_api
from tests.livekit_server import LiveKitServer, running_livekit_server
from tests.worker_process import running_worker

from .report import emit_json
from .viewer import Viewer

AGENT_NAME = "startup-agent"
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_WORKER_STEPS = {
    "job_request": "received job request",
    "waited_for_process": "no warmed process available",
    "process_initializing": "initializing process",
    "process_initialized": "process initialized",
    "entrypoint": ": stt=",
}


def _log_times(log: Path, room: str, since_wall: float) -> dict[str, float]:
    """Wall-clock times of the worker's steps for `room` (first of each after `since_wall`).
    'initializing process' names no room: the first one after the job request is its."""
    found: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        match = _LOG_TIME.match(line)
        if not match:
            continue
        wall = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if wall < since_wall - 0.01:
            continue
        for step, needle in _WORKER_STEPS.items():
            if step in found or needle not in line:
                continue
            mentions_room = room in line
            if step in ("process_initializing", "process_initialized"):
                if "job_request" in found:
                    found[step] = wall
            elif step == "job_request" or mentions_room:
                found[step] = wall
    return found


async def trial(api: ControlApi, server: LiveKitServer, log: Path) -> dict[str, Any]:
    async with aiohttp.ClientSession(base_url=api.base_url, headers=api.headers()) as http:
        # Both clocks at once: the worker logs wall time, the viewer perf_counter.
        wall0, t0 = time.time(), time.perf_counter()
        async with http.post("/avatars", json={"avatar_id": "default"}) as resp:
            session = await resp.json()
            assert resp.status == 201, session
        answered = time.perf_counter()
        viewer = Viewer(server.url, session["token"])
        try:
            await viewer.connect()
            await viewer.wait_for(lambda: viewer.first_video_at is not None, 60, "first frame")
            await asyncio.sleep(0.5)
        finally:
            await viewer.aclose()
        async with http.delete(f"/avatars/{session['session_id']}"):
            pass
    steps: dict[str, float] = {"post_answered": answered - t0}
    for name, at in viewer.events.items():
        steps[f"viewer_{name}"] = at - t0
    for name, wall in _log_times(log, session["session_id"], wall0).items():
        steps[f"worker_{name}"] = wall - wall0
    return {k: round(v * 1000.0, 1) for k, v in sorted(steps.items(), key=lambda kv: kv[1])}


async def run(server: LiveKitServer, trials: int = 5, settle_s: float = 6.0) -> dict[str, Any]:
    env = {"AVATAR_AGENT_NAME": AGENT_NAME, "AVATAR_RENDERER": "meshwarp", "AVATAR_GREETING": "Hi."}
    results: list[dict[str, Any]] = []
    with (
        running_control_api(server, env, extra_args=["--no-access-log"]) as api,
        running_worker(server, ["-m", "agent", "dev"], env) as worker,
    ):
        for index in range(trials):
            # Time for the worker to start a spare job process again, if it keeps one.
            await asyncio.sleep(settle_s)
            print(f"bench: startup trial {index + 1}/{trials}", flush=True)
            results.append(await trial(api, server, worker.log_path))
    names = sorted(
        {k for r in results for k in r},
        key=lambda k: statistics.median([r[k] for r in results if k in r]),
    )
    return {
        "trials": results,
        "median_ms": {
            k: round(statistics.median([r[k] for r in results if k in r]), 1) for k in names
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sync_startup")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    async def go() -> dict[str, Any]:
        with running_livekit_server() as server:
            return await run(server, args.trials)

    results = asyncio.run(go())
    emit_json(results, args.out)


if __name__ == "__main__":
    main()
