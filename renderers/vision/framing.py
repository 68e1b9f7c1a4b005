"""Where a portrait's face sits in an avatar's video frame: the same place for every avatar
and every portrait renderer, whatever the portrait's own size and framing."""

from __future__ import annotations

import cv2
import numpy as np

FACE_HEIGHT = 0.40  # of the frame height, forehead (mesh point 10) to chin (152)
FACE_CENTRE_Y = 0.46  # of the frame height
FACE_WIDTH_MAX = 0.70
"""The face mesh's width, at most, of the frame width: a frame much taller than wide (64x412)
shows the face smaller rather than cut at the sides (where no warp mesh fits). Square and
landscape frames never reach it (a face is about 0.35 of a square frame wide)."""
_FOREHEAD, _CHIN = 10, 152


def frame_portrait(
    rgb: np.ndarray, points: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Scale and shift the portrait (and its 478 mesh points) into a `width`x`height` frame
    so the face is FACE_HEIGHT of the frame tall (less in a frame too narrow for that:
    FACE_WIDTH_MAX), centred across, at FACE_CENTRE_Y down."""
    face_h = points[_CHIN, 1] - points[_FOREHEAD, 1]
    face_w = float(np.ptp(points[:, 0]))
    scale = min(
        FACE_HEIGHT * height / max(face_h, 1.0), FACE_WIDTH_MAX * width / max(face_w, 1.0)
    )
    centre = points[:, :2].mean(axis=0)
    matrix = np.array(
        [
            [scale, 0.0, width / 2 - scale * centre[0]],
            [0.0, scale, FACE_CENTRE_Y * height - scale * centre[1]],
        ]
    )
    framed = cv2.warpAffine(
        rgb, matrix, (width, height), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REPLICATE,
    )  # fmt: skip
    moved = points.copy()
    moved[:, :2] = points[:, :2] * scale + matrix[:, 2]
    moved[:, 2] = points[:, 2] * scale
    return framed, moved.astype(np.float32)
