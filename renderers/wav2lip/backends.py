"""Inference back ends for the Wav2Lip generator: torch (CPU, CUDA with fp16), ONNX Runtime
(from a project-exported ONNX file) and TensorRT (when installed).

Channel order: every `FaceGenerator.predict` takes and returns RGB, the project's order. The
published weights were trained on OpenCV's BGR frames, so each back end reverses the channels on
the way in (both 3-channel halves of the 6-channel input) and on the way out; callers never see
BGR.

    predict(mels  float32 (B, 1, 80, 16),
            faces float32 (B, 6, S, S) in 0..1: channels 0-2 the masked face (lower half
                  zeroed), 3-5 the reference face, both RGB)
        -> uint8 (B, S, S, 3) RGB, rounded (the reference truncates; rounding is unbiased)

torch is imported lazily by the functions that need it, so importing this module is cheap.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..base import RendererError
from ..model_settings import BACKENDS, installed, tensorrt_unavailable_reason
from .mel import MEL_STEP_COLUMNS, N_MELS

if TYPE_CHECKING:
    from .model import Wav2Lip

BGR_FACES = [2, 1, 0, 5, 4, 3]
"""Index that turns the 6-channel RGB input into BGR (and back): each half reversed."""
ONNX_OPSET = 17
TRT_MAX_BATCH = 32


class FaceGenerator(Protocol):
    name: str
    """'torch', 'onnx' or 'tensorrt'."""
    device: str
    size: int
    """Face side in pixels (96 or 256)."""

    def predict(self, mels: np.ndarray, faces: np.ndarray) -> np.ndarray: ...


class BackendUnavailableError(RendererError):
    def __init__(self, message: str) -> None:
        super().__init__("backend_unavailable", message)


def check_inputs(mels: np.ndarray, faces: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """float32, C-contiguous copies checked against the shapes the network takes."""
    mels = np.ascontiguousarray(mels, dtype=np.float32)
    faces = np.ascontiguousarray(faces, dtype=np.float32)
    if mels.ndim != 4 or mels.shape[1:] != (1, N_MELS, MEL_STEP_COLUMNS):
        raise ValueError(f"mels must be (B, 1, 80, 16), got {mels.shape}")
    if faces.ndim != 4 or faces.shape[1:] != (6, size, size):
        raise ValueError(f"faces must be (B, 6, {size}, {size}), got {faces.shape}")
    if mels.shape[0] != faces.shape[0]:
        raise ValueError(f"batch sizes differ: {mels.shape[0]} mels, {faces.shape[0]} faces")
    return mels, faces


def to_rgb_uint8(bgr: np.ndarray) -> np.ndarray:
    """(B, 3, S, S) BGR 0..1 float -> (B, S, S, 3) RGB uint8."""
    rgb = bgr[:, ::-1].transpose(0, 2, 3, 1)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


# --- torch -----------------------------------------------------------------------------------


class TorchGenerator:
    name = "torch"

    def __init__(self, model: Wav2Lip, device: str = "cpu", fp16: bool = False) -> None:
        import torch

        if fp16 and not device.startswith("cuda"):
            raise ValueError("fp16 needs a CUDA device; on CPU use fp32")
        self.device = device
        self.size = model.size
        self.fp16 = fp16
        self._dtype = torch.float16 if fp16 else torch.float32
        self.model = model.to(device=device, dtype=self._dtype).eval()
        self._bgr = torch.tensor(BGR_FACES, device=device)

    def predict(self, mels: np.ndarray, faces: np.ndarray) -> np.ndarray:
        import torch

        mels, faces = check_inputs(mels, faces, self.size)
        with torch.inference_mode():
            mel_t = torch.from_numpy(mels).to(self.device, self._dtype, non_blocking=True)
            face_t = torch.from_numpy(faces).to(self.device, self._dtype, non_blocking=True)
            out = self.model(mel_t, face_t.index_select(1, self._bgr))
            # Convert on the device: 1 byte per value crosses the bus instead of 2-4.
            rgb = out.flip(1).permute(0, 2, 3, 1).float().mul_(255.0).round_().clamp_(0, 255)
            return rgb.to(torch.uint8).cpu().numpy()


# --- ONNX ------------------------------------------------------------------------------------


def export_onnx(model: Wav2Lip, path: Path, *, size: int, opset: int = ONNX_OPSET) -> Path:
    """Write `model` (moved to CPU float32) as ONNX with inputs `mel` (B,1,80,16) and `faces`
    (B,6,size,size) BGR, output `out` (B,3,size,size) BGR, batch dynamic. Written to a temporary
    name and renamed, so a concurrent reader never sees half a file."""
    import torch

    if model.size != size:
        raise ValueError(f"model is {model.size}px, asked to export {size}px")
    model = model.to("cpu", torch.float32).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    example = (torch.zeros(2, 1, N_MELS, MEL_STEP_COLUMNS), torch.zeros(2, 6, size, size))
    try:
        # The TorchScript exporter is deprecated in torch 2.9+ but needs no onnxscript; its
        # warning would only repeat that on every export.
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                example,
                str(partial),
                input_names=["mel", "faces"],
                output_names=["out"],
                dynamic_axes={"mel": {0: "batch"}, "faces": {0: "batch"}, "out": {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,  # the TorchScript exporter: needs no onnxscript
            )
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


class OnnxGenerator:
    name = "onnx"

    def __init__(
        self, onnx_path: Path, providers: list[str] | None = None, threads: int = 0
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads  # 0: one per core
        self.session = ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=providers or ["CPUExecutionProvider"]
        )
        active = self.session.get_providers()
        self.device = "cuda" if "CUDAExecutionProvider" in active else "cpu"
        self.providers = active
        self.size = int(self.session.get_inputs()[1].shape[2])

    def predict(self, mels: np.ndarray, faces: np.ndarray) -> np.ndarray:
        mels, faces = check_inputs(mels, faces, self.size)
        (out,) = self.session.run(["out"], {"mel": mels, "faces": faces[:, BGR_FACES]})
        return to_rgb_uint8(out)


# --- TensorRT --------------------------------------------------------------------------------


def build_tensorrt_engine(
    onnx_path: Path, engine_path: Path, *, size: int, fp16: bool, max_batch: int
) -> Path:
    """Build and serialise an engine for batches 1..max_batch (written atomically)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:  # explicit batch became the only mode in 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendUnavailableError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if fp16 and hasattr(trt.BuilderFlag, "FP16"):
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    opt = min(16, max_batch)
    profile.set_shape("mel", (1, 1, N_MELS, 16), (opt, 1, N_MELS, 16), (max_batch, 1, N_MELS, 16))
    faces = (6, size, size)
    profile.set_shape("faces", (1, *faces), (opt, *faces), (max_batch, *faces))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailableError(f"TensorRT failed to build an engine from {onnx_path}")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    partial = engine_path.with_name(f".{engine_path.name}.{os.getpid()}.partial")
    partial.write_bytes(bytes(serialized))
    os.replace(partial, engine_path)
    return engine_path


