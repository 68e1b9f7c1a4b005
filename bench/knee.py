"""Sessions to the knee (`--only knee`): how many meshwarp sessions this machine serves end to
end before a viewer notices.

The agent worker (`python -m agent dev`, meshwarp, the local piper voice) serves every session
as a user's room, exactly as `make demo` does. Each session has its own independent viewer
(`bench.viewer.Viewer`: the livekit Python SDK decoding every frame, nothing read from the
avatar's own statistics). The ramp adds sessions one at a time; at each step every session
speaks the same sentences at once, and the step passes when every viewer received at least
29.5 fps and its lips sat within +-40 ms of where the renderer itself puts them (the same
estimator on an offline MP4 of the same speech, `sync.content_reference`: meshwarp's mouth
trails its sound by about 40 ms with no transport at all). The knee is the last step that
passed.

Reported per step: delivered fps per viewer (mean over the step, and its worst second), the
lag of the lips behind the voice per session, the worker's CPU (its process tree: the job
processes rendering, encoding VP8 and Opus, and piper) and memory (PSS) per session, and the
livekit-server's CPU.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import psutil

from tests.livekit_server import LiveKitServer
from tests.worker_process import running_worker

from . import sync
from .viewer import Viewer

MIN_FPS = 29.5
MAX_LAG_MS = 40.0
MAX_SESSIONS = 8
TEXTS = list(sync.SENTENCES[:2])


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    """CPU seconds so far of each process still alive, by pid."""
    seconds: dict[int, float] = {}
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        seconds[proc.pid] = times.user + times.system
    return seconds


def _cpu_used(before: dict[int, float], after: dict[int, float]) -> dict[int, float]:
    """CPU seconds each process used between two readings; a process that started in between
    counts from zero, one that ended is left out (its last seconds cannot be read)."""
    return {pid: spent - before.get(pid, 0.0) for pid, spent in after.items()}


def _role(proc: psutil.Process) -> str:
    try:
        command = " ".join(proc.cmdline())
    except psutil.Error:
        return "gone"
    if "forkserver" in command or "multiprocessing" in command:
        return "job process"
    return "worker"


def _listening_on(url: str) -> psutil.Process | None:
    """The local process serving `url`'s port (the livekit-server the bench started)."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    for conn in psutil.net_connections(kind="tcp"):
        listening = conn.status == psutil.CONN_LISTEN and conn.laddr
        if listening and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    return None


def _pss(procs: list[psutil.Process]) -> int:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss
        except psutil.Error:
            continue
    return total


def _fps(viewer: Viewer, start: float, end: float) -> tuple[float, float]:
    """Mean fps over [start, end] and the fewest pictures in any whole second of it."""
    arrivals = np.array([p.arrived for p in viewer.video if start <= p.arrived <= end])
    if end - start < 1.0 or arrivals.size == 0:
        return 0.0, 0.0
    mean = arrivals.size / (end - start)
    seconds = np.arange(start, end - 1.0, 1.0)
    worst = min(int(np.count_nonzero((arrivals >= s) & (arrivals < s + 1.0))) for s in seconds)
    return mean, float(worst)


async def step(
    server: LiveKitServer, worker_pid: int, sessions: int, reference_ms: float
) -> dict[str, Any]:
    joins = [sync._join(server, sync_streams=True) for _ in range(sessions)]
    viewers = await asyncio.gather(*joins)
    try:
        # Every job process exists now: measure them all from here.
        server_proc = _listening_on(server.url)
        watched = [*_tree(worker_pid), *([server_proc] if server_proc else [])]
        cpu_before = _cpu_seconds(watched)
        started = time.perf_counter()
        results = await asyncio.gather(*[sync._session(v, TEXTS) for v in viewers])
        ended = time.perf_counter()
        elapsed = ended - started
        procs = _tree(worker_pid)  # with any process that started meanwhile
        used = _cpu_used(cpu_before, _cpu_seconds([*procs, *watched]))
        server_pid = server_proc.pid if server_proc else None
        by_process = [
            {
                "pid": proc.pid,
                "role": _role(proc),
                "cpu_percent": round(used.get(proc.pid, 0.0) / elapsed * 100.0, 1),
            }
            for proc in procs
        ]
        cpu = sum(p["cpu_percent"] for p in by_process)
        server_cpu = round(used.get(server_pid, 0.0) / elapsed * 100.0, 1) if server_pid else None
        pss = _pss(procs)
        fps = [_fps(v, started, ended) for v in viewers]
    finally:
        await asyncio.gather(*[v.aclose() for v in viewers], return_exceptions=True)
    lags = [r["lag_ms"] for r in results]
    fps_ok = all(mean >= MIN_FPS for mean, _ in fps)
    offsets = [None if lag is None else lag - reference_ms for lag in lags]
    lag_ok = all(off is not None and abs(off) <= MAX_LAG_MS for off in offsets)
    return {
        "sessions": sessions,
        "fps_mean": [round(mean, 2) for mean, _ in fps],
        "fps_worst_second": [worst for _, worst in fps],
        "lag_ms": [None if lag is None else round(lag, 1) for lag in lags],
        "offset_ms": [None if off is None else round(off, 1) for off in offsets],
        "cpu_percent_per_session": round(cpu / sessions, 1),
        "worker_cpu_percent_by_process": by_process,
        "livekit_server_cpu_percent": server_cpu,
        "pss_mb_per_session": round(pss / sessions / 2**20, 1),
        "measured_s": round(elapsed, 1),
        "passed": fps_ok and lag_ok,
    }


async def run(server: LiveKitServer, max_sessions: int = MAX_SESSIONS) -> dict[str, Any]:
    # In a thread: it synthesises with asyncio.run of its own.
    reference = await asyncio.to_thread(sync.content_reference, TEXTS)
    env = {"AVATAR_AGENT_NAME": sync.AGENT_NAME, "AVATAR_RENDERER": "meshwarp"}
    steps: list[dict[str, Any]] = []
    with running_worker(server, ["-m", "agent", "dev"], env) as worker:
        for count in range(1, max_sessions + 1):
            print(f"bench: knee, {count} session(s)", flush=True)
            result = await step(server, worker.pid, count, reference["lag_ms"])
            steps.append(result)
            if not result["passed"]:
                break
            await asyncio.sleep(3.0)  # let the last step's jobs end before the next joins
    passed = [s["sessions"] for s in steps if s["passed"]]
    return {
        "goal": {"min_fps": MIN_FPS, "max_abs_offset_ms": MAX_LAG_MS},
        "content_reference": reference,
        "cpu_count": psutil.cpu_count(),
        "knee_sessions": max(passed, default=0),
        "steps": steps,
    }
