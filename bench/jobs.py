"""Job throughput under the concurrency cap: N prepare jobs of one short clip through the real
control API (`POST /run` over loopback HTTP, the video from a loopback file server), at caps
1, 2 and 3. Everything a job costs is counted: its worker process starting, the download, the
preparation, installing the package, the store's bookkeeping.

    python -m bench --only jobs
    python -m bench.jobs --jobs 9 --caps 1,2,3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import TypedDict

from aiohttp.test_utils import TestClient

from tests.control_api_client import AUTH, start_client
from tests.job_fixtures import FileServer, job_settings
from tests.media import talking_head_video

JOBS = 9
CAPS = (1, 2, 3)


class Clip(TypedDict):
    seconds: float
    fps: int
    size: tuple[int, int]


CLIP: Clip = {"seconds": 4.0, "fps": 25, "size": (640, 360)}
INTERNAL = "/api/v1/internal/avatar/jobs"


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def _measure_cap(folder: Path, video_url: str, cap: int, jobs: int) -> dict:
    settings = job_settings(folder / f"cap-{cap}", jobs_concurrency=cap, prepare_min_video_s=3.0)
    client: TestClient = await start_client(settings)
    try:
        started = time.monotonic()
        ids = []
        for n in range(jobs):
            resp = await client.post(
                "/run",
                json={"input": {"video_url": video_url, "avatar_id": f"bench-{cap}-{n}"}},
                headers=AUTH,
            )
            ids.append((await resp.json())["id"])
        most_running = 0
        while True:
            queue = await (await client.get(f"{INTERNAL}/status", headers=AUTH)).json()
            most_running = max(most_running, queue["running"])
            if queue["completed"] + queue["failed"] == jobs:
                break
            await asyncio.sleep(0.05)
        wall_s = time.monotonic() - started
        details = [
            await (await client.get(f"{INTERNAL}/{job_id}", headers=AUTH)).json() for job_id in ids
        ]
    finally:
        await client.close()
    failures = [
        d for d in details if d["status"] != "completed" or d["output"]["status"] != "success"
    ]
    if failures:
        raise RuntimeError(f"{len(failures)} job(s) did not succeed: {failures[0]}")
    latency = [_epoch(d["finished_at"]) - _epoch(d["created_at"]) for d in details]
    processing = [_epoch(d["finished_at"]) - _epoch(d["started_at"]) for d in details]
    return {
        "concurrency": cap,
        "jobs": jobs,
        "wall_s": round(wall_s, 2),
        "jobs_per_min": round(jobs / wall_s * 60, 1),
        "mean_latency_s": round(sum(latency) / jobs, 2),
        "mean_processing_s": round(sum(processing) / jobs, 2),
        "max_running_seen": most_running,
        "num_frames": details[0]["output"]["num_frames"],
    }


async def run(jobs: int = JOBS, caps: tuple[int, ...] = CAPS) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as scratch:
        folder = Path(scratch)
        talking_head_video(folder / "clip.mp4", **CLIP)
        rows = []
        with FileServer().running() as files:
            url = files.add("/clip.mp4", folder / "clip.mp4", content_type="video/mp4")
            for cap in caps:
                print(f"bench: {jobs} prepare jobs at concurrency {cap}", flush=True)
                rows.append(await _measure_cap(folder, url, cap, jobs))
    width, height = CLIP["size"]
    return {
        "clip": {"seconds": CLIP["seconds"], "fps": CLIP["fps"], "size": f"{width}x{height}"},
        "model": "wav2lip",
        "runs": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.jobs")
    parser.add_argument("--jobs", type=int, default=JOBS)
    parser.add_argument("--caps", default=",".join(map(str, CAPS)))
    args = parser.parse_args()
    caps = tuple(int(c) for c in args.caps.split(",") if c)
    print(json.dumps(asyncio.run(run(args.jobs, caps)), indent=2))


if __name__ == "__main__":
    main()
