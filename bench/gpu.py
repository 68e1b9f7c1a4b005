"""One prepared script for a lent GPU machine (the workplace's `device` tool): the neural
renderers' networks at their published sizes on CUDA, random weights (speed does not depend on
their values), per precision and batch, with GPU memory, and what they add up to per renderer:
fps, real-time factor, sessions per GPU at 30 fps (compute-bound estimate: one GPU's time
divided among sessions, batches as the renderers make them) and Ditto's first frame.

It imports only the renderers' network modules (torch, numpy, transformers for HuBERT), so it
runs on the device image's own Python without the project's venv:

    run(command="PYTHONUNBUFFERED=1 python3 -m bench.gpu --out $OUT/gpu.json", timeout_s=540)

It keeps to about 6 minutes on an H100 and writes what it has measured after each part, so a
timeout still returns the parts done. Here, `python -m bench.gpu --device cpu --quick` is a dry
run at SMALL sizes (minutes on 2 cores), to check the script before spending GPU time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch

from .timing import median_ms

OUTPUT_FPS = 30
MOTION_FPS = 25
DITTO_OVERLAP = 75


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(call: Callable[[], object], device: str, repeats: int) -> float:
    def synced() -> None:
        call()
        _sync(device)

    return median_ms(synced, repeats)


def _autocast(device: str, fp16: bool) -> contextlib.AbstractContextManager[Any]:
    if fp16 and device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _memory(device: str, into: dict[str, Any]) -> Iterator[None]:
    """Peak GPU memory allocated inside the block, in MiB."""
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    yield
    if device.startswith("cuda"):
        into["peak_mib"] = round((torch.cuda.max_memory_allocated() - before) / 2**20, 1)


# -- LivePortrait (the liveportrait renderer, and Ditto's painting) ------------------------------


def liveportrait(device: str, sizes: str, batches: list[int], repeats: int) -> dict[str, Any]:
    from renderers.liveportrait.networks.sizes import NUM_KP, VOLUME_CHANNELS, VOLUME_DEPTH
    from renderers.liveportrait.networks.spade import WarpDecode
    from renderers.liveportrait.networks.stitching import Stitch
    from renderers.liveportrait.random_weights import random_networks

    networks = random_networks(0, sizes)  # type: ignore[arg-type]
    warp_decode = WarpDecode(networks["warp"], networks["decoder"])  # type: ignore[arg-type]
    warp_decode = warp_decode.to(device).eval()
    stitch = Stitch(networks["stitching"]).to(device).eval()  # type: ignore[arg-type]
    rows = []
    for fp16 in (False, True) if device.startswith("cuda") else (False,):
        for batch in batches:
            row: dict[str, Any] = {"fp16": fp16, "batch": batch}
            feature = torch.randn(batch, VOLUME_CHANNELS, VOLUME_DEPTH, 64, 64, device=device)
            kp = torch.randn(batch, NUM_KP, 3, device=device) * 0.4
            driving = kp + 0.02
            with torch.inference_mode(), _autocast(device, fp16), _memory(device, row):
                ms = _timed(partial(warp_decode, feature, kp, driving), device, repeats)
                stitch_ms = _timed(partial(stitch, kp, driving), device, repeats)
            row.update(
                warp_decode_ms=ms,
                ms_per_frame=round(ms / batch, 2),
                fps=round(1000 * batch / ms, 1),
                stitch_ms=stitch_ms,
            )
            rows.append(row)
            print(f"gpu: liveportrait {row}", flush=True)
    return {"sizes": sizes, "rows": rows}


# -- Ditto ---------------------------------------------------------------------------------------


def ditto_lmdm(device: str, sizes: str, steps: list[int], repeats: int) -> dict[str, Any]:
    from renderers.ditto.lmdm.diffusion import MotionSampler
    from renderers.ditto.lmdm.engines import TorchStep
    from renderers.ditto.lmdm.random_weights import random_motion_decoder

    decoder = random_motion_decoder(0, sizes)  # type: ignore[arg-type]
    rows = []
    cond_frame = torch.randn(1, 265)
    cond = torch.randn(1, 80, 1103)
    for fp16 in (False, True) if device.startswith("cuda") else (False,):
        step = TorchStep(decoder, device, fp16=fp16)
        sampler = MotionSampler(step, steps[0])
        for count in steps:
            row: dict[str, Any] = {"fp16": fp16, "steps": count}
            sampler.setup(count)
            with _memory(device, row):
                row["window_ms"] = _timed(
                    partial(sampler.sample, cond_frame, cond), device, max(1, repeats // 2)
                )
            rows.append(row)
            print(f"gpu: ditto lmdm {row}", flush=True)
    return {"sizes": sizes, "rows": rows}


def hubert(device: str, quick: bool, repeats: int) -> dict[str, Any]:
    """HuBERT at hubert-large's sizes in torch (the device image's ONNX Runtime has no CUDA
    provider): per 6480-sample window, as Ditto runs it."""
    from transformers import HubertConfig, HubertModel

    layers = 2 if quick else 24
    config = HubertConfig(
        hidden_size=1024,
        num_hidden_layers=layers,
        num_attention_heads=16,
        intermediate_size=4096,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
    )
    model = HubertModel(config).eval().to(device)
    audio = torch.randn(1, 6480, device=device) * 0.1
    rows = []
    for fp16 in (False, True) if device.startswith("cuda") else (False,):
        row: dict[str, Any] = {"fp16": fp16, "layers": layers}
        with torch.inference_mode(), _autocast(device, fp16), _memory(device, row):
            row["window_ms"] = _timed(lambda: model(audio), device, repeats)
        rows.append(row)
        print(f"gpu: hubert {row}", flush=True)
    return {"rows": rows}


def ditto_totals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per second of 30 fps output at overlap 75: 25 motion frames (a HuBERT window and an
    LMDM window per 5 frames) and 30 pictures at the best batch; RTF, fps, sessions per GPU,
    and the first frame (0.49 s look-ahead + three HuBERT and three LMDM windows + a picture)."""
    rows = []
    frames_per_window = 80 - DITTO_OVERLAP
    for fp16 in sorted({r["fp16"] for r in results["ditto_lmdm"]["rows"]}):
        hub = next(r for r in results["hubert"]["rows"] if r["fp16"] == fp16)["window_ms"]
        pictures = [r for r in results["liveportrait"]["rows"] if r["fp16"] == fp16]
        best = min(r["ms_per_frame"] + r["stitch_ms"] / r["batch"] for r in pictures)
        single = next(r for r in pictures if r["batch"] == 1)
        one_picture = single["warp_decode_ms"] + single["stitch_ms"]
        for lmdm in (r for r in results["ditto_lmdm"]["rows"] if r["fp16"] == fp16):
            windows_per_s = MOTION_FPS / frames_per_window
            motion_ms = windows_per_s * (hub + lmdm["window_ms"])
            per_second_ms = motion_ms + OUTPUT_FPS * best
            rtf = per_second_ms / 1000
            rows.append(
                {
                    "fp16": fp16,
                    "steps": lmdm["steps"],
                    "rtf": round(rtf, 3),
                    "fps": round(OUTPUT_FPS / rtf, 1),
                    "sessions_at_30fps": math.floor(1 / rtf) if rtf > 0 else None,
                    "first_frame_ms": round(490 + 3 * (hub + lmdm["window_ms"]) + one_picture),
                }
            )
    return rows


