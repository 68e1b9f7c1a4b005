"""The settings every lip-sync renderer (wav2lip, musetalk) reads the same way, each under
its own `AVATAR_<NAME>_` prefix, and what `auto` means for them. Imports nothing heavy, so
health checks can read settings without torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Protocol, Self, TypedDict

from .model_settings import EnvReader, cuda_present


class LipSyncSettings(Protocol):
    """The settings a lip-sync renderer reads (its own dataclass, `AVATAR_<NAME>_*`)."""

    def __init__(self) -> None: ...

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        """Settings from `env` (default os.environ); RendererError('invalid_config')."""
        ...

    @property
    def silence_db(self) -> float: ...

    @property
    def max_frames(self) -> int: ...

    def resolved_batch_size(self) -> int: ...

    def checkpoints(self) -> dict[str, object]: ...

    def unavailable_reason(self) -> str | None: ...


class SharedSettings(TypedDict):
    """The settings every lip-sync renderer reads the same way (its own prefix)."""

    device: str
    fp16: bool | None
    batch_size: int | None
    silence_db: float
    max_frames: int


def read_shared_settings(read: EnvReader) -> SharedSettings:
    """`DEVICE`, `FP16`, `BATCH`, `SILENCE_DB` and `MAX_FRAMES` from `read` (unset: auto,
    auto, auto, -50 dBFS, 900 frames); RendererError('invalid_config') for a bad value."""
    batch = read.number("BATCH", 1, 256)
    silence_db = read.number("SILENCE_DB", -120.0, 0.0)
    max_frames = read.number("MAX_FRAMES", 1, 100_000)
    return SharedSettings(
        device=read.device(),
        fp16=read.flag("FP16"),
        batch_size=int(batch) if batch is not None else None,
        silence_db=-50.0 if silence_db is None else silence_db,
        max_frames=900 if max_frames is None else int(max_frames),
    )


class DeviceChoice:
    """What `auto` means for a lip-sync settings dataclass's `device`, `fp16` and
    `batch_size` fields (a mixin: the dataclass declares them), without importing torch."""

    device: str
    fp16: bool | None
    batch_size: int | None
    cpu_batch_size: ClassVar[int]
    """Frames per network call on CPU when none is set (16 on CUDA)."""

    def resolved_device(self) -> str:
        """The device `auto` stands for: CUDA when torch is installed and sees a GPU."""
        if self.device != "auto":
            return self.device
        return "cuda" if cuda_present() else "cpu"

    def resolved_fp16(self) -> bool:
        if self.fp16 is not None:
            return self.fp16
        return self.resolved_device().startswith("cuda")

    def resolved_batch_size(self) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return 16 if self.resolved_device().startswith("cuda") else self.cpu_batch_size
