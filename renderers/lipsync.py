"""What the lip-sync renderers (wav2lip, musetalk) share: a package's own video played
ping-pong while idle, a network re-drawing the face of its speaking frames, silent frames
skipped, and health reports read from the settings without loading any model
(lipsync_settings.py).

Each renderer keeps what is its own: its audio features, its networks, its paste-back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import ClassVar, Protocol, TypeVar

import numpy as np

from .base import RendererCapabilities, RendererError
from .configured import ConfiguredRenderer
from .lipsync_settings import LipSyncSettings

LOOKAHEAD_MARGIN_S = 0.01
"""Audio lookahead beyond a feature window's own need, against rounding at frame edges."""

SILENT_DB = -200.0
"""The level of no audio at all."""


def level_db(audio: np.ndarray) -> float:
    """RMS level of float audio in dBFS (a frame below the silence threshold is not inferred)."""
    if audio.size == 0:
        return SILENT_DB
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return 20.0 * np.log10(max(rms, 1e-10))


class PackageVideo(Protocol):
    """A loaded avatar package: its frames framed to the output size."""

    @property
    def frames(self) -> np.ndarray: ...

    def frame_for(self, index: int) -> int: ...


AvatarT = TypeVar("AvatarT", bound=PackageVideo)
ItemT = TypeVar("ItemT")


def lipsync_capabilities(
    *, sample_rate: int, window_lookahead_s: float, batch_size: int, backends: tuple[str, ...]
) -> RendererCapabilities:
    """A lip-sync renderer's capabilities: a 25 fps model that moves the mouth only (no
    emotion control), on CPU or CUDA, from an avatar package. `window_lookahead_s`: the audio
    its feature window reads past a frame (at 30 fps, the most it supports)."""
    return RendererCapabilities(
        sample_rate=sample_rate,
        native_fps=25.0,
        lookahead_s=window_lookahead_s + LOOKAHEAD_MARGIN_S,
        batch_size=batch_size,
        emotions=(),
        devices=("cpu", "cuda"),
        backends=backends,
        needs_source=True,
    )


class LipSyncRenderer(ConfiguredRenderer):
    """A renderer that plays an avatar package's own video and re-draws its face from
    speech. Subclasses set `settings_type` and `self.settings`, and do the drawing."""

    settings_type: ClassVar[type[LipSyncSettings]]
    """The renderer's settings class: read from the environment, or with nothing configured
    (what checkpoints() lists when a setting is bad)."""
    settings: LipSyncSettings

    # -- for subclasses ----------------------------------------------------------------------

    def _fit_capabilities(self, window_lookahead_s: float) -> None:
        """The class's capabilities with this video's lookahead (the feature window's, at
        its frame rate) and the configured batch size."""
        self.capabilities = replace(
            type(self).capabilities,
            lookahead_s=window_lookahead_s + LOOKAHEAD_MARGIN_S,
            batch_size=self.settings.resolved_batch_size(),
        )

    def _load_avatar(
        self,
        source: Path,
        *,
        is_package: Callable[[Path], bool],
        load_package: Callable[..., AvatarT],
        needs: str,
    ) -> AvatarT:
        """The package at `source` framed to the video; RendererError('invalid_package')
        with `needs` (what the renderer needs, said for a user) when it is not one."""
        source = Path(source)
        if not is_package(source):
            raise RendererError("invalid_package", f"{needs}; {source.name} is not one")
        return load_package(
            source, self.video.width, self.video.height, max_frames=self.settings.max_frames
        )

    def _idle_frame(self, avatar: PackageVideo, index: int) -> tuple[np.ndarray, int]:
        """Output frame `index` as the package shows it (H, W, 4 uint8 RGBA, opaque), and
        which of the package's frames that is (the face a speaking frame re-draws)."""
        shown = avatar.frame_for(index)
        frame = np.empty((self.video.height, self.video.width, 4), dtype=np.uint8)
        frame[..., :3] = avatar.frames[shown]
        frame[..., 3] = 255
        return frame, shown

    def _audible(self, audio: np.ndarray) -> bool:
        """False for audio below the silence threshold: its frame skips the network."""
        return level_db(audio) >= self.settings.silence_db

    def _batches(self, items: Sequence[ItemT]) -> Iterator[Sequence[ItemT]]:
        """`items` in runs of the batch size: the frames one network call takes."""
        size = max(1, self.capabilities.batch_size)
        for start in range(0, len(items), size):
            yield items[start : start + size]