class TensorRTGenerator:
    """A serialised TensorRT engine run on torch's current CUDA stream with torch buffers."""

    name = "tensorrt"

    def __init__(self, engine_path: Path, *, size: int, max_batch: int, device: str = "cuda"):
        reason = tensorrt_unavailable_reason()
        if reason:
            raise BackendUnavailableError(reason)
        import tensorrt as trt
        import torch

        self.device = device
        self.size = size
        self.max_batch = max_batch
        self._torch_device = torch.device(device)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self._engine is None:
            raise BackendUnavailableError(f"TensorRT cannot load the engine {engine_path}")
        self._context = self._engine.create_execution_context()
        self._bgr = torch.tensor(BGR_FACES, device=self._torch_device)

    def predict(self, mels: np.ndarray, faces: np.ndarray) -> np.ndarray:
        import torch

        mels, faces = check_inputs(mels, faces, self.size)
        batch = mels.shape[0]
        if batch > self.max_batch:  # the engine's profile ends there: run it in slices
            parts = [
                self.predict(mels[i : i + self.max_batch], faces[i : i + self.max_batch])
                for i in range(0, batch, self.max_batch)
            ]
            return np.concatenate(parts)
        device = self._torch_device
        with torch.cuda.device(device), torch.inference_mode():
            mel_t = torch.from_numpy(mels).to(device)
            face_t = torch.from_numpy(faces).to(device).index_select(1, self._bgr).contiguous()
            out = torch.empty((batch, 3, self.size, self.size), device=device)
            context: Any = self._context
            context.set_input_shape("mel", tuple(mel_t.shape))
            context.set_input_shape("faces", tuple(face_t.shape))
            context.set_tensor_address("mel", mel_t.data_ptr())
            context.set_tensor_address("faces", face_t.data_ptr())
            context.set_tensor_address("out", out.data_ptr())
            if not context.execute_async_v3(torch.cuda.current_stream(device).cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            rgb = out.flip(1).permute(0, 2, 3, 1).mul_(255.0).round_().clamp_(0, 255)
            return rgb.to(torch.uint8).cpu().numpy()


# --- choosing one ----------------------------------------------------------------------------

CPU_AUTO_BACKEND = "onnx"
"""What `auto` picks on CPU: ONNX Runtime measured faster than torch (fp32, 96 px, 2 cores) at
batch 1 and 32 and about equal at 8; `python -m bench` has the current figures."""


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    if not installed("torch"):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def onnx_cache_path(cache_dir: Path, digest: str, size: int) -> Path:
    return Path(cache_dir) / f"wav2lip{size}-{digest[:16]}.onnx"


def cached_onnx(model: Wav2Lip, checkpoint_digest: str, cache_dir: Path) -> Path:
    """The ONNX export of a checkpoint's model, exported once per checkpoint content."""
    path = onnx_cache_path(cache_dir, checkpoint_digest, model.size)
    if not path.is_file():
        export_onnx(model, path, size=model.size)
    return path


def _check_available(backend: str, device: str) -> None:
    """Raise BackendUnavailableError before any loading when `backend` cannot run on `device`."""
    if not installed("torch"):  # every back end loads the checkpoint with torch
        raise BackendUnavailableError("the wav2lip back ends need torch, which is not installed")
    on_gpu = device.startswith("cuda")
    if on_gpu:
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailableError(f"device {device!r} asked for, but torch sees no GPU")
    if backend == "onnx":
        if not installed("onnxruntime"):
            raise BackendUnavailableError("the ONNX back end needs onnxruntime, not installed")
        import onnxruntime as ort

        if on_gpu and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailableError(
                "ONNX Runtime on CUDA needs onnxruntime-gpu (CUDAExecutionProvider missing)"
            )
    if backend == "tensorrt":
        reason = tensorrt_unavailable_reason()
        if reason:
            raise BackendUnavailableError(reason)


def create_generator(
    backend: str,
    checkpoint: Path,
    *,
    device: str = "auto",
    fp16: bool | None = None,
    cache_dir: Path,
    max_batch: int = TRT_MAX_BATCH,
) -> FaceGenerator:
    """A generator for `checkpoint` on `backend`.

    auto: on a GPU TensorRT when installed, else torch fp16; on CPU `CPU_AUTO_BACKEND`.
    fp16 None means on for CUDA. ONNX files and TensorRT engines are cached in `cache_dir`,
    keyed by the checkpoint's sha256 (and, for engines, TensorRT version, GPU, precision).
    """
    from .checkpoint import file_digest, load_checkpoint

    if backend not in BACKENDS:
        raise BackendUnavailableError(f"unknown wav2lip back end {backend!r}; use {BACKENDS}")
    device = resolve_device(device)
    on_gpu = device.startswith("cuda")
    if fp16 is None:
        fp16 = on_gpu
    if fp16 and not on_gpu:
        raise BackendUnavailableError("fp16 needs a CUDA device; on CPU use fp32")
    if backend == "auto":
        if on_gpu:
            backend = "tensorrt" if tensorrt_unavailable_reason() is None else "torch"
        else:
            backend = CPU_AUTO_BACKEND if installed("onnxruntime") else "torch"
    _check_available(backend, device)

    model = load_checkpoint(Path(checkpoint), device="cpu")
    if backend == "torch":
        return TorchGenerator(model, device=device, fp16=fp16)
    digest = file_digest(Path(checkpoint))
    if backend == "onnx":
        providers = ["CPUExecutionProvider"]
        if on_gpu:
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return OnnxGenerator(cached_onnx(model, digest, cache_dir), providers)

    # tensorrt
    import tensorrt as trt
    import torch

    gpu = "".join(c if c.isalnum() else "-" for c in torch.cuda.get_device_name(device))
    precision = "fp16" if fp16 else "fp32"
    engine_path = Path(cache_dir) / (
        f"wav2lip{model.size}-{digest[:16]}-trt{trt.__version__}-{gpu}-{precision}"
        f"-b{max_batch}.engine"
    )
    if not engine_path.is_file():
        onnx_path = cached_onnx(model, digest, cache_dir)
        build_tensorrt_engine(
            onnx_path, engine_path, size=model.size, fp16=fp16, max_batch=max_batch
        )
    return TensorRTGenerator(engine_path, size=model.size, max_batch=max_batch, device=device)


def measure_fps(generator: FaceGenerator, batch: int, seconds: float = 2.0) -> float:
    """Frames per second of `generator.predict` at `batch`, after one warm-up call."""
    rng = np.random.default_rng(0)
    mels = rng.uniform(-4, 4, (batch, 1, N_MELS, MEL_STEP_COLUMNS)).astype(np.float32)
    faces = rng.uniform(0, 1, (batch, 6, generator.size, generator.size)).astype(np.float32)
    generator.predict(mels, faces)
    frames, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or frames == 0:
        generator.predict(mels, faces)
        frames += batch
    return frames / (time.perf_counter() - start)
