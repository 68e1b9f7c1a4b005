"""Render-only speed of one renderer on whatever CPUs this process may use (the caller pins it
to one core with taskset), printed as one JSON line.

    taskset -c 0 python -m bench.render_speed --renderer meshwarp --width 512 --height 512
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from renderers import Expression, FrameRequest, VideoFormat, create

RATE = 16000


def requests(count: int, fps: float) -> list[FrameRequest]:
    """Alternating seconds of voiced sound and silence, with an emotion on: every code path."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        speaking = (i // int(fps)) % 2 == 0
        audio = None
        if speaking:
            t = np.arange(1600) / RATE
            audio = (
                0.25 * np.sin(2 * np.pi * 160 * t + rng.uniform(0, 6)) * (1 + np.sin(i))
            ).astype(np.float32)
        out.append(
            FrameRequest(
                index=i,
                audio=audio,
                window_offset=0,
                window_length=533 if speaking else 0,
                speech_position=0,
                expression=Expression("happy", 0.5),
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.render_speed")
    parser.add_argument("--renderer", default="meshwarp")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--frames", type=int, default=600)
    args = parser.parse_args()
    renderer = create(args.renderer, VideoFormat(args.width, args.height, 30))
    renderer.load(None)
    batch = requests(args.frames, 30)
    for request in batch[:30]:  # warm-up
        renderer.render([request])
    start = time.perf_counter()
    for request in batch:
        renderer.render([request])
    elapsed = time.perf_counter() - start
    print(json.dumps({
        "renderer": args.renderer,
        "size": f"{args.width}x{args.height}",
        "fps": round(args.frames / elapsed, 1),
        "ms_per_frame": round(1000 * elapsed / args.frames, 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
