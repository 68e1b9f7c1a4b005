"""`make bench` / `python -m bench`: run the benchmarks, write bench/results/*.json and the
tables in docs/benchmarks.md.

    python -m bench                   # everything, with a 10-minute drift soak
    python -m bench --soak-minutes 1  # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path

import psutil

from tests.livekit_server import running_livekit_server
from tests.worker_process import running_worker

from . import foundation, sync_compare
from .report import write_report

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--soak-minutes", type=float, default=10.0)
    parser.add_argument(
        "--sessions",
        default="1,2",
        help="concurrent sessions to measure (the viewers decoding every frame share the CPU)",
    )
    args = parser.parse_args()
    sessions = [int(n) for n in args.sessions.split(",") if n]

    print("bench: synthesizing the comparison speech with piper", flush=True)
    speech = sync_compare.synthesize(foundation.TEXT)
    try:
        results = asyncio.run(_run(speech, sessions, args.soak_minutes))
    except BaseException as error:  # pytest's skip/fail outcomes are BaseExceptions
        if isinstance(error, KeyboardInterrupt):
            raise
        print(f"bench: failed: {error}", file=sys.stderr)
        return 1
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "foundation.json").write_text(json.dumps(results, indent=2) + "\n")
    write_report(results, ROOT / "docs" / "benchmarks.md")
    print(f"bench: wrote {RESULTS / 'foundation.json'} and docs/benchmarks.md")
    return 0


async def _run(speech, sessions: list[int], soak_minutes: float) -> dict:  # noqa: ANN001
    results: dict = {
        "machine": {
            "cpu_count": psutil.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with running_livekit_server() as server:
        print("bench: publisher comparison (avatar-agents vs livekit AvatarRunner)", flush=True)
        results["publishers"] = [
            await sync_compare.measure(server, kind, speech)
            for kind in ("avatar-agents", "livekit-agents AvatarRunner")
        ]
        env = {"AVATAR_AGENT_NAME": "bench-agent", "AVATAR_RENDERER": "testcard"}
        with running_worker(server, ["-m", "agent", "dev"], env) as worker:
            results["sessions"] = []
            for count in sessions:
                print(f"bench: {count} concurrent session(s)", flush=True)
                try:
                    results["sessions"].append(
                        await foundation.concurrency(server, "bench-agent", worker.pid, count)
                    )
                except (TimeoutError, ValueError) as error:
                    # Keep what was measured; say where the machine ran out.
                    print(f"bench: {count} sessions failed: {error}", flush=True)
                    results["sessions_failed"] = {"sessions": count, "error": str(error)}
                    break
            if soak_minutes > 0:
                print(f"bench: {soak_minutes:g}-minute soak of continuous speech", flush=True)
                results["soak"] = await foundation.soak(server, "bench-agent", soak_minutes)
    return results


if __name__ == "__main__":
    sys.exit(main())
