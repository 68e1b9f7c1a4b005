"""What the neural renderers' settings share: reading `AVATAR_<RENDERER>_*` variables with
errors that name the variable and what it accepts, and telling, without importing anything
heavy, which optional packages are installed and whether a GPU is likely there. Used by
wav2lip/settings.py and liveportrait/settings.py; health checks call both, so nothing here
imports torch."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

from .base import RendererError

BACKENDS = ("auto", "torch", "onnx", "tensorrt")


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def cuda_present() -> bool:
    """A cheap guess at `torch.cuda.is_available()` that imports nothing: torch installed and
    an NVIDIA driver present."""
    return installed("torch") and Path("/proc/driver/nvidia/version").exists()


def tensorrt_unavailable_reason() -> str | None:
    """Why the TensorRT back ends cannot run here (None when they can). Imports torch."""
    if not installed("tensorrt"):
        return "the TensorRT back end needs the 'tensorrt' package, which is not installed"
    if not installed("torch"):
        return "the TensorRT back end needs torch (for CUDA buffers), which is not installed"
    import torch

    if not torch.cuda.is_available():
        return "the TensorRT back end needs a CUDA GPU, and torch sees none"
    return None


class EnvReader:
    """Typed reads of `prefix + NAME` from `env`; a bad value raises
    RendererError('invalid_config') naming the variable and what it accepts."""

    def __init__(self, prefix: str, env: Mapping[str, str]) -> None:
        self.prefix = prefix
        self.env = env

    def raw(self, name: str) -> str:
        return self.env.get(self.prefix + name, "").strip()

    def invalid(self, name: str, value: str, accepted: str) -> RendererError:
        return RendererError(
            "invalid_config", f"{self.prefix}{name}={value!r} is not valid; use {accepted}"
        )

    def flag(self, name: str) -> bool | None:
        """1/true/yes/on or 0/false/no/off; None when unset."""
        value = self.raw(name)
        if not value:
            return None
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise self.invalid(name, value, "1 or 0")

    def number(self, name: str, low: float, high: float) -> float | None:
        """A number in [low, high]; None when unset."""
        value = self.raw(name)
        if not value:
            return None
        try:
            number = float(value)
        except ValueError:
            raise self.invalid(name, value, f"a number from {low:g} to {high:g}") from None
        if not low <= number <= high:
            raise self.invalid(name, value, f"a number from {low:g} to {high:g}")
        return number

    def path(self, name: str) -> Path | None:
        value = self.raw(name)
        return Path(value).expanduser() if value else None

    def backend(self, name: str = "BACKEND") -> str:
        """auto, torch, onnx or tensorrt (default auto)."""
        backend = self.raw(name).lower() or "auto"
        if backend not in BACKENDS:
            raise self.invalid(name, backend, "one of " + ", ".join(BACKENDS))
        return backend

    def device(self, name: str = "DEVICE") -> str:
        """auto, cpu, cuda or cuda:N (default auto)."""
        device = self.raw(name).lower() or "auto"
        if device not in ("auto", "cpu") and not (device == "cuda" or device.startswith("cuda:")):
            raise self.invalid(name, device, "auto, cpu, cuda or cuda:N")
        return device
