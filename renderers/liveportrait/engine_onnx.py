"""The ONNX Runtime back end, on the project's own export of the checkpoint set
(onnx_export.py, cached by the files' hash). Once the set is exported, nothing here imports
torch: an install with onnxruntime alone runs it. CUDA's provider when the device is a GPU,
else the CPU's; always float32."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..model_settings import installed
from .checkpoint import CheckpointFiles
from .engine import BackendUnavailableError, GraphEngine
from .onnx_files import GRAPHS, ExportedSet, exported_set


def exported_or_export(files: CheckpointFiles, cache: Path) -> ExportedSet:
    """The cached export of `files`, exporting it first if needed (which needs torch)."""
    found = exported_set(cache, files)
    if found is not None:
        return found
    if not installed("torch"):
        raise BackendUnavailableError(
            "the ONNX back end exports the checkpoints once with torch, which is not installed; "
            "install torch for the first run (or copy an exported cache folder)"
        )
    from .onnx_export import ensure_exported

    return ensure_exported(files, cache)


class OnnxEngine(GraphEngine):
    backend = "onnx"
    fp16 = False

    def __init__(self, exported: ExportedSet, *, device: str = "cpu", threads: int = 0) -> None:
        if not installed("onnxruntime"):
            raise BackendUnavailableError("the ONNX back end needs onnxruntime, not installed")
        import onnxruntime as ort

        providers: list[Any] = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailableError(
                    "ONNX Runtime on CUDA needs onnxruntime-gpu (CUDAExecutionProvider missing)"
                )
            index = int(device.partition(":")[2] or 0)
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads  # 0: one per core
        self.sessions: dict[str, Any] = {
            graph: ort.InferenceSession(
                str(exported.path(graph)), sess_options=options, providers=providers
            )
            for graph in exported.graphs
        }
        active = self.sessions["warp_decode"].get_providers()
        on_gpu = "CUDAExecutionProvider" in active
        self.device = (device if device != "cuda" else "cuda:0") if on_gpu else "cpu"
        self.exported = exported
        self.has_lip_retargeting = "lip" in self.sessions
        self.has_eye_retargeting = "eye" in self.sessions

    @classmethod
    def load(cls, files: CheckpointFiles, cache: Path, *, device: str = "cpu") -> OnnxEngine:
        return cls(exported_or_export(files, cache), device=device)

    def _run(self, graph: str, *arrays: np.ndarray) -> list[np.ndarray]:
        inputs, outputs = GRAPHS[graph]
        feeds = dict(zip(inputs, arrays, strict=True))
        return list(self.sessions[graph].run(list(outputs), feeds))

    def close(self) -> None:
        self.sessions.clear()