# -- wav2lip -------------------------------------------------------------------------------------


def wav2lip(device: str, batches: list[int], repeats: int) -> dict[str, Any]:
    from renderers.wav2lip.model import Wav2Lip

    rows = []
    for size in (96, 256):
        model = Wav2Lip(size).to(device).eval()
        for fp16 in (False, True) if device.startswith("cuda") else (False,):
            for batch in batches:
                row: dict[str, Any] = {"size": size, "fp16": fp16, "batch": batch}
                mel = torch.randn(batch, 1, 80, 16, device=device)
                faces = torch.rand(batch, 6, size, size, device=device)
                with torch.inference_mode(), _autocast(device, fp16), _memory(device, row):
                    ms = _timed(partial(model, mel, faces), device, repeats)
                row.update(call_ms=ms, fps=round(1000 * batch / ms, 1))
                rows.append(row)
                print(f"gpu: wav2lip {row}", flush=True)
    return {"rows": rows}


# -- run -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="SMALL sizes, few repeats")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    device = args.device
    quick = args.quick
    sizes = "small" if quick else "published"
    repeats = 2 if quick else 10
    batches = [1, 4] if quick else [1, 4, 8]
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "tensorrt": _installed("tensorrt"),
        "onnxruntime_cuda": _ort_cuda(),
        "sizes": sizes,
    }
    out = Path(args.out) if args.out else Path(tempfile.gettempdir()) / "gpu.json"
    parts: list[tuple[str, Callable[[], Any]]] = [
        ("liveportrait", lambda: liveportrait(device, sizes, batches, repeats)),
        ("ditto_lmdm", lambda: ditto_lmdm(device, sizes, [5, 10, 25, 50], repeats)),
        ("hubert", lambda: hubert(device, quick, repeats)),
        ("wav2lip", lambda: wav2lip(device, [1, 4, 16] if not quick else [1, 4], repeats)),
    ]
    for name, part in parts:
        started = time.perf_counter()
        try:
            results[name] = part()
        except Exception as error:  # one part failing must not cost the others
            results[name] = {"error": f"{type(error).__name__}: {error}"}
        print(f"gpu: {name} took {time.perf_counter() - started:.0f} s", flush=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
    if all("rows" in results.get(k, {}) for k in ("liveportrait", "ditto_lmdm", "hubert")):
        results["ditto"] = ditto_totals(results)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results.get("ditto", []), indent=2))
    print(f"gpu: wrote {out}")


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _ort_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


if __name__ == "__main__":
    main()
