"""`make bench` / `python -m bench`: run the benchmarks, write bench/results/*.json and the
tables in docs/benchmarks.md.

    python -m bench                   # everything, with a 10-minute drift soak
    python -m bench --soak-minutes 1  # quicker
    python -m bench --only meshwarp   # one benchmark
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import psutil

from tests.livekit_server import running_livekit_server

from . import (
    cluster,
    control_api,
    ditto,
    foundation,
    jobs_cluster,
    knee,
    library,
    liveportrait,
    meshwarp,
    musetalk,
    offline_render,
    preparation,
    streaming,
    sync,
    sync_compare,
    wav2lip,
)
from . import jobs as jobs_bench
from .report import (
    control_api_section,
    foundation_section,
    jobs_section,
    knee_section,
    library_section,
    liveportrait_section,
    meshwarp_section,
    offline_render_section,
    preparation_section,
    streaming_section,
    sync_section,
    wav2lip_section,
    write_section,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SERVERLESS = {
    *("offline_render", "jobs", "preparation", "wav2lip", "liveportrait", "ditto", "sync"),
    "musetalk",
    "cluster",
    "jobs_cluster",
}
"""Benchmarks that need no livekit-server (sync and cluster start their own)."""


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--soak-minutes", type=float, default=10.0)
    parser.add_argument(
        "--sessions",
        default="1,2",
        help="concurrent sessions to measure (the viewers decoding every frame share the CPU)",
    )
    parser.add_argument(
        "--only",
        choices=[
            "foundation",
            "meshwarp",
            "control_api",
            "offline_render",
            "jobs",
            "preparation",
            "wav2lip",
            "liveportrait",
            "ditto",
            "musetalk",
            "library",
            "sync",
            "knee",
            "streaming",
            "cluster",
            "jobs_cluster",
        ],
        action="append",
    )
    parser.add_argument("--meshwarp-sessions", default="1,2,4,6")
    parser.add_argument(
        "--sync-sessions", default="1,3", help="concurrent sessions the sync viewer measures"
    )
    args = parser.parse_args()
    sessions = [int(n) for n in args.sessions.split(",") if n]
    everything = [
        "foundation",
        "meshwarp",
        "control_api",
        "library",
        "sync",
        "knee",
        "streaming",
        "offline_render",
        "jobs",
        "cluster",
        "jobs_cluster",
    ]
    everything.append("preparation")
    if importlib.util.find_spec("torch") is not None:  # the wav2lip extra (setup's default)
        everything += ["wav2lip", "liveportrait", "ditto"]
    if importlib.util.find_spec("diffusers") is not None:  # the musetalk extra
        everything.append("musetalk")
    only = set(args.only or everything)

    jobs = []
    if "cluster" in only:
        jobs.append(("cluster", lambda server: cluster.run(), cluster.section))
    if "jobs" in only:
        jobs.append(("jobs", lambda server: jobs_bench.run(), jobs_section))
    if "jobs_cluster" in only:
        jobs.append(("jobs_cluster", lambda server: jobs_cluster.run(), jobs_cluster.section))
    if "wav2lip" in only:
        jobs.append(("wav2lip", lambda server: wav2lip.run(), wav2lip_section))
    if "liveportrait" in only:
        jobs.append(("liveportrait", lambda server: liveportrait.run(), liveportrait_section))
    if "ditto" in only:
        jobs.append(("ditto", lambda server: ditto.run(), ditto.section))
    if "musetalk" in only:
        jobs.append(("musetalk", lambda server: musetalk.run(), musetalk.section))
    if "preparation" in only:
        jobs.append(("preparation", lambda server: preparation.run(), preparation_section))
    if "offline_render" in only:
        jobs.append(("offline_render", lambda server: offline_render.run(), offline_render_section))
    if "library" in only:
        jobs.append(("library", library.run, library_section))
    if "sync" in only:
        counts = [int(n) for n in args.sync_sessions.split(",") if n]
        jobs.append(("sync", lambda server: sync.run(server, counts, repeats=2), sync_section))
    if "knee" in only:
        jobs.append(("knee", knee.run, knee_section))
    if "streaming" in only:
        jobs.append(("streaming", streaming.run, streaming_section))
    if "control_api" in only:
        jobs.append(("control_api", control_api.run, control_api_section))
    if "meshwarp" in only:
        counts = [int(n) for n in args.meshwarp_sessions.split(",") if n]
        jobs.append(("meshwarp", lambda server: meshwarp.run(server, counts), meshwarp_section))
    if "foundation" in only:
        print("bench: synthesizing the comparison speech with piper", flush=True)
        speech = sync_compare.synthesize(foundation.TEXT)
        jobs.append(
            (
                "foundation",
                lambda server: foundation.run(server, speech, sessions, args.soak_minutes),
                foundation_section,
            )
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name, job, section in jobs:
        try:
            measured = job(None) if name in SERVERLESS else _with_server(job)
            results = {**_header(), **asyncio.run(measured)}
        except BaseException as error:  # pytest's skip/fail outcomes are BaseExceptions
            if isinstance(error, KeyboardInterrupt):
                raise
            print(f"bench: {name} failed: {error}", file=sys.stderr)
            return 1
        (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
        write_section(ROOT / "docs" / "benchmarks.md", name, section(results))
        print(f"bench: wrote bench/results/{name}.json and docs/benchmarks.md ({name})")
    return 0


async def _with_server(job):  # noqa: ANN001, ANN202
    with running_livekit_server() as server:
        return await job(server)


def _header() -> dict:
    return {
        "machine": {
            "cpu_count": psutil.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


if __name__ == "__main__":
    sys.exit(main())
