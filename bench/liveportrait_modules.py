"""liveportrait's per-network benchmark: milliseconds per call of each network (F, M, W, G,
W+G fused as warp_decode, the three MLPs) and warp_decode frames per second, for each back end
and batch size. Weights are random in the published layout unless a checkpoint folder is
given: speed does not depend on their values.

    python -m bench.liveportrait_modules [--dir DIR] [--backends torch,onnx] [--batches 1,4]
                                         [--repeats 3] [--sizes published|small]
                                         [--cache DIR] [--out FILE]

prints JSON. Each figure is the median of `repeats` timed calls after one warm-up call.
W and G apart are timed with torch's modules directly and, for ONNX Runtime, from separate
exports of the two (the engine itself runs them fused)."""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.timing import median_ms
from renderers.liveportrait.checkpoint import CheckpointFiles, locate
from renderers.liveportrait.settings import LivePortraitSettings


def _inputs(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    kp_source = (0.4 * rng.standard_normal((batch, 21, 3))).astype(np.float32)
    return {
        "image": rng.random((batch, 3, 256, 256), dtype=np.float32),
        "feature": rng.standard_normal((batch, 32, 16, 64, 64)).astype(np.float32) * 0.2,
        "kp_source": kp_source,
        "kp_driving": kp_source + 0.02 * rng.standard_normal(kp_source.shape).astype(np.float32),
        "lip": np.tile(np.array([[0.1, 0.3]], np.float32), (batch, 1)),
        "eye": np.tile(np.array([[0.3, 0.3, 0.2]], np.float32), (batch, 1)),
    }


def _split_timers(
    engine: Any, files: CheckpointFiles, batch: int, repeats: int, scratch: Path
) -> dict[str, float]:
    """W and G timed apart (the engine runs them fused)."""
    data = _inputs(batch)
    if engine.backend == "torch":
        import torch

        networks = engine.networks
        feature, kp_s, kp_d = (
            torch.from_numpy(data[k]) for k in ("feature", "kp_source", "kp_driving")
        )
        with torch.inference_mode():
            warped = networks.warp(feature, kp_s, kp_d)
            return {
                "warp": median_ms(lambda: networks.warp(feature, kp_s, kp_d), repeats),
                "spade": median_ms(lambda: networks.decoder(warped), repeats),
            }
    if engine.backend == "onnx":
        import onnxruntime as ort

        from renderers.liveportrait.checkpoint import load_networks
        from renderers.liveportrait.onnx_export import graph_modules

        folder = scratch / "split"
        if not (folder / "decoder.onnx").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            _export_split(load_networks(files), folder, graph_modules)
        warp = ort.InferenceSession(str(folder / "warp.onnx"), providers=["CPUExecutionProvider"])
        decoder = ort.InferenceSession(
            str(folder / "decoder.onnx"), providers=["CPUExecutionProvider"]
        )
        feeds = {
            "feature_3d": data["feature"],
            "kp_source": data["kp_source"],
            "kp_driving": data["kp_driving"],
        }
        warped = warp.run(None, feeds)[0]
        return {
            "warp": median_ms(lambda: warp.run(None, feeds), repeats),
            "spade": median_ms(lambda: decoder.run(None, {"warped": warped}), repeats),
        }
    return {}


def _export_split(networks: Any, folder: Path, graph_modules: Callable[..., Any]) -> None:
    import torch

    from renderers.liveportrait.onnx_export import export_graph

    feature, kp_s, kp_d = graph_modules(networks)["warp_decode"][1]
    with torch.inference_mode():
        warped = networks.warp(feature, kp_s, kp_d)
    export_graph(networks.warp, (feature, kp_s, kp_d), "warp", folder / "warp.onnx")
    export_graph(networks.decoder, (warped,), "decoder", folder / "decoder.onnx")


def _time_batch(
    engine: Any, files: CheckpointFiles, batch: int, repeats: int, scratch: Path
) -> dict[str, float]:
    d = _inputs(batch)
    times = {
        "appearance": median_ms(lambda: engine.appearance(d["image"]), repeats),
        "motion": median_ms(lambda: engine.motion(d["image"]), repeats),
        **_split_timers(engine, files, batch, repeats, scratch),
        "warp_decode": median_ms(
            lambda: engine.warp_decode(d["feature"], d["kp_source"], d["kp_driving"]), repeats
        ),
        "stitch": median_ms(lambda: engine.stitch(d["kp_source"], d["kp_driving"]), repeats),
    }
    if engine.has_lip_retargeting:
        times["retarget_lip"] = median_ms(
            lambda: engine.retarget_lip(d["kp_source"], d["lip"]), repeats
        )
    if engine.has_eye_retargeting:
        times["retarget_eye"] = median_ms(
            lambda: engine.retarget_eye(d["kp_source"], d["eye"]), repeats
        )
    times["warp_decode_fps"] = round(batch / (times["warp_decode"] / 1000), 3)
    return times


def measure(
    settings_or_dir: LivePortraitSettings | Path | str,
    backends: Sequence[str] = ("torch", "onnx"),
    batches: Sequence[int] = (1, 4),
    repeats: int = 3,
) -> dict[str, Any]:
    """{"backends": [{backend, device, fp16, load_s, batches: {B: {module: ms, ...,
    "warp_decode_fps": fps}}}], ...}. A back end that fails to load reports its error."""
    from renderers.liveportrait.engine import load_engine

    if isinstance(settings_or_dir, LivePortraitSettings):
        base = settings_or_dir
    else:
        base = LivePortraitSettings(directory=Path(settings_or_dir))
    files = locate(base.directory_or_raise())
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lp-bench-") as scratch:
        for backend in backends:
            settings = LivePortraitSettings(
                directory=base.directory,
                backend=backend,
                device=base.device,
                fp16=base.fp16,
                cache_dir=base.cache_dir or Path(scratch) / "cache",
            )
            started = time.perf_counter()
            try:
                engine = load_engine(settings)
            except Exception as error:  # one back end failing must not hide the others
                rows.append({"backend": backend, "error": str(error)})
                continue
            row: dict[str, Any] = {
                "backend": engine.backend,
                "device": engine.device,
                "fp16": engine.fp16,
                "load_s": round(time.perf_counter() - started, 2),
                "batches": {},
            }
            for batch in batches:
                print(f"bench: liveportrait {engine.backend} batch {batch}", flush=True)
                row["batches"][batch] = _time_batch(engine, files, batch, repeats, Path(scratch))
            engine.close()
            rows.append(row)
    return {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "repeats": repeats,
        "unit": "milliseconds per call (median); warp_decode_fps = frames per second",
        "backends": rows,
    }


def main() -> None:
    from bench.report import emit_json

    parser = argparse.ArgumentParser(prog="python -m bench.liveportrait_modules")
    parser.add_argument("--dir", default="", help="a checkpoint folder (default: random weights)")
    parser.add_argument("--backends", default="torch,onnx")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="published", choices=["published", "small"])
    parser.add_argument("--cache", default="", help="keep exported ONNX files here")
    parser.add_argument("--out", default="", help="also write the JSON here")
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    batches = [int(b) for b in args.batches.split(",") if b]
    with tempfile.TemporaryDirectory(prefix="lp-weights-") as weights:
        directory = Path(args.dir) if args.dir else None
        if directory is None:
            from renderers.liveportrait.random_weights import write_random_checkpoints

            directory = write_random_checkpoints(
                Path(weights) / "liveportrait", "liveportrait", sizes=args.sizes
            )
        cache = Path(args.cache) if args.cache else None
        settings = LivePortraitSettings(directory=directory, device="cpu", cache_dir=cache)
        results = measure(settings, backends, batches, args.repeats)
        results["weights"] = "given" if args.dir else f"random ({args.sizes} sizes)"
    emit_json(results, args.out)


if __name__ == "__main__":
    main()
