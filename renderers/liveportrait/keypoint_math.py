"""The keypoint arithmetic that goes with the motion extractor's output, in numpy (float32 in,
float32 out, batch first), as LivePortrait's camera.py and wrapper define it:

    R = (Rz(roll) . Ry(yaw) . Rx(pitch))^T        degrees in
    x = s . (x_c . R + exp) + (tx, ty, 0)         keypoints are row vectors, so x_c . R

Only tx and ty move the keypoints: LivePortrait drops tz (depth does not change the picture's
framing, scale does)."""

from __future__ import annotations

import numpy as np

POSE_BIN_DEGREES = 3.0
POSE_OFFSET_DEGREES = 97.5


def bins_to_degrees(logits: np.ndarray) -> np.ndarray:
    """(B, 66) pose logits -> (B,) degrees: the softmax's expected bin x 3 - 97.5 (the same as
    networks.motion.bins_to_degrees, for callers that hold raw logits)."""
    logits = np.asarray(logits, dtype=np.float64)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    expected = weights @ np.arange(logits.shape[-1], dtype=np.float64)
    return (expected * POSE_BIN_DEGREES - POSE_OFFSET_DEGREES).astype(np.float32)


def rotation_matrix(pitch: np.ndarray, yaw: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """(B,) degrees each -> (B, 3, 3): (Rz . Ry . Rx)^T, pitch about x, yaw about y, roll
    about z. Shapes (B, 1) are accepted too (LivePortrait keeps them so)."""
    x, y, z = (np.radians(np.asarray(a, dtype=np.float64).reshape(-1)) for a in (pitch, yaw, roll))
    if not x.shape == y.shape == z.shape:
        raise ValueError(f"pitch, yaw and roll differ in length: {x.size}, {y.size}, {z.size}")
    ones, zeros = np.ones_like(x), np.zeros_like(x)

    def stack(rows: list[list[np.ndarray]]) -> np.ndarray:
        return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)

    rot_x = stack(
        [[ones, zeros, zeros], [zeros, np.cos(x), -np.sin(x)], [zeros, np.sin(x), np.cos(x)]]
    )
    rot_y = stack(
        [[np.cos(y), zeros, np.sin(y)], [zeros, ones, zeros], [-np.sin(y), zeros, np.cos(y)]]
    )
    rot_z = stack(
        [[np.cos(z), -np.sin(z), zeros], [np.sin(z), np.cos(z), zeros], [zeros, zeros, ones]]
    )
    return np.swapaxes(rot_z @ rot_y @ rot_x, -1, -2).astype(np.float32)


def transform_keypoints(
    kp: np.ndarray, rotation: np.ndarray, exp: np.ndarray, scale: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """Canonical keypoints (B, K, 3) posed: s . (kp . R + exp) + (tx, ty, 0) -> (B, K, 3).

    rotation (B, 3, 3) from rotation_matrix, exp (B, K, 3) (or (B, 3K)), scale (B, 1) or (B,),
    t (B, 3)."""
    kp = np.asarray(kp, dtype=np.float32)
    batch, count = kp.shape[0], kp.shape[1]
    exp = np.asarray(exp, dtype=np.float32).reshape(batch, count, 3)
    scale = np.asarray(scale, dtype=np.float32).reshape(batch, 1, 1)
    t = np.asarray(t, dtype=np.float32).reshape(batch, 3)
    posed = scale * (kp @ np.asarray(rotation, dtype=np.float32) + exp)
    shift = np.concatenate([t[:, :2], np.zeros((batch, 1), np.float32)], axis=1)
    return (posed + shift[:, None, :]).astype(np.float32)
