"""The LMDM's guided denoising step on each back end. The sampler (diffusion.MotionSampler)
calls a step S times per window; only the step moves between back ends, the sampler's
arithmetic between steps stays in torch on the CPU or the step's GPU.

* torch: `GuidedDenoiser` itself, float32, or under CUDA autocast in fp16.
* onnx: ONNX Runtime on Ditto's released `ditto_onnx/lmdm_v0.4_hubert.onnx` when the user has
  it (the same tensor names and shapes as our export), else on the project's export of the
  .pth, made once per file content and cached:

      <cache>/ditto/<sha256 of the .pth, 16 hex>-v<EXPORT_VERSION>/lmdm_step.onnx

* tensorrt: an engine built from that ONNX (fp16 when asked), cached beside it per TensorRT
  version, GPU and precision. Ditto's own `.engine` files are tied to TensorRT 8.6 and a GPU
  generation, so they are not loaded.

Every step takes and returns torch tensors: (x (1, 80, 265), cond_frame (1, 265),
cond (1, 80, 1103), time_cond (1,) int64) -> (pred_noise, x_start)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ...base import RendererError
from ...model_settings import installed, tensorrt_unavailable_reason
from .diffusion import GuidedDenoiser
from .network import MotionDecoder
from .onnx_export import INPUTS, OUTPUTS
from .sizes import MOTION_DIM, SEQ_FRAMES

logger = logging.getLogger(__name__)

EXPORT_VERSION = 1
"""Bumped whenever the exported step graph changes, so older exports are not reused."""
EXPORT_FILE = "lmdm_step.onnx"
RELEASED_ONNX = ("ditto_onnx/lmdm_v0.4_hubert.onnx", "lmdm_v0.4_hubert.onnx")
"""Where, below AVATAR_DITTO_DIR, Ditto's released step graph is looked for."""
STEP_BACKENDS = ("torch", "onnx", "tensorrt")


