"""The TensorRT back end: engines built from the project's ONNX export (fp16 when asked),
cached beside it per TensorRT version, GPU and precision, run on torch's CUDA stream with
torch buffers. Only where `import tensorrt` works and torch sees a GPU; elsewhere it raises
'backend_unavailable'.

The warp's 5-D GridSample is the known risk: TensorRT before 10 has no 3-D grid sampling
(FasterLivePortrait and Ditto ship a plugin for it). When the installed TensorRT cannot parse
the graph, the parser's own words are reported and `auto` falls back to torch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..model_settings import tensorrt_unavailable_reason
from .checkpoint import CheckpointFiles
from .engine import BackendUnavailableError, GraphEngine
from .onnx_files import GRAPHS, ExportedSet

MAX_BATCH = 8
OPT_BATCH = 4


def build_engine(onnx_path: Path, engine_path: Path, *, fp16: bool) -> Path:
    """Serialise an engine for batches 1..MAX_BATCH of one exported graph (written
    atomically)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:  # explicit batch became the only mode in 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendUnavailableError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    if any(-1 in tuple(tensor.shape) for tensor in inputs):  # a batch axis to profile
        profile = builder.create_optimization_profile()
        for tensor in inputs:
            rest = tuple(tensor.shape)[1:]
            profile.set_shape(tensor.name, (1, *rest), (OPT_BATCH, *rest), (MAX_BATCH, *rest))
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailableError(f"TensorRT failed to build an engine from {onnx_path.name}")
    partial = engine_path.with_name(f".{engine_path.name}.{os.getpid()}.partial")
    partial.write_bytes(bytes(serialized))
    os.replace(partial, engine_path)
    return engine_path


class TensorRTGraph:
    """One deserialised engine and its execution context, fed and read by tensor name."""

    def __init__(
        self, runtime: Any, path: Path, inputs: tuple[str, ...], outputs: tuple[str, ...]
    ) -> None:
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendUnavailableError(f"TensorRT cannot load the engine {path.name}")
        self.context = self.engine.create_execution_context()
        self.inputs, self.outputs = inputs, outputs

    def run(self, device: Any, arrays: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        import torch

        batch = arrays[0].shape[0]
        if batch > MAX_BATCH:  # the profile ends there: run it in slices
            parts = [
                self.run(device, tuple(a[i : i + MAX_BATCH] for a in arrays))
                for i in range(0, batch, MAX_BATCH)
            ]
            return [np.concatenate(chunks) for chunks in zip(*parts, strict=True)]
        with torch.cuda.device(device), torch.inference_mode():
            feeds = [torch.from_numpy(a).to(device) for a in arrays]
            for name, tensor in zip(self.inputs, feeds, strict=True):
                self.context.set_input_shape(name, tuple(tensor.shape))
                self.context.set_tensor_address(name, tensor.data_ptr())
            results = []
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                out = torch.empty(shape, dtype=torch.float32, device=device)
                self.context.set_tensor_address(name, out.data_ptr())
                results.append(out)
            if not self.context.execute_async_v3(torch.cuda.current_stream(device).cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            return [r.cpu().numpy() for r in results]


class TensorRTEngine(GraphEngine):
    backend = "tensorrt"

    def __init__(self, exported: ExportedSet, *, device: str = "cuda:0", fp16: bool = True):
        reason = tensorrt_unavailable_reason()
        if reason:
            raise BackendUnavailableError(reason)
        import tensorrt as trt
        import torch

        self.device = "cuda:0" if device in ("cuda", "auto") else device
        self.fp16 = fp16
        torch_device = torch.device(self.device)
        gpu = "".join(c if c.isalnum() else "-" for c in torch.cuda.get_device_name(torch_device))
        folder = exported.folder / f"trt{trt.__version__}-{gpu}-{'fp16' if fp16 else 'fp32'}"
        folder.mkdir(parents=True, exist_ok=True)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._graphs: dict[str, TensorRTGraph] = {}
        for name in exported.graphs:
            path = folder / f"{name}-b{MAX_BATCH}.engine"
            if not path.is_file():
                build_engine(exported.path(name), path, fp16=fp16)
            self._graphs[name] = TensorRTGraph(runtime, path, *GRAPHS[name])
        self._runtime = runtime
        self._device = torch_device
        self.has_lip_retargeting = "lip" in self._graphs
        self.has_eye_retargeting = "eye" in self._graphs

    @classmethod
    def load(
        cls, files: CheckpointFiles, cache: Path, *, device: str, fp16: bool
    ) -> TensorRTEngine:
        reason = tensorrt_unavailable_reason()
        if reason:
            raise BackendUnavailableError(reason)
        from .onnx_export import ensure_exported

        return cls(ensure_exported(files, cache), device=device, fp16=fp16)

    def _run(self, graph: str, *arrays: np.ndarray) -> list[np.ndarray]:
        return self._graphs[graph].run(self._device, arrays)

    def close(self) -> None:
        self._graphs.clear()
