"""The idle loop of an avatar made from a video: the video's own frames, framed like its
portrait, played forward and back (ping-pong, as wav2lip plays its package) under the
animated face. Real micro-motion (breathing, the body settling, light changing) instead of
a synthetic sway.

The face's small drift across the clip is measured once per frame (phase correlation of the
face box against the portrait: translation only, a millisecond a frame), so the warp, the
mouth and the lids are drawn where the face is in each frame.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np

MAX_FRAMES = 90
"""At most 3 s of video at 30 fps (a 6 s ping-pong cycle)."""
MEMORY_BUDGET = 96 * 1024 * 1024
"""Bytes of frames kept in memory per avatar: fewer frames at large sizes."""
MAX_DRIFT = 0.25
"""Frames whose face moved further than this share of the face box are cut off the loop."""


@dataclass(frozen=True)
class IdleLoop:
    frames: np.ndarray
    """(N, H, W, 3) uint8, framed like the portrait."""
    offsets: np.ndarray
    """(N, 2) float32: where each frame's face is relative to the portrait's (pixels)."""

    def __len__(self) -> int:
        return len(self.frames)

    def index(self, frame_index: int) -> int:
        """Ping-pong: 0, 1, ..., N-1, N-2, ..., 1, 0, 1, ... (the turning frames once)."""
        n = len(self.frames)
        if n < 2:
            return 0
        k = frame_index % (2 * n - 2)
        return k if k < n else 2 * n - 2 - k

    def offset(self, frame_index: int) -> tuple[int, int]:
        dx, dy = self.offsets[self.index(frame_index)]
        return int(round(float(dx))), int(round(float(dy)))


def read_loop(
    video: bytes,
    matrix: np.ndarray,
    portrait: np.ndarray,
    face_box: tuple[int, int, int, int],
    width: int,
    height: int,
    source_size: tuple[int, int] | None = None,
) -> IdleLoop | None:
    """Decode the video's first frames, frame each with the portrait's `matrix` (2x3, source
    → output pixels), and measure the face's drift against the framed `portrait` inside
    `face_box` (x0, y0, x1, y1). None when fewer than two frames are usable.
    `source_size`: (width, height) of the picture `matrix` frames; a clip stored smaller
    (a package's idle.mp4 is scaled down) is scaled to it first."""
    import av

    limit = max(2, min(MAX_FRAMES, MEMORY_BUDGET // (width * height * 3)))
    x0, y0, x1, y1 = face_box
    reference = _grey(portrait[y0:y1, x0:x1])
    window = cv2.createHanningWindow((x1 - x0, y1 - y0), cv2.CV_64F)
    reach = MAX_DRIFT * min(x1 - x0, y1 - y0)
    flags = cv2.INTER_AREA if abs(float(matrix[0, 0])) < 1 else cv2.INTER_CUBIC
    frames: list[np.ndarray] = []
    offsets: list[tuple[float, float]] = []
    try:
        with av.open(io.BytesIO(video), mode="r") as container:
            for decoded in container.decode(video=0):
                rgb = decoded.to_ndarray(format="rgb24")
                framed = cv2.warpAffine(rgb, _scaled(matrix, rgb, source_size),
                                        (width, height), flags=flags,
                                        borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
                (dx, dy), _ = cv2.phaseCorrelate(reference, _grey(framed[y0:y1, x0:x1]), window)
                if np.hypot(dx, dy) > reach:
                    break  # the face left (a cut, a turn away): the loop ends here
                frames.append(framed)
                offsets.append((dx, dy))
                if len(frames) >= limit:
                    break
    except (av.error.FFmpegError, ValueError):
        return None
    if len(frames) < 2:
        return None
    return IdleLoop(np.stack(frames), np.array(offsets, dtype=np.float32))


def _grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float64)


def _scaled(matrix: np.ndarray, rgb: np.ndarray, source_size: tuple[int, int] | None) -> np.ndarray:
    """`matrix` for a frame of `rgb`'s size, where `matrix` frames one of `source_size`."""
    h, w = rgb.shape[:2]
    if source_size is None or source_size == (w, h):
        return matrix
    return matrix @ np.diag([source_size[0] / w, source_size[1] / h, 1.0])