class DenoiseStep(Protocol):
    backend: str
    device: torch.device
    window_shape: tuple[int, int, int]
    """(1, frames, motion dims): the shape of x."""

    def __call__(
        self, x: torch.Tensor, cond_frame: torch.Tensor, cond: torch.Tensor, time: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class TorchStep:
    """GuidedDenoiser on its device; fp16 under CUDA autocast (outputs back in float32)."""

    backend = "torch"

    def __init__(self, decoder: MotionDecoder, device: str, *, fp16: bool = False) -> None:
        self.module = GuidedDenoiser(decoder).to(device).eval()
        self.device = torch.device(device)
        self.fp16 = fp16 and self.device.type == "cuda"
        sizes = decoder.sizes
        self.window_shape = (1, sizes.seq_frames, sizes.motion_dim)

    def __call__(
        self, x: torch.Tensor, cond_frame: torch.Tensor, cond: torch.Tensor, time: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        context = (
            torch.autocast("cuda", dtype=torch.float16) if self.fp16 else contextlib.nullcontext()
        )
        with torch.inference_mode(), context:
            pred_noise, x_start = self.module(x, cond_frame, cond, time)
        return pred_noise.float(), x_start.float()


class OnnxStep:
    """ONNX Runtime on one step graph; CUDA's provider when the device is a GPU."""

    backend = "onnx"

    def __init__(self, path: Path, device: str = "cpu", threads: int = 0) -> None:
        import onnxruntime as ort

        providers: list[Any] = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RendererError(
                    "backend_unavailable",
                    "ONNX Runtime on CUDA needs onnxruntime-gpu (CUDAExecutionProvider missing)",
                )
            index = int(device.partition(":")[2] or 0)
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads  # 0: one per core
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        self.path = path
        names = [i.name for i in self.session.get_inputs()]
        if names != list(INPUTS):
            raise RendererError(
                "invalid_checkpoint",
                f"{path.name} is not an LMDM step graph: its inputs are {names}, "
                f"expected {list(INPUTS)}",
            )
        shape = self.session.get_inputs()[0].shape
        frames, dims = (int(d) if isinstance(d, int) else 0 for d in shape[1:3])
        self.window_shape = (1, frames, dims)
        self.device = torch.device("cpu")  # inputs and outputs travel through host memory

    def __call__(
        self, x: torch.Tensor, cond_frame: torch.Tensor, cond: torch.Tensor, time: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        feeds = {
            "x": x.cpu().numpy().astype(np.float32, copy=False),
            "cond_frame": cond_frame.cpu().numpy().astype(np.float32, copy=False),
            "cond": cond.cpu().numpy().astype(np.float32, copy=False),
            "time_cond": time.cpu().numpy().astype(np.int64, copy=False),
        }
        pred_noise, x_start = self.session.run(list(OUTPUTS), feeds)
        return torch.from_numpy(pred_noise), torch.from_numpy(x_start)


class TensorRTStep:
    """A TensorRT engine of the step graph, run with torch's CUDA buffers."""

    backend = "tensorrt"

    def __init__(self, onnx_path: Path, device: str, *, fp16: bool) -> None:
        reason = tensorrt_unavailable_reason()
        if reason:
            raise RendererError("backend_unavailable", reason)
        import tensorrt as trt

        from ...liveportrait.engine_tensorrt import TensorRTGraph, build_engine

        self.device = torch.device("cuda:0" if device in ("cuda", "auto") else device)
        gpu = "".join(c if c.isalnum() else "-" for c in torch.cuda.get_device_name(self.device))
        precision = "fp16" if fp16 else "fp32"
        engine = onnx_path.parent / f"trt{trt.__version__}-{gpu}-{precision}" / "lmdm_step.engine"
        engine.parent.mkdir(parents=True, exist_ok=True)
        if not engine.is_file():
            build_engine(onnx_path, engine, fp16=fp16)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._graph = TensorRTGraph(runtime, engine, INPUTS, OUTPUTS)
        self._runtime = runtime
        self.window_shape = (1, SEQ_FRAMES, MOTION_DIM)

    def __call__(
        self, x: torch.Tensor, cond_frame: torch.Tensor, cond: torch.Tensor, time: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        arrays = (
            x.cpu().numpy().astype(np.float32, copy=False),
            cond_frame.cpu().numpy().astype(np.float32, copy=False),
            cond.cpu().numpy().astype(np.float32, copy=False),
            time.cpu().numpy().astype(np.int64, copy=False),
        )
        pred_noise, x_start = self._graph.run(self.device, arrays)
        return (
            torch.from_numpy(pred_noise).to(self.device),
            torch.from_numpy(x_start).to(self.device),
        )


# -- finding or making the ONNX ------------------------------------------------------------------


def released_onnx(directory: Path | None) -> Path | None:
    """Ditto's own step graph below AVATAR_DITTO_DIR, if the user has it."""
    if directory is None:
        return None
    for relative in RELEASED_ONNX:
        candidate = directory / relative
        if candidate.is_file():
            return candidate
    return None


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def export_path(checkpoint: Path, cache: Path) -> Path:
    return cache / "ditto" / f"{file_digest(checkpoint)[:16]}-v{EXPORT_VERSION}" / EXPORT_FILE


def exported_step(checkpoint: Path, cache: Path, decoder: MotionDecoder | None = None) -> Path:
    """The project's ONNX of the step for `checkpoint`, exported now (once, under a lock shared
    across processes, written atomically) unless it exists."""
    from ...liveportrait.onnx_export import exclusive
    from .checkpoint import load_motion_decoder
    from .onnx_export import export_step

    target = export_path(checkpoint, cache)
    if target.is_file():
        return target
    with exclusive(target.with_name(target.name + ".lock")):
        if target.is_file():  # another process finished meanwhile
            return target
        decoder = decoder or load_motion_decoder(checkpoint, "cpu")
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        export_step(GuidedDenoiser(decoder), partial)
        os.replace(partial, target)
    return target


def load_step(
    backend: str,
    checkpoint: Path,
    *,
    device: str,
    fp16: bool,
    cache: Path,
    directory: Path | None = None,
    decoder: MotionDecoder | None = None,
    fallback_to_torch: bool = False,
) -> DenoiseStep:
    """The step on `backend` (torch, onnx or tensorrt). RendererError('backend_unavailable')
    when the back end cannot run here, with what is missing; with `fallback_to_torch` (the
    `auto` setting) a TensorRT that cannot build the engine gives torch instead."""
    from .checkpoint import load_motion_decoder

    if backend == "tensorrt" and fallback_to_torch:
        try:
            return load_step(
                backend, checkpoint, device=device, fp16=fp16, cache=cache, decoder=decoder
            )
        except RendererError as error:
            if error.code != "backend_unavailable":
                raise
            logger.warning("ditto: no TensorRT for the LMDM (%s); using torch", error.message)
            backend = "torch"

    if backend == "torch":
        return TorchStep(decoder or load_motion_decoder(checkpoint, device), device, fp16=fp16)
    if backend == "onnx":
        if not installed("onnxruntime"):
            raise RendererError(
                "backend_unavailable", "the ONNX back end needs onnxruntime, not installed"
            )
        path = released_onnx(directory) or exported_step(checkpoint, cache, decoder)
        return OnnxStep(path, device)
    if backend == "tensorrt":
        reason = tensorrt_unavailable_reason()
        if reason:
            raise RendererError("backend_unavailable", reason)
        return TensorRTStep(exported_step(checkpoint, cache, decoder), device, fp16=fp16)
    raise RendererError("backend_unavailable", f"unknown ditto back end {backend!r}")
