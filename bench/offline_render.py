"""Offline render speed: how long `avatar_runtime.offline.render_talking_video` takes per second
of audio (the real-time factor: render seconds / audio seconds; under 1 is faster than real
time), per renderer and size, decoding, rendering, compositing and H.264 + AAC encoding all
included.

Each measurement runs in a fresh process, as a job worker would run it, after one short
warm-up render in that process (so the avatar's preparation, cached on disk after the first
time, is not counted), and takes the fastest of a few renders. "all cores" lets x264 use its
threads; "one core" pins the process with taskset, which is what each of several concurrent
jobs on a small machine gets.

    python -m bench.offline_render --renderer meshwarp --width 512 --height 512 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .meshwarp import ONE_THREAD, _json_from

SPEECH_SECONDS = 20.0
RUNS = 3
"""Renders per measurement; the fastest counts (the machine is shared: the others measure
what else ran at the time), all are kept."""
SPEECH_RATE = 24000  # what TTS voices deliver
CASES = (
    ("meshwarp", 512, 512, False),
    ("meshwarp", 512, 512, True),
    ("meshwarp", 1280, 720, False),
    ("testcard", 512, 512, False),
)


async def measure(renderer: str, width: int, height: int, one_core: bool, seconds: float) -> dict:
    pin = ["taskset", "-c", "0"] if one_core and shutil.which("taskset") else []
    row = await _json_from(
        *pin, sys.executable, "-m", "bench.offline_render",
        "--renderer", renderer, "--width", str(width), "--height", str(height),
        "--seconds", str(seconds),
        env=ONE_THREAD if pin else None,
    )  # fmt: skip
    return {**row, "cores": "one" if pin else "all"}


async def run(seconds: float = SPEECH_SECONDS) -> dict:
    rows = []
    for renderer, width, height, one_core in CASES:
        where = "one core" if one_core else "all cores"
        print(f"bench: offline render {renderer} {width}x{height} on {where}", flush=True)
        rows.append(await measure(renderer, width, height, one_core, seconds))
    return {"audio_seconds": seconds, "audio_rate": SPEECH_RATE, "renders": rows}


def main() -> None:
    """One measurement in this process, printed as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.offline_render")
    parser.add_argument("--renderer", default="meshwarp")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=SPEECH_SECONDS)
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args()

    from avatar_runtime.offline import render_talking_video
    from tests.media import speech_like_audio

    with tempfile.TemporaryDirectory(prefix="bench-offline-") as scratch:
        folder = Path(scratch)
        warm_up = folder / "warm-up.wav"
        speech_like_audio(warm_up, 1.0, SPEECH_RATE)
        audio = folder / "speech.wav"
        speech_like_audio(audio, args.seconds, SPEECH_RATE)
        options = dict(renderer=args.renderer, width=args.width, height=args.height)
        render_talking_video(audio=warm_up, out=folder / "warm-up.mp4", **options)
        factors = []
        for _ in range(args.runs):
            started = time.perf_counter()
            result = render_talking_video(
                audio=audio, out=folder / "talk.mp4", emotion="happy", **options
            )
            factors.append((time.perf_counter() - started) / result.duration_s)
        size = result.path.stat().st_size
    best = min(factors)
    print(json.dumps({
        "renderer": args.renderer,
        "size": f"{args.width}x{args.height}",
        "audio_s": round(result.duration_s, 2),
        "render_s": round(best * result.duration_s, 2),
        "realtime_factor": round(best, 3),
        "realtime_factor_runs": [round(f, 3) for f in factors],
        "fps": round(result.frames / (best * result.duration_s), 1),
        "mp4_kbit_s": round(8 * size / result.duration_s / 1000),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
