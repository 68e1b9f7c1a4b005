"""The wav2lip renderer's settings, from the environment (like every other renderer setting,
`AVATAR_*`). Reading them imports nothing heavy, so health checks can call `from_env`.

| variable | default | meaning |
| --- | --- | --- |
| `AVATAR_WAV2LIP_CHECKPOINT` | none | `wav2lip.pth`, `wav2lip_gan.pth` or a wav2lip256 checkpoint |
| `AVATAR_WAV2LIP_BACKEND` | `auto` | `auto`, `torch`, `onnx` or `tensorrt` |
| `AVATAR_WAV2LIP_DEVICE` | `auto` | `auto`, `cpu` or `cuda` (`cuda:1`, ...) |
| `AVATAR_WAV2LIP_FP16` | on with CUDA | half precision on the GPU |
| `AVATAR_WAV2LIP_BATCH` | 4 on CPU, 16 on CUDA | frames per inference call |
| `AVATAR_WAV2LIP_COLOR_MATCH` | `1` | match the mouth's colours to the frame (mean/std in LAB) |
| `AVATAR_WAV2LIP_FEATHER` | `0.12` | softness of the mouth mask's edge (share of the box) |
| `AVATAR_WAV2LIP_SILENCE_DB` | `-50` | a speech frame quieter than this (dBFS) skips inference |
| `AVATAR_WAV2LIP_MAX_FRAMES` | `900` | avatar frames kept in memory (the idle loop plays them) |
| `AVATAR_WAV2LIP_CACHE` | `$AVATAR_CACHE/wav2lip` | exported ONNX files, TensorRT engines |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..cache import cache_dir
from ..lipsync_settings import DeviceChoice, read_shared_settings
from ..model_settings import EnvReader, installed
from .backends import CPU_AUTO_BACKEND

PREFIX = "AVATAR_WAV2LIP_"


@dataclass(frozen=True)
class Wav2LipSettings(DeviceChoice):
    checkpoint: Path | None = None
    backend: str = "auto"
    device: str = "auto"
    fp16: bool | None = None
    """None: on when the device is CUDA."""
    batch_size: int | None = None
    """None: 4 on CPU, 16 on CUDA."""
    color_match: bool = True
    feather: float = 0.12
    silence_db: float = -50.0
    max_frames: int = 900
    cache_dir: Path | None = None

    cpu_batch_size: ClassVar[int] = 4

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Wav2LipSettings:
        """Settings from `env` (default os.environ); RendererError('invalid_config') names the
        variable and what it accepts."""
        read = EnvReader(PREFIX, os.environ if env is None else env)
        shared = read_shared_settings(read)
        feather = read.number("FEATHER", 0.0, 0.5)
        color_match = read.flag("COLOR_MATCH")
        return cls(
            **shared,
            checkpoint=read.path("CHECKPOINT"),
            backend=read.backend(),
            color_match=True if color_match is None else color_match,
            feather=0.12 if feather is None else feather,
            cache_dir=read.path("CACHE"),
        )

    # -- what "auto" means here, without importing torch ----------------------------------

    def resolved_backend(self) -> str:
        """What backends.create_generator makes of `auto`: TensorRT (when installed) else
        torch on a GPU; on CPU its CPU_AUTO_BACKEND when onnxruntime is installed, else torch."""
        if self.backend != "auto":
            return self.backend
        if self.resolved_device().startswith("cuda"):
            return "tensorrt" if installed("tensorrt") else "torch"
        return CPU_AUTO_BACKEND if installed("onnxruntime") else "torch"

    def engine_cache(self) -> Path:
        return self.cache_dir or cache_dir() / "wav2lip"

    def checkpoints(self) -> dict[str, object]:
        """The checkpoint file, found or missing (Renderer.checkpoints); no file is listed
        while none is configured."""
        found = self.checkpoint is not None and self.checkpoint.is_file()
        return {
            "setting": PREFIX + "CHECKPOINT",
            "path": str(self.checkpoint) if self.checkpoint else None,
            "complete": found,
            "files": [{"name": self.checkpoint.name, "found": found}] if self.checkpoint else [],
        }

    def unavailable_reason(self) -> str | None:
        """Why no generator can be built from these settings, checking files and installed
        packages only."""
        if self.checkpoint is None:
            return (
                "no wav2lip checkpoint configured: set AVATAR_WAV2LIP_CHECKPOINT to wav2lip.pth, "
                "wav2lip_gan.pth or a wav2lip256 checkpoint"
            )
        if not self.checkpoint.is_file():
            return f"AVATAR_WAV2LIP_CHECKPOINT={str(self.checkpoint)!r} does not exist"
        backend = self.resolved_backend()
        # Every back end loads the checkpoint with torch (ONNX and TensorRT export from it).
        needed = {"torch": ["torch"], "onnx": ["torch", "onnxruntime"]}.get(
            backend, ["torch", "tensorrt"]
        )
        missing = [name for name in needed if not installed(name)]
        if missing:
            return (
                f"the wav2lip '{backend}' back end needs {' and '.join(missing)}, which "
                f"{'is' if len(missing) == 1 else 'are'} not installed"
            )
        return None
