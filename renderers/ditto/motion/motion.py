"""Ditto's 265-dim motion vector and its two structured forms.

The LMDM generates, per 25 fps frame, LivePortrait's motion-extractor output minus the
canonical keypoints, flattened (Ditto's `_cvt_LP_motion_info`, 'dic2arr' with `kp` ignored):

    [0]        scale - 1
    [1:67]     pitch, 66 bin logits
    [67:133]   yaw,   66 bin logits
    [133:199]  roll,  66 bin logits
    [199:202]  t (tx, ty, tz)
    [202:265]  exp, 21 keypoints x 3

`Motion` is that vector unpacked (pose still as logits: Ditto's relative motion and its
conditioning work on logits). `MotionFrames` is the keypoint-space form (pose in degrees,
read from the logits exactly as LivePortrait reads them: keypoint_math.bins_to_degrees),
which is what gets interpolated and turned into keypoints. `SourceMotion` is the portrait's
own motion, packed from the LivePortrait motion extractor's output (engine.MotionInfo).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...liveportrait.keypoint_math import (
    POSE_BIN_DEGREES,
    POSE_OFFSET_DEGREES,
    bins_to_degrees,
    rotation_matrix,
    transform_keypoints,
)

if TYPE_CHECKING:
    from ...liveportrait.engine import MotionInfo

MOTION_DIM = 265
POSE_BINS = 66
NUM_KEYPOINTS = 21
EXP_DIM = NUM_KEYPOINTS * 3

SCALE = slice(0, 1)
PITCH = slice(1, 67)
YAW = slice(67, 133)
ROLL = slice(133, 199)
T = slice(199, 202)
EXP = slice(202, 265)
POSE_AND_T_DIMS = 202
"""scale, pose and t: the dims Ditto smooths (exp, 202..264, is left alone)."""


def _rows(array: np.ndarray, width: int, what: str) -> np.ndarray:
    out = np.asarray(array, dtype=np.float32)
    if out.ndim == 1:
        out = out[None]
    out = out.reshape(out.shape[0], -1)
    if out.shape[1] != width:
        raise ValueError(f"{what}: expected {width} values per frame, got {out.shape[1]}")
    return out


FRAME_FIELDS = ("scale", "pitch", "yaw", "roll", "t", "exp")
"""MotionFrames' arrays, each with the frames on its first axis."""


@dataclass(frozen=True)
class MotionFrames:
    """N frames of motion in keypoint space: what LivePortrait's transform takes."""

    scale: np.ndarray
    """(N,) the scale itself (not scale - 1)."""
    pitch: np.ndarray
    yaw: np.ndarray
    roll: np.ndarray
    """(N,) degrees each."""
    t: np.ndarray
    """(N, 3); only tx, ty move the keypoints."""
    exp: np.ndarray
    """(N, 21, 3) expression deformation."""

    def __len__(self) -> int:
        return int(self.scale.shape[0])

    def take(self, index: int | slice | np.ndarray) -> MotionFrames:
        """The frames at `index` (an int keeps a batch of one)."""
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1 if int(index) != -1 else None)
        return MotionFrames(
            scale=self.scale[index],
            pitch=self.pitch[index],
            yaw=self.yaw[index],
            roll=self.roll[index],
            t=self.t[index],
            exp=self.exp[index],
        )

    @staticmethod
    def concat(parts: list[MotionFrames]) -> MotionFrames:
        if not parts:
            raise ValueError("nothing to concatenate")
        return MotionFrames(
            **{
                name: np.concatenate([getattr(p, name) for p in parts], axis=0)
                for name in FRAME_FIELDS
            }
        )

    def keypoints(self, kp: np.ndarray) -> np.ndarray:
        """Driving keypoints (N, 21, 3) for canonical keypoints `kp` ((21, 3), or (N, 21, 3)),
        through LivePortrait's transform: s . (kp . R + exp) + (tx, ty, 0)."""
        n = len(self)
        kp = np.asarray(kp, dtype=np.float32).reshape(-1, NUM_KEYPOINTS, 3)
        if kp.shape[0] == 1 and n != 1:
            kp = np.repeat(kp, n, axis=0)
        rotation = rotation_matrix(self.pitch, self.yaw, self.roll)
        return transform_keypoints(kp, rotation, self.exp, self.scale, self.t)


