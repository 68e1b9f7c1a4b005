"""LivePortrait's expression edits: small moves of chosen implicit keypoints.

LivePortrait's editing app changes a face by adding offsets to the expression deformation
(`delta`, 21 keypoints x (x, y, z)) before the keypoints are transformed; each slider moves a
documented set of keypoints by documented amounts per unit (section 2.4 of
docs/reference/ditto-liveportrait.md). These are those edits, over a batch of frames: every
function takes `delta` (B, 21, 3) and slider values (B,) and returns a new array.

Slider ranges in the app: smile -0.3..1.3, eyebrow -30..30, wink 0..39, gaze x +-30, gaze y
+-63, pout +-0.09, purse -20..15, grin 0..15, lip open -90..120.
"""

from __future__ import annotations

import numpy as np

X, Y, Z = 0, 1, 2
NUM_KEYPOINTS = 21

LIP_KEYPOINTS = (6, 12, 14, 17, 19, 20)
"""Keypoints LivePortrait copies to animate only the lips."""
EYE_KEYPOINTS = (11, 13, 15, 16, 18)
"""Keypoints LivePortrait copies to animate only the eyes."""


def _moved(delta: np.ndarray, value: np.ndarray, moves: list[tuple[int, int, float]]) -> np.ndarray:
    out = np.array(delta, dtype=np.float32, copy=True)
    v = np.asarray(value, dtype=np.float32).reshape(-1)
    for keypoint, axis, per_unit in moves:
        out[:, keypoint, axis] += v * per_unit
    return out


def smile(delta: np.ndarray, value: np.ndarray) -> np.ndarray:
    return _moved(
        delta,
        value,
        [
            (20, Y, -0.01),
            (14, Y, -0.02),
            (17, Y, 0.0065),
            (17, Z, 0.003),
            (13, Y, -0.00275),
            (16, Y, -0.00275),
            (3, Y, -0.0035),
            (7, Y, -0.0035),
        ],
    )


def eyebrow(delta: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Positive raises the brows; negative draws them together and down."""
    v = np.asarray(value, dtype=np.float32).reshape(-1)
    up = np.maximum(v, 0.0)
    down = np.minimum(v, 0.0)
    out = _moved(delta, up, [(1, Y, 0.001), (2, Y, -0.001)])
    return _moved(out, down, [(1, X, -0.001), (2, X, 0.001), (1, Y, 0.0003), (2, Y, -0.0003)])


def gaze(delta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Eyeball direction; looking down also lowers the lids a little, as upstream does."""
    vx = np.asarray(x, dtype=np.float32).reshape(-1)
    vy = np.asarray(y, dtype=np.float32).reshape(-1)
    right, left = np.maximum(vx, 0.0), np.minimum(vx, 0.0)
    out = _moved(delta, right, [(11, X, 0.0007), (15, X, 0.001)])
    out = _moved(out, left, [(11, X, 0.001), (15, X, 0.0007)])
    out = _moved(out, vy, [(11, Y, -0.001), (15, Y, -0.001)])
    return lid_drop(out, -vy / 2.0)


def lid_drop(delta: np.ndarray, value: np.ndarray) -> np.ndarray:
    """The lid term of upstream's gaze edit; also the blink when no eye retargeting exists."""
    return _moved(
        delta, value, [(11, Y, -0.001), (13, Y, 0.0003), (15, Y, -0.001), (16, Y, 0.0003)]
    )


def pout(delta: np.ndarray, value: np.ndarray) -> np.ndarray:
    return _moved(delta, value, [(19, X, 1.0)])


def purse(delta: np.ndarray, value: np.ndarray) -> np.ndarray:
    return _moved(
        delta, value, [(14, Y, 0.001), (3, Y, -0.0005), (7, Y, -0.0005), (17, Z, -0.0005)]
    )


def grin(delta: np.ndarray, value: np.ndarray) -> np.ndarray:
    return _moved(delta, value, [(20, Z, -0.001), (20, Y, -0.001), (14, Y, -0.001)])


def lip_open(delta: np.ndarray, value: np.ndarray) -> np.ndarray:
    return _moved(delta, value, [(19, Y, 0.001), (19, Z, 0.0001), (17, Y, -0.0001)])
