"""wav2lip's benchmark: network fps per back end and batch, first-frame latency, the renderer's
own fps with paste-back at 30 fps, and sessions per machine, beside LiveTalking's published
figures. Weights are random (a generated checkpoint in the published layout): speed does not
depend on their values.

    python -m bench --only wav2lip           # writes bench/results/wav2lip.json + the report
    python -m bench.wav2lip [--size 96] [--seconds 2] [--batches 1,8,32]   # prints JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from renderers import FrameRequest

LIVETALKING_FPS = {"wav2lip256 on an RTX 3060": 60, "wav2lip256 on an RTX 3080 Ti": 120}
"""LiveTalking's published inference figures (README), for comparison."""
TARGET_FPS = 30.0


def _avatar_package(root: Path, size: int) -> Path:
    """A package made by the preparation job from a generated 320x240 talking-head video."""
    from renderers.preparation import PreparationLimits, prepare_avatar_package
    from tests.media import talking_head_video

    video = talking_head_video(root / "talk.mp4", seconds=3.5, fps=25, size=(320, 240))
    prepared = prepare_avatar_package(
        video.path,
        avatar_id="bench",
        model="wav2lip",
        out_dir=root,
        limits=PreparationLimits(face_size=size),
    )
    return prepared.package


def _configurations() -> list[tuple[str, str, bool]]:
    """(backend, device, fp16) to measure here."""
    from renderers.wav2lip.backends import installed, tensorrt_unavailable_reason

    found = [("torch", "cpu", False)]
    if installed("onnxruntime"):
        found.append(("onnx", "cpu", False))
    import torch

    if torch.cuda.is_available():
        found.append(("torch", "cuda", True))
        if tensorrt_unavailable_reason() is None:
            found.append(("tensorrt", "cuda", True))
    return found


def backend_fps(
    checkpoint: Path, cache: Path, batches: list[int], seconds: float
) -> list[dict[str, Any]]:
    from renderers.wav2lip.backends import create_generator, measure_fps

    rows: list[dict[str, Any]] = []
    for backend, device, fp16 in _configurations():
        started = time.perf_counter()
        try:
            generator = create_generator(
                backend, checkpoint, device=device, fp16=fp16, cache_dir=cache
            )
        except Exception as error:  # one back end failing must not hide the others
            rows.append({"backend": backend, "device": device, "error": str(error)})
            continue
        load_s = time.perf_counter() - started
        fps: dict[int, float] = {}
        row: dict[str, Any] = {
            "backend": backend,
            "device": device,
            "precision": "fp16" if fp16 else "fp32",
            "load_s": round(load_s, 2),
            "fps": fps,
        }
        for batch in batches:
            print(f"bench: wav2lip {backend} {device} batch {batch}", flush=True)
            fps[batch] = round(measure_fps(generator, batch, seconds), 1)
        rows.append(row)
        del generator
    return rows


def _speech_requests(seconds: float, fps: float) -> list[FrameRequest]:
    """An utterance's requests, cut by the runtime's own SpeechQueue (as a session gets them)."""
    from livekit import rtc

    from avatar_runtime.speech import SpeechQueue
    from renderers import VideoFormat
    from renderers.wav2lip.renderer import Wav2LipRenderer
    from renderers.wav2lip.settings import Wav2LipSettings
    from tests.media import _syllables

    caps = Wav2LipRenderer(VideoFormat(fps=fps), settings=Wav2LipSettings()).capabilities
    queue = SpeechQueue(out_rate=16000, render_rate=16000, fps=fps, lookahead_s=caps.lookahead_s)
    audio = _syllables(seconds, 16000)
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    queue.push(rtc.AudioFrame(pcm.tobytes(), 16000, 1, pcm.size))
    queue.end_segment()
    requests: list[FrameRequest] = []
    while (window := queue.next_window()) is not None:
        requests.append(
            window.frame_request(index=len(requests), speech_position=window.segment_position)
        )
    return requests


