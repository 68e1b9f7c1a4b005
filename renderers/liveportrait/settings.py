"""The liveportrait networks' settings, from the environment. Reading them imports nothing
heavy, so health checks can call `from_env`, `unavailable_reason` and `describe`.

| variable | default | meaning |
| --- | --- | --- |
| `AVATAR_LIVEPORTRAIT_DIR` | none | the checkpoint folder (below) |
| `AVATAR_LIVEPORTRAIT_BACKEND` | `auto` | `auto`, `torch`, `onnx` or `tensorrt` |
| `AVATAR_LIVEPORTRAIT_DEVICE` | `auto` | `auto`, `cpu` or `cuda` (`cuda:1`, ...) |
| `AVATAR_LIVEPORTRAIT_FP16` | on with CUDA | half precision on a GPU (torch autocast, TensorRT) |
| `AVATAR_LIVEPORTRAIT_BATCH` | 1 on CPU, 4 on CUDA | frames per warp/decode call |
| `AVATAR_LIVEPORTRAIT_CACHE` | `$AVATAR_CACHE/liveportrait` | exported ONNX, TensorRT engines |

The checkpoint folder is LivePortrait's `pretrained_weights/liveportrait/` or Ditto's
`ditto_pytorch/models/`, or the folder above either (checkpoint.py lists the files).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..base import RendererError
from ..cache import cache_dir
from ..model_settings import EnvReader, cuda_present, installed

PREFIX = "AVATAR_LIVEPORTRAIT_"
CPU_AUTO_BACKEND = "torch"
"""What `auto` picks on a CPU: torch ran warp_decode faster than ONNX Runtime on the 2-core
development machine (published sizes, batch 1: 7.2 s against 17.4 s a frame under load, 6.5 s
against 8.5 s interleaved; bench/liveportrait_modules.py). ONNX Runtime is still picked when
torch is not installed (a torch-free install running an earlier export)."""


@dataclass(frozen=True)
class LivePortraitSettings:
    directory: Path | None = None
    backend: str = "auto"
    device: str = "auto"
    fp16: bool | None = None
    """None: on when the device is CUDA."""
    batch_size: int | None = None
    """None: 1 on CPU, 4 on CUDA."""
    cache_dir: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LivePortraitSettings:
        """Settings from `env` (default os.environ); RendererError('invalid_config') names the
        variable and what it accepts."""
        read = EnvReader(PREFIX, os.environ if env is None else env)
        batch = read.number("BATCH", 1, 64)
        return cls(
            directory=read.path("DIR"),
            backend=read.backend(),
            device=read.device(),
            fp16=read.flag("FP16"),
            batch_size=int(batch) if batch is not None else None,
            cache_dir=read.path("CACHE"),
        )

    # -- what "auto" means, without importing torch -------------------------------------------

    def resolved_device(self) -> str:
        """The device `auto` stands for: cuda:0 when torch is installed and a GPU driver is."""
        if self.device == "auto":
            return "cuda:0" if cuda_present() else "cpu"
        return "cuda:0" if self.device == "cuda" else self.device

    def resolved_backend(self) -> str:
        """What engine.load_engine makes of `auto`: TensorRT when installed on a GPU, else torch
        on a GPU; on a CPU CPU_AUTO_BACKEND, or the other one when only it is installed."""
        if self.backend != "auto":
            return self.backend
        if self.resolved_device().startswith("cuda"):
            return "tensorrt" if installed("tensorrt") else "torch"
        package = {"torch": "torch", "onnx": "onnxruntime"}
        for backend in (CPU_AUTO_BACKEND, *(b for b in package if b != CPU_AUTO_BACKEND)):
            if installed(package[backend]):
                return backend
        return "torch"

    def resolved_fp16(self) -> bool:
        """Half precision: as asked, else on with CUDA. ONNX Runtime always runs fp32."""
        if self.fp16 is not None:
            return self.fp16 and self.resolved_device().startswith("cuda")
        return self.resolved_device().startswith("cuda")

    def resolved_batch_size(self) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return 4 if self.resolved_device().startswith("cuda") else 1

    def engine_cache(self) -> Path:
        return self.cache_dir or cache_dir() / "liveportrait"

    def layout(self) -> str | None:
        """'liveportrait' or 'ditto' when the directory holds a complete set, else None."""
        from .checkpoint import CheckpointError, locate

        if self.directory is None:
            return None
        try:
            return locate(self.directory).layout
        except CheckpointError:
            return None

    def unavailable_reason(self) -> str | None:
        """Why no engine can be built from these settings, checking files and installed
        packages only (nothing is loaded)."""
        from .checkpoint import CheckpointError, locate

        if self.directory is None:
            return (
                "no LivePortrait checkpoints configured: set AVATAR_LIVEPORTRAIT_DIR to "
                "LivePortrait's pretrained_weights/liveportrait (or Ditto's ditto_pytorch/models)"
            )
        try:
            locate(self.directory)
        except CheckpointError as error:
            return f"AVATAR_LIVEPORTRAIT_DIR={str(self.directory)!r}: {error.message}"
        backend = self.resolved_backend()
        # torch loads the .pth files; ONNX Runtime needs it only to export them once.
        needed = {"torch": ["torch"], "onnx": ["onnxruntime"]}.get(backend, ["torch", "tensorrt"])
        missing = [name for name in needed if not installed(name)]
        if backend == "onnx" and not installed("torch") and not self._exported():
            missing.append("torch (to export the ONNX files once)")
        if missing:
            return (
                f"the liveportrait '{backend}' back end needs {' and '.join(missing)}, which "
                f"{'is' if len(missing) == 1 else 'are'} not installed"
            )
        if self.device.startswith("cuda") and not cuda_present():
            return f"AVATAR_LIVEPORTRAIT_DEVICE={self.device} but no NVIDIA GPU driver is present"
        return None

    def _exported(self) -> bool:
        from .checkpoint import locate
        from .onnx_files import exported_set

        return exported_set(self.engine_cache(), locate(self.directory_or_raise())) is not None

    def directory_or_raise(self) -> Path:
        if self.directory is None:
            raise RendererError(
                "checkpoint_not_found",
                "no LivePortrait checkpoints configured: set AVATAR_LIVEPORTRAIT_DIR",
            )
        return self.directory

    def checkpoints(self) -> dict[str, object]:
        """The checkpoint files, found or missing (Renderer.checkpoints)."""
        from .checkpoint import inventory

        return {
            "setting": PREFIX + "DIR",
            "path": str(self.directory) if self.directory else None,
            **inventory(self.directory),
        }

    def describe(self) -> dict[str, object]:
        """Facts for health checks: what would run, where, from which files."""
        return {
            "backend": self.resolved_backend(),
            "device": self.resolved_device(),
            "fp16": self.resolved_fp16() and self.resolved_backend() != "onnx",
            "batch": self.resolved_batch_size(),
            "dir": str(self.directory) if self.directory else None,
            "layout": self.layout(),
        }