@dataclass(frozen=True)
class Motion:
    """N frames of Ditto motion, the 265-dim vector unpacked; pose as 66-bin logits."""

    scale: np.ndarray
    """(N,) the scale itself; the vector stores scale - 1."""
    pitch: np.ndarray
    yaw: np.ndarray
    roll: np.ndarray
    """(N, 66) bin logits each."""
    t: np.ndarray
    """(N, 3)."""
    exp: np.ndarray
    """(N, 21, 3)."""

    def __len__(self) -> int:
        return int(self.scale.shape[0])

    @classmethod
    def unpack(cls, vectors: np.ndarray) -> Motion:
        """(265,) or (N, 265) -> Motion of N frames."""
        v = _rows(vectors, MOTION_DIM, "motion vector")
        return cls(
            scale=v[:, 0] + 1.0,
            pitch=v[:, PITCH].copy(),
            yaw=v[:, YAW].copy(),
            roll=v[:, ROLL].copy(),
            t=v[:, T].copy(),
            exp=v[:, EXP].reshape(-1, NUM_KEYPOINTS, 3).copy(),
        )

    def pack(self) -> np.ndarray:
        """(N, 265) float32, scale stored as scale - 1."""
        n = len(self)
        return np.concatenate(
            [
                (np.asarray(self.scale, np.float32).reshape(n, 1) - 1.0),
                _rows(self.pitch, POSE_BINS, "pitch"),
                _rows(self.yaw, POSE_BINS, "yaw"),
                _rows(self.roll, POSE_BINS, "roll"),
                _rows(self.t, 3, "t"),
                _rows(self.exp, EXP_DIM, "exp"),
            ],
            axis=1,
        ).astype(np.float32)

    def degrees(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pitch, yaw, roll), (N,) degrees each: LivePortrait's reading of the logits."""
        return bins_to_degrees(self.pitch), bins_to_degrees(self.yaw), bins_to_degrees(self.roll)

    def frames(self) -> MotionFrames:
        """The keypoint-space form (pose converted to degrees)."""
        pitch, yaw, roll = self.degrees()
        return MotionFrames(
            scale=np.asarray(self.scale, np.float32).reshape(-1),
            pitch=pitch,
            yaw=yaw,
            roll=roll,
            t=np.asarray(self.t, np.float32).reshape(-1, 3),
            exp=np.asarray(self.exp, np.float32).reshape(-1, NUM_KEYPOINTS, 3),
        )


def degrees_to_logits(degrees: np.ndarray, floor: float = 1e-8) -> np.ndarray:
    """(N,) degrees -> (N, 66) logits whose softmax expectation reads back as those degrees
    (the weight split linearly between the two nearest bins). A stand-in for an engine that
    keeps no raw logits: it is exact under bins_to_degrees but much sharper than a real
    extractor's distribution, so the LMDM's first cond_frame sees unfamiliar pose logits."""
    deg = np.asarray(degrees, dtype=np.float64).reshape(-1)
    position = np.clip((deg + POSE_OFFSET_DEGREES) / POSE_BIN_DEGREES, 0.0, POSE_BINS - 1.0)
    low = np.minimum(np.floor(position).astype(np.int64), POSE_BINS - 2)
    frac = position - low
    weights = np.full((deg.size, POSE_BINS), floor, dtype=np.float64)
    rows = np.arange(deg.size)
    weights[rows, low] += 1.0 - frac
    weights[rows, low + 1] += frac
    return np.log(weights).astype(np.float32)


@dataclass(frozen=True)
class SourceMotion:
    """The portrait's own motion (one frame) and canonical keypoints: Ditto's x_s_info."""

    motion: Motion
    """One frame, pose as logits."""
    kp: np.ndarray
    """(21, 3) canonical keypoints."""

    @property
    def vector(self) -> np.ndarray:
        """(265,): the first window's cond_frame (`s_kp_cond`)."""
        return self.motion.pack()[0]

    @property
    def sc(self) -> np.ndarray:
        """(63,): the canonical keypoints flattened, the condition's identity part."""
        return np.asarray(self.kp, np.float32).reshape(EXP_DIM)

    def keypoints(self) -> np.ndarray:
        """(1, 21, 3) the source's own posed keypoints (x_s)."""
        return self.motion.frames().keypoints(self.kp)


def source_from_info(info: MotionInfo, index: int = 0) -> SourceMotion:
    """SourceMotion from the LivePortrait motion extractor's reading (engine.MotionInfo), frame
    `index` of its batch. Uses the raw pose logits when the engine kept them (`pose_logits`);
    otherwise stands in degrees_to_logits for them (see there)."""
    logits = getattr(info, "pose_logits", None)
    if logits is not None:
        pose = np.asarray(logits, np.float32)[index]
        pitch, yaw, roll = pose[0:1], pose[1:2], pose[2:3]
    else:
        pitch = degrees_to_logits(np.asarray(info.pitch).reshape(-1)[index : index + 1])
        yaw = degrees_to_logits(np.asarray(info.yaw).reshape(-1)[index : index + 1])
        roll = degrees_to_logits(np.asarray(info.roll).reshape(-1)[index : index + 1])
    motion = Motion(
        scale=np.asarray(info.scale, np.float32).reshape(-1)[index : index + 1],
        pitch=pitch,
        yaw=yaw,
        roll=roll,
        t=np.asarray(info.t, np.float32).reshape(-1, 3)[index : index + 1],
        exp=np.asarray(info.exp, np.float32).reshape(-1, NUM_KEYPOINTS, 3)[index : index + 1],
    )
    kp = np.asarray(info.kp, np.float32).reshape(-1, NUM_KEYPOINTS, 3)[index]
    return SourceMotion(motion=motion, kp=kp)
