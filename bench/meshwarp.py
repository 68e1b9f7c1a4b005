"""meshwarp's benchmark: render-only speed on one core, and whole sessions (render, VP8 and Opus
encoding, publishing through the SFU) as separate processes, the way a worker runs its jobs,
to find how many sessions this machine sustains at 30 fps."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import uuid

from tests.livekit_server import LiveKitServer

ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SUSTAINED_FPS = 29.5


async def _json_from(*command: str, env: dict[str, str] | None = None) -> dict:
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    out, _ = await proc.communicate()
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {proc.returncode}")
    return json.loads(lines[-1])


async def render_speed(width: int, height: int) -> dict:
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    return await _json_from(
        *pin, sys.executable, "-m", "bench.render_speed",
        "--width", str(width), "--height", str(height),
        env=ONE_THREAD,
    )  # fmt: skip


async def sessions(server: LiveKitServer, count: int, seconds: float) -> dict:
    runs = await asyncio.gather(
        *[
            _json_from(
                sys.executable,
                "-m",
                "bench.avatar_session",
                "--url",
                server.url,
                "--api-key",
                server.api_key,
                "--api-secret",
                server.api_secret,
                "--room",
                f"mw-{uuid.uuid4().hex[:6]}",
                "--seconds",
                str(seconds),
                env=ONE_THREAD,
            )  # fmt: skip
            for _ in range(count)
        ]
    )
    frames = [r["fps"] * r["seconds"] for r in runs]
    repeated = sum(r["repeated_frames"] for r in runs)
    return {
        "sessions": count,
        "fps_min": min(r["fps"] for r in runs),
        "repeated_share": round(repeated / max(1.0, sum(frames)), 4),
        "cpu_percent_per_session": round(sum(r["cpu_percent"] for r in runs) / count, 1),
        "render_ms_p50": max(r["render_ms_p50"] for r in runs),
        "max_rss_mb": max(r["max_rss_mb"] for r in runs),
        "sustained": min(r["fps"] for r in runs) >= SUSTAINED_FPS
        and repeated <= 0.01 * sum(frames),
    }


async def run(server: LiveKitServer, counts: list[int], seconds: float = 20.0) -> dict:
    results: dict = {"render_only": [], "sessions": []}
    for width, height in ((512, 512), (1280, 720)):
        print(f"bench: meshwarp render-only {width}x{height} on one core", flush=True)
        results["render_only"].append(await render_speed(width, height))
    for count in counts:
        print(f"bench: meshwarp {count} session process(es)", flush=True)
        row = await sessions(server, count, seconds)
        results["sessions"].append(row)
        if not row["sustained"]:
            break
    return results
