"""ditto's benchmark, per stage and whole, on this machine's CPU (published sizes, random
weights: speed does not depend on their values). Every stage runs on one thread and is timed
in CPU time (`time.process_time`): the cost on one core, which other work sharing the machine
does not inflate the way it does wall-clock time.

* HuBERT: Ditto's audio encoder at hubert-large's sizes (transformers' HubertModel with
  facebook/hubert-large-ls960-ft's configuration, exported by the project as the renderer
  would), ONNX Runtime, per 6480-sample window (one window every 5 motion frames);
* LMDM: one 80-frame window at each step count, per back end (torch, ONNX Runtime);
* stitch, warp + decode, paste-back: LivePortrait's networks in Ditto's layout, per back end;
* the real-time factor and fps those add up to at 30 fps output, and the first frame's latency
  after the first audio: its algorithmic part (the look-ahead the overlap needs) and its
  compute part (the HuBERT and LMDM windows the first speech frame sets off, counted through
  the renderer, at the stage costs above, plus one picture);
* an interruption through the avatar runtime (AvatarVideoGenerator.clear_buffer): frames
  until the renderer is asked for idle frames again, and whether its queues were emptied
  (SMALL weights at 128x128, so it runs in seconds).

Beside the maintainers' figures (62 ms per 80-frame LMDM window, online RTF 0.155-0.31 and
first frame under 400 ms on an A100 with TensorRT) and third parties' (about 47 fps on an
RTX 4090, 20.3 fps on an L4 with TensorRT).

    python -m bench --only ditto                  # bench/results/ditto.json + report
    python -m bench.ditto --steps 5,10 --backends torch
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .timing import median_ms

PUBLISHED = {
    "Ditto maintainers, A100, TensorRT (ditto#14)": "LMDM 62 ms per 80-frame window; online "
    "RTF 0.155-0.31; first frame < 400 ms",
    "third party, RTX 4090, TensorRT online": "about 47 fps",
    "third party, L4, TensorRT offline, 25 steps": "20.3 fps (PyTorch 8.1 fps)",
}
OUTPUT_FPS = 30
MOTION_FPS = 25
HUBERT_WINDOW = 6480
HUBERT_FRAMES_PER_WINDOW = 5
OVERLAP = 75
SIZE = 512


# -- stages --------------------------------------------------------------------------------------


def hubert_large_onnx(folder: Path) -> Path:
    """A random HuBERT at hubert-large-ls960-ft's sizes, exported as the renderer's fallback."""
    import torch
    from transformers import HubertConfig, HubertModel

    from renderers.ditto.audio.export import export_hubert_onnx
    from renderers.ditto.audio.hubert import EXPORT_FILE

    config = HubertConfig(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
    )
    torch.manual_seed(0)
    HubertModel(config).eval().save_pretrained(folder / "hf")
    return export_hubert_onnx(folder / "hf", folder / "ditto_pytorch" / "aux_models" / EXPORT_FILE)


def cpu_ms(call: Callable[[], object], repeats: int) -> float:
    return median_ms(call, repeats, digits=1, clock=time.process_time)


def hubert_stage(path: Path, repeats: int) -> dict[str, Any]:
    from renderers.ditto.audio.hubert import HubertOnnx

    encoder = HubertOnnx(path, threads=1)
    audio = (0.1 * np.random.default_rng(0).standard_normal(HUBERT_WINDOW)).astype(np.float32)
    window_ms = cpu_ms(lambda: encoder(audio), repeats)
    return {
        "window_ms": window_ms,
        "per_motion_frame_ms": round(window_ms / HUBERT_FRAMES_PER_WINDOW, 2),
    }


def lmdm_stage(
    checkpoint: Path, cache: Path, backend: str, steps: list[int], repeats: int
) -> dict[str, Any]:
    import torch

    from renderers.ditto.lmdm.diffusion import MotionSampler
    from renderers.ditto.lmdm.engines import DenoiseStep, OnnxStep, exported_step, load_step

    started = time.perf_counter()
    step: DenoiseStep
    if backend == "onnx":
        step = OnnxStep(exported_step(checkpoint, cache), threads=1)
    else:
        step = load_step(backend, checkpoint, device="cpu", fp16=False, cache=cache)
    load_s = round(time.perf_counter() - started, 2)
    generator = torch.Generator().manual_seed(0)
    cond_frame = torch.randn(1, 265, generator=generator)
    cond = torch.randn(1, 80, 1103, generator=generator)
    sampler = MotionSampler(step, sampling_timesteps=steps[0])
    windows: dict[str, float] = {}
    for count in steps:
        sampler.setup(count)
        windows[str(count)] = cpu_ms(lambda: sampler.sample(cond_frame, cond), repeats)
    return {"backend": backend, "load_s": load_s, "window_ms": windows}


def networks_stage(models: Path, cache: Path, backend: str, repeats: int) -> dict[str, Any]:
    from renderers.liveportrait.checkpoint import locate
    from renderers.liveportrait.engine import LivePortraitEngine, load_engine
    from renderers.liveportrait.engine_onnx import OnnxEngine, exported_or_export
    from renderers.liveportrait.portrait import FramedPortrait
    from renderers.liveportrait.settings import LivePortraitSettings

    started = time.perf_counter()
    engine: LivePortraitEngine
    if backend == "onnx":  # one thread, as torch runs here
        engine = OnnxEngine(exported_or_export(locate(models), cache / "liveportrait"), threads=1)
    else:
        engine = load_engine(LivePortraitSettings(directory=models, backend=backend, device="cpu"))
    load_s = round(time.perf_counter() - started, 2)
    portrait = FramedPortrait.from_source(None, SIZE, SIZE)
    feature = engine.appearance(portrait.batch)
    kp = engine.motion(portrait.batch).kp.astype(np.float32)
    driving = kp + np.float32(0.01)
    stitch_ms = cpu_ms(lambda: engine.stitch(kp, driving), 5 * repeats)
    warp_ms = cpu_ms(lambda: engine.warp_decode(feature, kp, driving), max(1, repeats // 2))
    crop = (np.random.default_rng(1).random((512, 512, 3)) * 255).astype(np.uint8)
    paste_ms = cpu_ms(lambda: portrait.paste(crop), 5 * repeats)
    return {
        "backend": backend,
        "load_s": load_s,
        "stitch_ms": stitch_ms,
        "warp_decode_ms": warp_ms,
        "paste_ms": paste_ms,
    }


def totals(
    hubert: dict[str, Any], lmdm: dict[str, Any], networks: dict[str, Any], steps: int
) -> dict[str, Any]:
    """What a second of 30 fps output costs: 30 pictures, and 25 motion frames (HuBERT, and
    one LMDM window per 80 - overlap frames)."""
    motion_s = MOTION_FPS * (
        hubert["per_motion_frame_ms"] + lmdm["window_ms"][str(steps)] / (80 - OVERLAP)
    )
    picture_ms = networks["stitch_ms"] + networks["warp_decode_ms"] + networks["paste_ms"]
    per_second = (motion_s + OUTPUT_FPS * picture_ms) / 1000
    return {
        "backend": lmdm["backend"],
        "steps": steps,
        "motion_ms_per_second": round(motion_s, 1),
        "picture_ms": round(picture_ms, 1),
        "rtf": round(per_second, 2),
        "fps": round(OUTPUT_FPS / per_second, 2),
    }


# -- the renderer ----------------------------------------------------------------------------------


def first_frame(
    directory: Path,
    cache: Path,
    steps: int,
    hubert_ms: float,
    stages: list[tuple[dict[str, Any], dict[str, Any]]],
) -> dict[str, Any]:
    """The work the first speech frame sets off, counted through DittoRenderer on a stream kept
    running by idle frames (HuBERT windows, LMDM windows), at each back end's stage costs,
    plus one picture (stitch, warp, decode, paste)."""
    from renderers import FrameRequest, VideoFormat
    from renderers.base import Expression
    from renderers.ditto.renderer import DittoRenderer, required_lookahead_samples
    from renderers.ditto.settings import DittoSettings

    settings = DittoSettings(
        directory=directory, steps=steps, overlap=OVERLAP, device="cpu", cache_dir=cache
    )
    renderer = DittoRenderer(VideoFormat(SIZE, SIZE, OUTPUT_FPS), settings=settings)
    renderer.load(None)
    for index in range(12):  # idle frames: the model runs on silence
        renderer.frame_motion([FrameRequest(index, None, 0, 0, 0, expression=Expression())])
    counts = {"hubert": 0, "lmdm": 0}
    encoder, sample = renderer._audio.encoder, renderer._sampler.sample

    def counted_encoder(audio: np.ndarray) -> np.ndarray:
        counts["hubert"] += 1
        return encoder(audio)

    def counted_sample(*args: Any, **kwargs: Any) -> Any:
        counts["lmdm"] += 1
        return sample(*args, **kwargs)

    renderer._audio.encoder = counted_encoder
    renderer._sampler.sample = counted_sample  # type: ignore[method-assign]
    lookahead = required_lookahead_samples(OVERLAP)
    rate = 16000
    t = np.arange(533 + lookahead) / rate
    audio = (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    request = FrameRequest(
        index=12,
        audio=audio,
        window_offset=0,
        window_length=533,
        speech_position=0,
        segment=1,
        segment_position=0,
        expression=Expression(),
    )
    renderer.frame_motion([request])
    renderer.close()
    algorithmic_ms = 1000 * lookahead / rate
    rows = []
    for lmdm, networks in stages:
        compute = counts["hubert"] * hubert_ms + counts["lmdm"] * lmdm["window_ms"][str(steps)]
        picture = networks["stitch_ms"] + networks["warp_decode_ms"] + networks["paste_ms"]
        rows.append(
            {
                "backend": lmdm["backend"],
                "motion_compute_ms": round(compute, 1),
                "picture_ms": round(picture, 1),
                "total_ms": round(algorithmic_ms + compute + picture, 1),
            }
        )
    return {
        "steps": steps,
        "overlap": OVERLAP,
        "algorithmic_ms": round(algorithmic_ms, 1),
        "hubert_windows": counts["hubert"],
        "lmdm_windows": counts["lmdm"],
        "backends": rows,
        "late_frames": renderer.late_frames,
    }


async def interruption(directory: Path) -> dict[str, Any]:
    """clear_buffer mid-utterance through the runtime, SMALL weights at 128x128."""
    from livekit import rtc
    from livekit.agents.voice.avatar import AudioSegmentEnd

    from avatar_runtime import IDLE_AUDIO_KEY, AvatarVideoGenerator, RuntimeOptions
    from renderers import FrameRequest, VideoFormat
    from renderers.ditto.renderer import DittoRenderer
    from renderers.ditto.settings import DittoSettings

    class Recording(DittoRenderer):
        """Keeps each request, and at the first idle one after speech whether the renderer
        had emptied its audio, features and motion (reset) before drawing it."""

        seen: list[FrameRequest]
        drained: bool | None = None

        def render(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
            if self.drained is None and self.seen and self.seen[-1].is_speech:
                if not requests[0].is_speech:
                    self.drained = self._pushed == 0 and self._motion is None
            self.seen.extend(requests)
            return super().render(requests)

    size = 128
    settings = DittoSettings(directory=directory, steps=2, overlap=OVERLAP, device="cpu")
    renderer = Recording(VideoFormat(size, size, OUTPUT_FPS), settings=settings)
    renderer.seen = []
    renderer.load(None)
    options = RuntimeOptions(
        size, size, OUTPUT_FPS, 24000, render_wait_s=60.0, render_timeout_s=120.0
    )
    generator = AvatarVideoGenerator(renderer, options)
    rate = 24000
    t = np.arange(3 * rate) / rate
    speech = (8000 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(
        np.int16
    )
    step = rate // 10
    for i in range(0, speech.size, step):
        chunk = speech[i : i + step]
        await generator.push_audio(rtc.AudioFrame(chunk.tobytes(), rate, 1, chunk.size))
    await generator.push_audio(AudioSegmentEnd())
    stream = generator.__aiter__()
    videos = 0
    while videos < 8:  # into the utterance
        if isinstance(await stream.__anext__(), rtc.VideoFrame):
            videos += 1
    seen = renderer.seen
    cleared_at = len(seen)
    started = time.perf_counter()
    generator.clear_buffer()
    idle_ms = None
    after = 0
    speech_sent = 0
    while after < 6:
        item = await stream.__anext__()
        if isinstance(item, rtc.AudioFrame) and not (item.userdata or {}).get(IDLE_AUDIO_KEY):
            speech_sent += 1
        if isinstance(item, rtc.VideoFrame):
            after += 1
            if idle_ms is None and any(not r.is_speech for r in seen[cleared_at:]):
                idle_ms = 1000 * (time.perf_counter() - started)
    await generator.aclose()
    later = seen[cleared_at:]
    first_idle = next((i for i, r in enumerate(later) if not r.is_speech), None)
    return {
        "frames_rendered_before_idle": first_idle,
        "speech_requests_after_clear": sum(1 for r in later if r.is_speech),
        "speech_frames_sent_after_clear": speech_sent,
        "queues_empty_at_clear": renderer.drained,
        "clear_to_idle_frame_ms": None if idle_ms is None else round(idle_ms, 1),
        "note": "SMALL random weights at 128x128 on this CPU; the time is one render's",
    }


# -- run -------------------------------------------------------------------------------------------


def _measure(backends: list[str], steps: list[int], repeats: int) -> dict[str, Any]:
    import torch

    from renderers.ditto.audio.random_model import write_random_hubert_onnx
    from renderers.ditto.lmdm.random_weights import write_random_checkpoint
    from renderers.liveportrait.random_weights import write_random_checkpoints

    torch.set_num_threads(1)  # one core per stage: see the module doc
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ditto-bench-") as scratch:
        root = Path(scratch)
        cache = root / "cache"
        checkpoints = root / "checkpoints"
        models = checkpoints / "ditto_pytorch" / "models"
        print("bench: ditto: random weights at the published sizes", flush=True)
        write_random_checkpoints(models, "ditto", 7)
        lmdm_file = write_random_checkpoint(models, sizes="published", seed=3)
        print("bench: ditto: HuBERT (hubert-large sizes) exported to ONNX", flush=True)
        hubert_path = hubert_large_onnx(checkpoints)
        hubert = hubert_stage(hubert_path, repeats)
        lmdm, networks = [], []
        for backend in backends:
            print(f"bench: ditto: LMDM and networks, {backend}", flush=True)
            lmdm.append(lmdm_stage(lmdm_file, cache, backend, steps, max(1, repeats // 2)))
            networks.append(networks_stage(models, cache, backend, repeats))
        default_steps = 10 if 10 in steps else steps[0]
        rows = [
            totals(hubert, a, b, count)
            for a, b in zip(lmdm, networks, strict=True)
            for count in steps
        ]
        print("bench: ditto: first frame through the renderer", flush=True)
        first = first_frame(
            checkpoints,
            cache,
            default_steps,
            hubert["window_ms"],
            list(zip(lmdm, networks, strict=True)),
        )
        small = root / "small"
        small_models = small / "ditto_pytorch" / "models"
        write_random_checkpoints(small_models, "ditto", 7, sizes="small")
        write_random_checkpoint(small_models, sizes="small", seed=3)
        write_random_hubert_onnx(
            small / "ditto_pytorch" / "aux_models" / "hubert_streaming_fix_kv.onnx"
        )
        print("bench: ditto: interruption through the runtime", flush=True)
        interrupted = asyncio.run(interruption(small))
    return {
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "hubert": hubert,
        "lmdm": lmdm,
        "networks": networks,
        "totals": rows,
        "first_frame": first,
        "interruption": interrupted,
        "published": PUBLISHED,
        "gpu": "no GPU on this machine: CUDA fp16, ONNX Runtime CUDA and TensorRT not measured",
    }


async def run(
    backends: tuple[str, ...] = ("torch", "onnx"),
    steps: tuple[int, ...] = (5, 10, 25, 50),
    repeats: int = 3,
) -> dict[str, Any]:
    return await asyncio.to_thread(_measure, list(backends), list(steps), repeats)


def section(results: dict[str, Any]) -> str:
    from .report import _table

    machine = results["machine"]
    steps = sorted({int(s) for row in results["lmdm"] for s in row["window_ms"]})
    lmdm_rows = [
        [row["backend"], row["load_s"], *[row["window_ms"].get(str(s), "-") for s in steps]]
        for row in results["lmdm"]
    ]
    network_rows = [
        [r["backend"], r["load_s"], r["stitch_ms"], r["warp_decode_ms"], r["paste_ms"]]
        for r in results["networks"]
    ]
    total_rows = [
        [r["backend"], r["steps"], r["motion_ms_per_second"], r["picture_ms"], r["rtf"], r["fps"]]
        for r in results["totals"]
    ]
    first = results["first_frame"]
    cut = results["interruption"]
    hubert = results["hubert"]
    return "\n".join(
        [
            "## ditto: per stage, real-time factor, first frame, interruption",
            "",
            f"Measured {results['started']} on {machine['cpu_count']} CPUs with random weights "
            f"at the published sizes; {results['gpu']}. Every stage ran on one thread and is "
            "given in CPU milliseconds on one core (process time, the median after a "
            "warm-up), which other work on the machine inflates far less than wall time "
            f"(1-minute load average {results['load_average'][0]} at the start, "
            f"{results['load_average'][1]} at the end).",
            "",
            f"HuBERT (hubert-large sizes, the project's ONNX export, ONNX Runtime): "
            f"{hubert['window_ms']} ms per 6480-sample window, one window every 5 motion "
            f"frames ({hubert['per_motion_frame_ms']} ms a frame).",
            "",
            "LMDM, one 80-frame window (both guidance passes in each step):",
            "",
            _table(["back end", "load (s)", *[f"{s} steps (ms)" for s in steps]], lmdm_rows),
            "",
            "LivePortrait's networks in Ditto's layout, per picture (512x512 out):",
            "",
            _table(
                ["back end", "load (s)", "stitch (ms)", "warp+decode (ms)", "paste-back (ms)"],
                network_rows,
            ),
            "",
            f"Adding up, per second of 30 fps output at overlap {OVERLAP} (25 motion frames: "
            "HuBERT and one LMDM window per 5 frames; 30 pictures). RTF = compute seconds of "
            "one core per second of video (below 1 is real time):",
            "",
            _table(
                ["back end", "steps", "motion (ms/s)", "picture (ms)", "RTF", "fps"], total_rows
            ),
            "",
            f"First frame after the first audio ({first['steps']} steps, overlap "
            f"{first['overlap']}): {first['algorithmic_ms']} ms algorithmic (the look-ahead "
            f"the overlap needs), then the work it sets off, counted through the renderer: "
            f"{first['hubert_windows']} HuBERT and {first['lmdm_windows']} LMDM windows, and "
            "one picture:",
            "",
            _table(
                ["back end", "motion compute (ms)", "picture (ms)", "first frame (ms)"],
                [
                    [r["backend"], r["motion_compute_ms"], r["picture_ms"], r["total_ms"]]
                    for r in first["backends"]
                ],
            ),
            "",
            f"Interruption through the runtime (`clear_buffer` 8 frames into an utterance; "
            f"{cut['note']}): speech frames sent after the clear: "
            f"{cut['speech_frames_sent_after_clear']}; speech renders that still ran after it "
            f"(already handed to the render thread; their pictures are dropped): "
            f"{cut['speech_requests_after_clear']}; audio, features and motion emptied before "
            f"the first idle frame: {cut['queues_empty_at_clear']}; "
            f"{cut['clear_to_idle_frame_ms']} ms until the first idle frame was drawn (wall "
            "time: one SMALL render on this CPU).",
            "",
            "Published, for comparison (GPU): "
            + "; ".join(f"{name}: {figure}" for name, figure in results["published"].items())
            + ".",
        ]
    )


def main() -> None:
    from .report import emit_json

    parser = argparse.ArgumentParser(prog="python -m bench.ditto")
    parser.add_argument("--backends", default="torch,onnx")
    parser.add_argument("--steps", default="5,10,25,50")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    results = asyncio.run(
        run(
            tuple(b for b in args.backends.split(",") if b),
            tuple(int(s) for s in args.steps.split(",") if s),
            args.repeats,
        )
    )
    emit_json(results, args.out)


if __name__ == "__main__":
    main()
