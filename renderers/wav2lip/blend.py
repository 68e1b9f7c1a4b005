"""Paste-back: the generated face put back into the frame without a visible box.

Wav2lip generates the whole face crop, but only its lower half carries the new mouth; pasting
the crop whole shows its edges (a different blur, a colour step), the renderer's most common
complaint. Here only a soft-edged oval over the mouth and jaw is blended in: full weight in
the middle, fading to nothing well inside the box, so no pixel on or outside the box border
changes. Optionally the generated colours are matched to the frame's under the same mask
(mean and standard deviation per LAB channel), which removes the tint the network leaves.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..face_paste import blend_into_box

_MASK_SIDE = 128
_CENTRE = (0.5, 0.70)  # of the box: the mouth and jaw (x, y)
_RADII = (0.34, 0.24)  # of the box side (x, y), before feathering
_STD_RATIO_LIMITS = (0.5, 2.0)


def lower_face_mask(feather: float, side: int = _MASK_SIDE) -> np.ndarray:
    """(side, side) float32 in 0..1: an oval over the mouth and jaw whose edge fades over
    `feather` of the box side, and exactly 0 on the box's border rows and columns."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    u = (xx + 0.5) / side - _CENTRE[0]
    v = (yy + 0.5) / side - _CENTRE[1]
    # Distance outside the oval, in box sides (negative inside).
    radius = np.sqrt((u / _RADII[0]) ** 2 + (v / _RADII[1]) ** 2)
    outside = (radius - 1.0) * min(_RADII)
    if feather <= 0:
        mask = (outside <= 0).astype(np.float32)
    else:
        t = np.clip(0.5 - outside / feather, 0.0, 1.0)
        mask = t * t * (3 - 2 * t)  # smoothstep: no kink at either end of the fade
    # The border itself never changes: fade to 0 over the outermost 2 % of the box.
    edge = np.minimum.reduce([xx, yy, side - 1 - xx, side - 1 - yy]) / (0.02 * side)
    return (mask * np.clip(edge, 0.0, 1.0)).astype(np.float32)


def match_colours(generated: np.ndarray, original: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """`generated` (h, w, 3 uint8 RGB) with each LAB channel's mean and spread moved to those
    of `original` under `weight` (h, w, 0..1)."""
    total = float(weight.sum())
    if total < 1.0:
        return generated
    gen = cv2.cvtColor(generated, cv2.COLOR_RGB2LAB).astype(np.float32)
    ref = cv2.cvtColor(original, cv2.COLOR_RGB2LAB).astype(np.float32)
    w = weight[..., None] / total
    gen_mean, ref_mean = (gen * w).sum((0, 1)), (ref * w).sum((0, 1))
    gen_std = np.sqrt((((gen - gen_mean) ** 2) * w).sum((0, 1))) + 1e-3
    ref_std = np.sqrt((((ref - ref_mean) ** 2) * w).sum((0, 1))) + 1e-3
    ratio = np.clip(ref_std / gen_std, *_STD_RATIO_LIMITS)
    matched = (gen - gen_mean) * ratio + ref_mean
    return cv2.cvtColor(np.clip(matched, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def paste_face(
    frame: np.ndarray,
    face: np.ndarray,
    box: np.ndarray,
    mask: np.ndarray,
    *,
    color_match: bool,
) -> None:
    """Blend `face` (S, S, 3 uint8 RGB, the generated crop) into `frame` (H, W, >= 3 uint8, in
    place) over `box` (x0, y0, x1, y1, float pixels) through `mask` (a lower_face_mask).
    Pixels outside the box are never written; a box partly outside the frame is clipped."""

    def weight(box_w: int, box_h: int) -> np.ndarray:
        sized = cv2.resize(mask, (box_w, box_h), interpolation=cv2.INTER_LINEAR)
        sized[[0, -1], :] = sized[:, [0, -1]] = 0.0  # resizing smears; the border stays as it is
        return sized

    blend_into_box(frame, face, box, weight, recolour=match_colours if color_match else None)
