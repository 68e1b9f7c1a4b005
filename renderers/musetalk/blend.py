"""Paste-back, as MuseTalk's get_image_blending does it, with a feathered edge.

MuseTalk resizes the generated 256x256 face to the face box, pastes it into the crop box's
picture, and pastes that into the frame through the package's mask (the face parsing's lower
face, blurred at preparation). Outside the face box the pasted picture is the frame itself,
so only the face box can change: frame + mask * (face - frame) over the box. Here the mask is
also faded to nothing over the outermost `FEATHER` of the face box, so no step shows where
the blurred mask meets the box's edge (the chin side of MuseTalk's masks reaches it).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..face_paste import blend_into_box

FEATHER = 0.06
"""Share of the face box's side over which the mask fades out at the box's border."""


def edge_ramp(width: int, height: int, feather: float = FEATHER) -> np.ndarray:
    """(height, width) float32: 0 on the border, rising to 1 over `feather` of each side."""
    xs = np.minimum(np.arange(width), np.arange(width)[::-1]).astype(np.float32)
    ys = np.minimum(np.arange(height), np.arange(height)[::-1]).astype(np.float32)
    rx = np.clip(xs / max(1.0, feather * width), 0.0, 1.0)
    ry = np.clip(ys / max(1.0, feather * height), 0.0, 1.0)
    return np.minimum(ry[:, None], rx[None, :])


def paste_face(frame: np.ndarray, face: np.ndarray, box: np.ndarray, mask: np.ndarray) -> None:
    """Blend `face` (S, S, 3 uint8 RGB) into `frame` (H, W, >= 3 uint8, in place) over `box`
    (x0, y0, x1, y1 in frame pixels) through `mask` (the face box's part of the package mask,
    uint8, any size: resized to the box). Pixels outside the box are never written."""

    def weight(box_w: int, box_h: int) -> np.ndarray:
        sized = cv2.resize(mask, (box_w, box_h), interpolation=cv2.INTER_LINEAR)
        return sized.astype(np.float32) * (1.0 / 255.0) * edge_ramp(box_w, box_h)

    blend_into_box(frame, face, box, weight)
