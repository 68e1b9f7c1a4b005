"""Avatar preparation speed: `renderers.preparation.prepare_avatar_package` on a generated 10 s
1280x720 30 fps talking-head video (tests/media.py), as a wav2lip package with 96 and 256 px
face crops and as a meshwarp package.

Each measurement runs in a fresh process, as a job worker runs a preparation: the seconds
are the call itself (probing, face detection, decoding twice, PNG encoding, the tar), after
the imports; peak memory is the process's maximum resident set. The machine's load average
is recorded too: other work on a small shared machine slows every number here.

    python -m bench --only preparation
    python -m bench.preparation --video clip.mp4 --model wav2lip --face-size 96  # one JSON line
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from .meshwarp import _json_from

SECONDS, FPS, SIZE = 10.0, 30, (1280, 720)
CASES = (("wav2lip", 96), ("wav2lip", 256), ("meshwarp", 96))
REPEATS = 3
GOAL_S = 5.0


async def run(repeats: int = REPEATS) -> dict:
    from tests.media import talking_head_video

    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as scratch:
        video = talking_head_video(Path(scratch) / "talk.mp4", SECONDS, FPS, SIZE)
        rows = []
        for model, face_size in CASES:
            print(f"bench: preparation {model} (face {face_size}) x{repeats}", flush=True)
            runs = [
                await _json_from(
                    *(sys.executable, "-m", "bench.preparation", "--video", str(video.path)),
                    *("--model", model, "--face-size", str(face_size)),
                )
                for _ in range(repeats)
            ]
            rows.append(_summary(runs))
    return {
        "video": {"seconds": SECONDS, "fps": FPS, "size": f"{SIZE[0]}x{SIZE[1]}"},
        "goal_s": GOAL_S,
        "repeats": repeats,
        "runs": rows,
    }


def _summary(runs: list[dict]) -> dict:
    """The run with the median time, with the spread of all of them."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    middle = ordered[len(ordered) // 2]
    return {
        **middle,
        "seconds_all": [r["seconds"] for r in runs],
        "seconds_min": ordered[0]["seconds"],
        "load_average_max": max(r["load_average"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }


def main() -> None:
    """One preparation in this process, printed as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.preparation")
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--model", default="wav2lip")
    parser.add_argument("--face-size", type=int, default=96)
    args = parser.parse_args()

    from renderers.preparation import PreparationLimits, prepare_avatar_package
    from renderers.vision.png import deflate_backend

    stages: dict[str, float] = {}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-prepare-out-") as out:
        started, cpu = time.perf_counter(), time.process_time()

        def progress(fraction: float, message: str) -> None:
            stages.setdefault(message, time.perf_counter() - started)

        result = prepare_avatar_package(
            args.video,
            avatar_id="bench",
            model=args.model,
            out_dir=Path(out),
            limits=PreparationLimits(face_size=args.face_size),
            progress=progress,
        )
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        package_mb = result.package.stat().st_size / 2**20
    # The stage starts in order: the time to the next one is each stage's share.
    names = list(stages) + ["end"]
    starts = list(stages.values()) + [elapsed]
    print(json.dumps({
        "model": args.model,
        "face_size": args.face_size if args.model == "wav2lip" else None,
        "frames": result.num_frames,
        "seconds": round(elapsed, 2),
        "cpu_seconds": round(cpu, 2),
        "frames_per_s": round(result.num_frames / elapsed, 1),
        "stages_s": {
            name: round(starts[i + 1] - starts[i], 2) for i, name in enumerate(names[:-1])
        },
        "peak_rss_mb": _peak_rss_mb(),
        "package_mb": round(package_mb, 1),
        "deflate": deflate_backend(),
        "cpu_count": os.cpu_count(),
        "load_average": round(max(load, os.getloadavg()[0]), 2),
    }))  # fmt: skip


def _peak_rss_mb() -> int:
    """This process's peak resident memory. /proc's VmHWM starts afresh at exec; getrusage's
    maxrss would include the parent's peak before the exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


if __name__ == "__main__":
    main()
