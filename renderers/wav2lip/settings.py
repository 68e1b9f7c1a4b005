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

from ..base import RendererError
from ..cache import cache_dir
from .backends import BACKENDS, CPU_AUTO_BACKEND, installed

PREFIX = "AVATAR_WAV2LIP_"


@dataclass(frozen=True)
class Wav2LipSettings:
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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Wav2LipSettings:
        """Settings from `env` (default os.environ); RendererError('invalid_config') names the
        variable and what it accepts."""
        env = os.environ if env is None else env

        def raw(name: str) -> str:
            return env.get(PREFIX + name, "").strip()

        checkpoint = raw("CHECKPOINT")
        backend = raw("BACKEND").lower() or "auto"
        if backend not in BACKENDS:
            raise _invalid("BACKEND", backend, "one of " + ", ".join(BACKENDS))
        device = raw("DEVICE").lower() or "auto"
        if device not in ("auto", "cpu") and not (device == "cuda" or device.startswith("cuda:")):
            raise _invalid("DEVICE", device, "auto, cpu, cuda or cuda:N")
        cache = raw("CACHE")
        return cls(
            checkpoint=Path(checkpoint).expanduser() if checkpoint else None,
            backend=backend,
            device=device,
            fp16=_flag(raw("FP16"), "FP16") if raw("FP16") else None,
            batch_size=int(_number(raw("BATCH"), "BATCH", 1, 256)) if raw("BATCH") else None,
            color_match=_flag(raw("COLOR_MATCH"), "COLOR_MATCH") if raw("COLOR_MATCH") else True,
            feather=_number(raw("FEATHER"), "FEATHER", 0.0, 0.5) if raw("FEATHER") else 0.12,
            silence_db=(
                _number(raw("SILENCE_DB"), "SILENCE_DB", -120.0, 0.0)
                if raw("SILENCE_DB")
                else -50.0
            ),
            max_frames=(
                int(_number(raw("MAX_FRAMES"), "MAX_FRAMES", 1, 100_000))
                if raw("MAX_FRAMES")
                else 900
            ),
            cache_dir=Path(cache).expanduser() if cache else None,
        )

    # -- what "auto" means here, without importing torch ----------------------------------

    def resolved_device(self) -> str:
        """The device `auto` stands for: CUDA when torch is installed and sees a GPU."""
        if self.device != "auto":
            return self.device
        return "cuda" if _cuda_present() else "cpu"

    def resolved_backend(self) -> str:
        """What backends.create_generator makes of `auto`: TensorRT (when installed) else
        torch on a GPU; on CPU its CPU_AUTO_BACKEND when onnxruntime is installed, else torch."""
        if self.backend != "auto":
            return self.backend
        if self.resolved_device().startswith("cuda"):
            return "tensorrt" if _installed("tensorrt") else "torch"
        return CPU_AUTO_BACKEND if _installed("onnxruntime") else "torch"

    def resolved_fp16(self) -> bool:
        if self.fp16 is not None:
            return self.fp16
        return self.resolved_device().startswith("cuda")

    def resolved_batch_size(self) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return 16 if self.resolved_device().startswith("cuda") else 4

    def engine_cache(self) -> Path:
        return self.cache_dir or cache_dir() / "wav2lip"

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
        missing = [name for name in needed if not _installed(name)]
        if missing:
            return (
                f"the wav2lip '{backend}' back end needs {' and '.join(missing)}, which "
                f"{'is' if len(missing) == 1 else 'are'} not installed"
            )
        return None


def _installed(module: str) -> bool:
    return installed(module)


def _cuda_present() -> bool:
    """A cheap guess at `torch.cuda.is_available()` that imports nothing: torch installed and
    an NVIDIA driver present."""
    return _installed("torch") and Path("/proc/driver/nvidia/version").exists()


def _invalid(name: str, value: str, accepted: str) -> RendererError:
    return RendererError("invalid_config", f"{PREFIX}{name}={value!r} is not valid; use {accepted}")


def _flag(value: str, name: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise _invalid(name, value, "1 or 0")


def _number(value: str, name: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise _invalid(name, value, f"a number from {low:g} to {high:g}") from None
    if not low <= number <= high:
        raise _invalid(name, value, f"a number from {low:g} to {high:g}")
    return number
