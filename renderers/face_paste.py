"""Blending a generated face crop back into its frame through a weight map over the face box:
the clipping, the cropping to what the weight touches and the alpha blend, which wav2lip's
and MuseTalk's paste-backs (their blend.py) share. Each brings its own weight map (and
wav2lip its colour match).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

BoxWeight = Callable[[int, int], np.ndarray]
"""(box width, box height) -> (height, width) float32 weights in 0..1 over the whole box."""
Recolour = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""(generated, original, weight) -> the generated pixels to blend in (same shape)."""


def blend_into_box(
    frame: np.ndarray,
    face: np.ndarray,
    box: np.ndarray,
    weight: BoxWeight,
    *,
    recolour: Recolour | None = None,
) -> None:
    """Blend `face` (S, S, 3 uint8 RGB, the generated crop), resized to `box` (x0, y0, x1,
    y1, float pixels), into `frame` (H, W, >= 3 uint8, in place) through `weight`. Pixels
    outside the box are never written; a box partly outside the frame is clipped."""
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    box_w, box_h = x1 - x0, y1 - y0
    if box_w < 2 or box_h < 2:
        return
    # The part of the box inside the frame, in frame coordinates.
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    inside = (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))  # in box coordinates
    alpha = weight(box_w, box_h)[inside]
    # Work only on the rows and columns the weight touches: most of the box keeps its pixels.
    rows = np.flatnonzero(alpha.max(axis=1) > 1e-3)
    cols = np.flatnonzero(alpha.max(axis=0) > 1e-3)
    if rows.size == 0 or cols.size == 0:
        return
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    sized = cv2.resize(face, (box_w, box_h), interpolation=cv2.INTER_LINEAR)[inside][r0:r1, c0:c1]
    target = frame[fy0 + r0 : fy0 + r1, fx0 + c0 : fx0 + c1, :3]
    alpha = alpha[r0:r1, c0:c1]
    if recolour is not None:
        sized = recolour(np.ascontiguousarray(sized), np.ascontiguousarray(target), alpha)
    a = alpha[..., None]
    blended = sized.astype(np.float32) * a + target.astype(np.float32) * (1.0 - a)
    target[:] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
