"""An avatar's source, whatever form it comes in, as one RGB portrait.

A source is an image, a short video (its first frame with one usable face), or an extracted
avatar package directory (a meshwarp package's `portrait.png`, else a wav2lip package's first
frame); None means the bundled public-domain portrait. Every renderer that animates a single
portrait (meshwarp, liveportrait) reads its source through here, so they accept the same
things and fail with the same codes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..base import RendererError
from ..bundled import DEFAULT_PORTRAIT
from ..errors import short_reason
from .portrait import analyse_portrait, load_image

VIDEO_SUFFIXES = {".mp4", ".mov", ".webm", ".mkv", ".avi"}
PACKAGE_PORTRAIT = "portrait.png"
"""The portrait in an avatar package made for meshwarp (meshwarp/prepare.py writes it)."""
WAV2LIP_FIRST_FRAME = "full_imgs/00000000.png"


@dataclass(frozen=True)
class SourceFile:
    """The file a source resolved to, and its bytes (hashed by renderers for their caches)."""

    path: Path
    data: bytes

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_SUFFIXES

    def portrait(self) -> np.ndarray:
        """HxWx3 uint8 RGB: the image, or the first frame of the video with one usable face."""
        return first_face_frame(self.path, self.data) if self.is_video else load_image(self.data)


def read_source(source: Path | None) -> SourceFile:
    """Resolve `source` (see the module doc) and read it; RendererError 'source_unreadable'
    or 'invalid_package'."""
    path = source or DEFAULT_PORTRAIT
    if path.is_dir():
        path = package_portrait(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise RendererError("source_unreadable", f"cannot read {path}: {error}") from None
    return SourceFile(path, data)


def package_portrait(package: Path) -> Path:
    """The portrait of an extracted avatar package: its `portrait.png` (a meshwarp package),
    else the first frame of a wav2lip package (`full_imgs/00000000.png`)."""
    for name in (PACKAGE_PORTRAIT, WAV2LIP_FIRST_FRAME):
        if (package / name).is_file():
            return package / name
    raise RendererError(
        "invalid_package",
        f"{package} is not an avatar package a portrait renderer can use: "
        f"it has no {PACKAGE_PORTRAIT}",
    )


def first_face_frame(path: Path, data: bytes, max_frames: int = 60) -> np.ndarray:
    """The first frame of a video that holds exactly one usable face."""
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            last_error: RendererError | None = None
            for i, frame in enumerate(container.decode(video=0)):
                if i >= max_frames:
                    break
                rgb = frame.to_ndarray(format="rgb24")
                try:
                    analyse_portrait(rgb)
                    return rgb
                except RendererError as error:
                    last_error = error
    except (av.error.FFmpegError, ValueError) as error:
        reason = short_reason(error, "not a video this can decode")
        raise RendererError("corrupt_video", f"cannot decode video {path.name}: {reason}") from None
    if last_error is not None:
        raise last_error
    raise RendererError("corrupt_video", f"no frames in video {path.name}")
