"""musetalk's benchmark: per-stage time of MuseTalk 1.5 at its published sizes (the UNet of
musetalk.json, sd-vae-ft-mse, Whisper-tiny's encoder), on this machine's CPU (and its GPU when
torch sees one), beside MuseTalk's and LiveTalking's published figures. Weights are random,
built from the published configs (speed does not depend on their values).

    python -m bench --only musetalk           # writes bench/results/musetalk.json + the report
    python -m bench.musetalk [--batches 1,2] [--repeats 2]   # prints JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

import numpy as np

from .timing import median_ms

PUBLISHED = {
    "MuseTalk (README): Tesla V100, fp16, 256x256 face": (
        "30 fps+ (UNet + VAE decode 32 ms a frame, issue #6)"
    ),
    "LiveTalking (README): RTX 3080 Ti": "42 fps",
    "LiveTalking (README): RTX 3090": "45 fps",
    "LiveTalking (README): RTX 4090": "72 fps",
}


def _timed(fn: Any, repeats: int, clock: Any = time.perf_counter) -> float:
    """Median seconds of `repeats` calls after one warm-up call, on `clock`."""
    return median_ms(fn, repeats, digits=6, clock=clock) / 1000


def measure(device: str, fp16: bool, batches: list[int], repeats: int) -> dict[str, Any]:
    import torch

    from renderers.musetalk.audio import FeatureExtractor
    from renderers.musetalk.blend import paste_face
    from renderers.musetalk.networks import (
        FaceEncoder,
        MuseTalkNetworks,
        build_unet,
        build_vae,
        build_whisper_encoder,
    )
    from tests.musetalk_fixtures import PUBLISHED_UNET, PUBLISHED_VAE, PUBLISHED_WHISPER

    # On the CPU: one thread, timed in CPU time, the cost on one core (wall time swings with
    # whatever else shares the machine). On a GPU: wall time, synchronised.
    clock = time.process_time if device == "cpu" else time.perf_counter
    start = time.perf_counter()
    unet = build_unet(dict(PUBLISHED_UNET)).eval().requires_grad_(False)
    vae = build_vae(dict(PUBLISHED_VAE)).eval().requires_grad_(False)
    whisper = build_whisper_encoder(dict(PUBLISHED_WHISPER)).eval().requires_grad_(False)
    networks = MuseTalkNetworks(unet, vae, whisper, device=device, fp16=fp16)
    build_s = time.perf_counter() - start
    params = {
        "unet": sum(p.numel() for p in unet.parameters()),
        "vae": sum(p.numel() for p in vae.parameters()),
        "whisper_encoder": sum(p.numel() for p in whisper.parameters()),
    }
    rng = np.random.default_rng(0)
    mel = FeatureExtractor(80)
    audio = (rng.standard_normal(16000 * 3) * 0.1).astype(np.float32)
    window = mel(audio)
    stages: dict[str, Any] = {
        "log_mel_3s_window_s": _timed(lambda: mel(audio), repeats, clock),
        "whisper_encoder_s": _timed(lambda: networks.audio_features(window), repeats, clock),
    }
    layers, width = networks.layers, networks.feature_dim
    per_batch: dict[str, dict[str, float]] = {}
    dtype = networks.dtype
    for batch in batches:
        latents = torch.from_numpy(rng.standard_normal((batch, 8, 32, 32)).astype(np.float32))
        tokens = rng.standard_normal((batch, 10 * layers, width)).astype(np.float32)
        pe_tokens = torch.from_numpy(tokens).to(networks.device, dtype)
        sample = latents.to(networks.device, dtype)

        def unet_step(sample: Any = sample, pe_tokens: Any = pe_tokens) -> None:
            with torch.no_grad():
                networks.unet(sample, networks._timestep, encoder_hidden_states=pe_tokens)
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        def vae_decode(sample: Any = sample) -> None:
            with torch.no_grad():
                networks.vae.decode(sample[:, :4] / networks.scaling)
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        def whole(latents: Any = latents, tokens: Any = tokens) -> None:
            networks.generate(latents, tokens)

        unet_s = _timed(unet_step, repeats, clock)
        decode_s = _timed(vae_decode, repeats, clock)
        whole_s = _timed(whole, repeats, clock)
        per_batch[str(batch)] = {
            "unet_s": round(unet_s, 4),
            "vae_decode_s": round(decode_s, 4),
            "generate_s": round(whole_s, 4),
            "frames_per_s": round(batch / whole_s, 3),
        }
    encoder = FaceEncoder(vae, device=device, fp16=fp16)
    crop = rng.integers(0, 255, (1, 256, 256, 3), dtype=np.uint8)
    stages["preparation_vae_encode_per_frame_s"] = _timed(
        lambda: encoder.latents(crop), repeats, clock
    )
    frame = rng.integers(0, 255, (512, 512, 4), dtype=np.uint8)
    face = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
    mask = np.full((230, 200), 200, np.uint8)
    stages["paste_back_512_s"] = _timed(
        lambda: paste_face(frame, face, np.array([156.0, 150.0, 356.0, 380.0]), mask), 20, clock
    )
    return {
        "device": device,
        "precision": "fp16" if fp16 else "fp32",
        "build_s": round(build_s, 2),
        "parameters": params,
        "stages": {k: round(v, 4) for k, v in stages.items()},
        "batches": per_batch,
    }


async def run(batches: list[int] | None = None, repeats: int = 2) -> dict[str, Any]:
    """The measurements (in a thread: they are minutes of blocking torch work)."""
    return await asyncio.to_thread(_measure_all, batches, repeats)


def _measure_all(batches: list[int] | None, repeats: int) -> dict[str, Any]:
    import torch

    batches = batches or [1, 2]
    torch.set_num_threads(1)  # the CPU figures are per core (measure())
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "published": PUBLISHED,
        "runs": [measure("cpu", False, batches, repeats)],
    }
    if torch.cuda.is_available():
        results["runs"].append(measure("cuda", True, [1, 8, 16], 5))
        results["gpu"] = torch.cuda.get_device_name(0)
    else:
        results["gpu"] = None
    return results


def section(results: dict[str, Any]) -> str:
    lines = [
        "## musetalk: per-stage time (MuseTalk 1.5 at its published sizes)",
        "",
        f"Measured {results['started']} on {results['machine']['cpu_count']} CPUs, random weights "
        "in the published configurations. CPU rows: one thread, timed in CPU time (seconds of "
        "one core; wall time swings with other work on the machine). "
        + (
            f"GPU: {results['gpu']}."
            if results.get("gpu")
            else "No GPU was available to this run: only CPU figures; the GPU figures below are "
            "the published ones, not measured here."
        ),
        "",
        "| device | precision | batch | UNet (s) | VAE decode (s) | generate (s) | frames/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in results["runs"]:
        for batch, row in run["batches"].items():
            lines.append(
                f"| {run['device']} | {run['precision']} | {batch} | {row['unet_s']} | "
                f"{row['vae_decode_s']} | {row['generate_s']} | {row['frames_per_s']} |"
            )
    lines += ["", "| stage | " + " | ".join(r["device"] for r in results["runs"]) + " |"]
    lines.append("| --- |" + " --- |" * len(results["runs"]))
    for stage in results["runs"][0]["stages"]:
        lines.append(
            f"| {stage} | " + " | ".join(str(r["stages"][stage]) for r in results["runs"]) + " |"
        )
    lines += [
        "",
        "Published: " + "; ".join(f"{k}: {v}" for k, v in results["published"].items()),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.musetalk")
    parser.add_argument("--batches", default="1,2")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",") if b]
    print(json.dumps(asyncio.run(run(batches, args.repeats)), indent=2))


if __name__ == "__main__":
    main()