def renderer_speed(
    checkpoint: Path, package: Path, cache: Path, backend: str, batch: int, size: tuple[int, int]
) -> dict[str, object]:
    """The whole renderer (mel, network, paste-back with colour matching) on an utterance of
    speech at 30 fps, in batches of `batch`; and the first frame's latency."""
    from renderers import VideoFormat
    from renderers.wav2lip.renderer import Wav2LipRenderer
    from renderers.wav2lip.settings import Wav2LipSettings

    settings = Wav2LipSettings(
        checkpoint=checkpoint,
        backend=backend,
        device="cpu",
        batch_size=batch,
        cache_dir=cache,
        silence_db=-120.0,  # every frame through the network: the worst case
    )
    width, height = size
    renderer = Wav2LipRenderer(VideoFormat(width, height, TARGET_FPS), settings=settings)
    renderer.load(package)
    requests = _speech_requests(6.0, TARGET_FPS)
    renderer.render(requests[:batch])  # warm-up: first calls allocate
    renderer.reset()
    # First frame: a new utterance's first batch, from the request to the pictures.
    first = []
    for _ in range(3):
        renderer.reset()
        started = time.perf_counter()
        renderer.render(requests[:batch])
        first.append(time.perf_counter() - started)
    renderer.reset()
    started = time.perf_counter()
    for i in range(0, len(requests), batch):
        renderer.render(requests[i : i + batch])
    elapsed = time.perf_counter() - started
    fps = len(requests) / elapsed
    idle_started = time.perf_counter()
    from renderers import FrameRequest

    for i in range(300):
        renderer.render([FrameRequest(i, None, 0, 0, 0)])
    idle_fps = 300 / (time.perf_counter() - idle_started)
    return {
        "backend": renderer.backend_description,
        "size": f"{width}x{height}",
        "batch": batch,
        "fps": round(fps, 1),
        "ms_per_frame": round(1000 / fps, 1),
        "first_batch_ms": round(1000 * min(first), 1),
        "idle_fps": round(idle_fps, 1),
        "realtime": fps >= TARGET_FPS,
        "sessions_at_30fps": math.floor(fps / TARGET_FPS),
    }


def measure(size: int, batches: list[int], seconds: float) -> dict[str, object]:
    from renderers.wav2lip.checkpoint import write_random_checkpoint

    with tempfile.TemporaryDirectory(prefix="bench-wav2lip-") as tmp:
        root = Path(tmp)
        checkpoint = write_random_checkpoint(root / "wav2lip.pth", size=size)
        cache = root / "engines"
        print("bench: wav2lip preparing an avatar package", flush=True)
        package = _avatar_package(root, size)
        networks = backend_fps(checkpoint, cache, batches, seconds)
        renderers = []
        for row in networks:
            if "error" in row or row["device"] != "cpu":
                continue
            for batch in (1, 4):
                print(f"bench: wav2lip renderer {row['backend']} batch {batch}", flush=True)
                renderers.append(
                    renderer_speed(
                        checkpoint, package, cache, str(row["backend"]), batch, (512, 512)
                    )
                )
        gpu_rows = [r for r in networks if r.get("device") == "cuda" and "fps" in r]
        return {
            "model_size": size,
            "threads": os.cpu_count(),
            "seconds_per_measure": seconds,
            "networks": networks,
            "renderers": renderers,
            "sessions_per_gpu": {
                f"{r['backend']} {r['precision']}": math.floor(max(r["fps"].values()) / TARGET_FPS)
                for r in gpu_rows
            },
            "livetalking": LIVETALKING_FPS,
        }


async def run(size: int = 96, batches: tuple[int, ...] = (1, 8, 32), seconds: float = 2.0) -> dict:
    return await asyncio.to_thread(measure, size, list(batches), seconds)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.wav2lip")
    parser.add_argument("--size", type=int, default=96, choices=[96, 256])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--batches", default="1,8,32")
    args = parser.parse_args()
    batches = tuple(int(b) for b in args.batches.split(",") if b)
    print(json.dumps(asyncio.run(run(args.size, batches, args.seconds)), indent=2))


if __name__ == "__main__":
    main()
