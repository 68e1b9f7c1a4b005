"""liveportrait's benchmark: per-network milliseconds and warp+decode fps per back end and batch
(bench/liveportrait_modules.py), and the whole renderer: frames per second with driving,
retargeting, stitching and paste-back at 512x512, batch 1 and batched, and the first frame's
latency (a new avatar's load, then its first picture). Beside LivePortrait's published 12.8 ms
a frame on an RTX 4090 and FasterLivePortrait's 30+ fps on an RTX 3090 with TensorRT.

Weights are random in the published layout (speed does not depend on their values).

    python -m bench --only liveportrait     # writes bench/results/liveportrait.json + report
    python -m bench.liveportrait [--backends torch,onnx] [--batches 1,4] [--frames 4]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

PUBLISHED = {
    "LivePortrait, RTX 4090, torch (paper)": {"ms_per_frame": 12.8, "fps": 78.1},
    "FasterLivePortrait, RTX 3090, TensorRT (README)": {"fps": 30.0},
    "FasterLivePortrait, RTX 3090, ONNX Runtime GPU (README)": {"ms_per_frame": 70.0, "fps": 14.3},
}
"""Published figures, for comparison (docs/reference/ditto-liveportrait.md, section 2)."""
TARGET_FPS = 30.0


def renderer_speed(
    directory: Path, cache: Path, backend: str, batches: list[int], frames: int
) -> dict[str, Any]:
    """One back end's whole-renderer figures at 512x512."""
    from renderers import FrameRequest, VideoFormat
    from renderers.base import Expression
    from renderers.liveportrait.renderer import LivePortraitRenderer
    from renderers.liveportrait.settings import LivePortraitSettings

    settings = LivePortraitSettings(
        directory=directory, backend=backend, device="cpu", cache_dir=cache
    )
    renderer = LivePortraitRenderer(VideoFormat(512, 512, TARGET_FPS), settings=settings)
    engine_started = time.perf_counter()
    renderer.engine  # noqa: B018 - builds the back end (and any ONNX export) before timing
    engine_s = time.perf_counter() - engine_started
    started = time.perf_counter()
    renderer.load(None)
    load_ms = 1000 * (time.perf_counter() - started)
    happy = Expression("happy", 0.8)

    def requests(first: int, count: int) -> list[FrameRequest]:
        return [FrameRequest(first + i, None, 0, 0, 0, expression=happy) for i in range(count)]

    started = time.perf_counter()
    renderer.render(requests(0, 1))
    first_ms = 1000 * (time.perf_counter() - started)
    fps: dict[int, float] = {}
    index = 1
    for batch in batches:
        renderer.render(requests(index, batch))  # warm-up at this batch size
        index += batch
        calls = max(1, frames // batch)
        started = time.perf_counter()
        for _ in range(calls):
            renderer.render(requests(index, batch))
            index += batch
        fps[batch] = round(calls * batch / (time.perf_counter() - started), 2)
    renderer.close()
    best = max(fps.values())
    return {
        "backend": backend,
        "engine_build_s": round(engine_s, 2),
        "load_ms": round(load_ms, 1),
        "first_frame_ms": round(first_ms, 1),
        "first_picture_ms": round(load_ms + first_ms, 1),
        "fps": fps,
        "ms_per_frame": round(1000 / best, 1),
        "realtime_share": round(best / TARGET_FPS, 3),
    }


async def run(
    backends: tuple[str, ...] = ("torch", "onnx"),
    batches: tuple[int, ...] = (1, 4),
    frames: int = 4,
) -> dict[str, Any]:
    return await asyncio.to_thread(_measure, list(backends), list(batches), frames)


def _measure(backends: list[str], batches: list[int], frames: int) -> dict[str, Any]:
    from renderers.liveportrait.random_weights import write_random_checkpoints

    from .liveportrait_modules import measure

    with tempfile.TemporaryDirectory(prefix="lp-bench-") as scratch:
        root = Path(scratch)
        print("bench: liveportrait: writing random weights (published sizes)", flush=True)
        directory = write_random_checkpoints(root / "liveportrait", "liveportrait")
        cache = root / "cache"
        from renderers.liveportrait.settings import LivePortraitSettings

        settings = LivePortraitSettings(directory=directory, device="cpu", cache_dir=cache)
        modules = measure(settings, backends, batches, repeats=2)
        rows = []
        for backend in backends:
            print(f"bench: liveportrait renderer, {backend}", flush=True)
            try:
                rows.append(renderer_speed(directory, cache, backend, batches, frames))
            except Exception as error:  # one back end failing must not hide the others
                rows.append({"backend": backend, "error": str(error)})
    return {
        "modules": modules,
        "renderer": rows,
        "published": PUBLISHED,
        "gpu": _gpu_note(),
    }


def _gpu_note() -> str:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if torch.cuda.is_available():
        return f"measured on {torch.cuda.get_device_name(0)}"
    return "no GPU on this machine: CUDA fp16, ONNX Runtime CUDA and TensorRT were not measured"


def main() -> None:
    from .report import emit_json

    parser = argparse.ArgumentParser(prog="python -m bench.liveportrait")
    parser.add_argument("--backends", default="torch,onnx")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    results = asyncio.run(
        run(
            tuple(b for b in args.backends.split(",") if b),
            tuple(int(b) for b in args.batches.split(",") if b),
            args.frames,
        )
    )
    emit_json(results, args.out)


if __name__ == "__main__":
    main()
