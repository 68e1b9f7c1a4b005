"""Ditto's motion stitching (MotionStitch): generated motion -> the driving motion of a source
portrait, in keypoint space, and from there the driving keypoints.

Per generated frame d, with the source s and the reference frame d0 (the first generated
frame unless given), as Ditto does it:

1. relative motion: every field becomes s + (d - d0) -- pose too, on the raw 66-bin logits,
   before any conversion to degrees; fields outside `use_d_keys` stay at the source
   (an image source drives exp, pitch, yaw, roll and t; scale stays the source's);
2. expression mix: the lip keypoints (LIP_KEYPOINTS) and, with `drive_eye`, the eye keypoints
   (EYE_KEYPOINTS) take the result of 1; every other exp keypoint is the source's own;
3. `vad_alpha` < 1 blends exp back toward the source's;
4. controls: pose offsets in degrees (`delta_pitch`, ...), then `delta_exp`;
5. gaze fix (with `drive_eye`): the eyeballs follow the head a little, Δyaw x 0.26 and
   Δpitch x 0.28 against the source's pose, on exp's flat indices 33/45 (x) and 34/46 (y);
6. LivePortrait's transform (keypoint_math) of the source's canonical keypoints.

Ditto then runs the stitching MLP on (x_s, x_d); that is the engine's `stitch` and is left to
the caller. Not carried over: the scripted blink schedule (`delta_eye_arr`), `fade_alpha`,
per-key weights for `use_d_keys` and the scale-ratio rescaling for a second source.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...liveportrait.expression import EYE_KEYPOINTS, LIP_KEYPOINTS
from ...liveportrait.keypoint_math import bins_to_degrees
from .motion import FRAME_FIELDS, NUM_KEYPOINTS, Motion, MotionFrames, SourceMotion

IMAGE_D_KEYS = ("exp", "pitch", "yaw", "roll", "t")
"""What an image source takes from the generated motion (Ditto's default for images)."""
VIDEO_D_KEYS = ("exp",)
"""... and a video source."""
MOTION_KEYS = FRAME_FIELDS

GAZE_YAW_RATIO = 0.26
GAZE_PITCH_RATIO = 0.28
GAZE_X_INDICES = (33, 45)
"""Flat exp indices: keypoint 11 x and keypoint 15 x."""
GAZE_Y_INDICES = (34, 46)
"""Flat exp indices: keypoint 11 y and keypoint 15 y."""


@dataclass(frozen=True)
class Controls:
    """Ditto's per-frame ctrl_info (the subset carried over)."""

    delta_pitch: float = 0.0
    delta_yaw: float = 0.0
    delta_roll: float = 0.0
    """Degrees added after the bins are read as degrees."""
    delta_exp: np.ndarray | None = None
    """(63,) or (21, 3) offset added to exp."""
    vad_alpha: float = 1.0
    """< 1 blends exp toward the source's (quiet frames)."""


def exp_mix_mask(drive_eye: bool = True) -> np.ndarray:
    """(21, 3): 1 where exp comes from the generated motion, 0 where from the source."""
    mask = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32)
    mask[list(LIP_KEYPOINTS)] = 1.0
    if drive_eye:
        mask[list(EYE_KEYPOINTS)] = 1.0
    return mask


def gaze_fix(exp: np.ndarray, delta_yaw: np.ndarray, delta_pitch: np.ndarray) -> np.ndarray:
    """exp (N, 21, 3) with the eyeballs moved for a head turned by delta_yaw / delta_pitch
    degrees from the source's pose (Ditto's _fix_gaze / _eye_delta)."""
    out = np.array(exp, dtype=np.float32, copy=True).reshape(-1, NUM_KEYPOINTS * 3)
    dx = np.asarray(delta_yaw, np.float32).reshape(-1) * GAZE_YAW_RATIO
    dy = np.asarray(delta_pitch, np.float32).reshape(-1) * GAZE_PITCH_RATIO
    right = dx > 0
    first, second = GAZE_X_INDICES
    out[:, first] += dx * np.where(right, 0.0007, 0.001)
    out[:, second] += dx * np.where(right, 0.001, 0.0007)
    for index in GAZE_Y_INDICES:
        out[:, index] += dy * -0.001
    return out.reshape(-1, NUM_KEYPOINTS, 3)


class MotionStitcher:
    """Generated motion -> driving motion and keypoints for one source (Ditto's MotionStitch,
    relative mode). `d0` (265,) is the relative reference; when None the first frame given to
    `__call__` becomes it (Ditto's online pipeline passes the first window's first frame)."""

    def __init__(
        self,
        source: SourceMotion,
        *,
        use_d_keys: tuple[str, ...] = IMAGE_D_KEYS,
        drive_eye: bool = True,
        relative: bool = True,
        d0: np.ndarray | None = None,
    ) -> None:
        unknown = set(use_d_keys) - set(MOTION_KEYS)
        if unknown:
            raise ValueError(f"unknown use_d_keys: {sorted(unknown)}")
        self.source = source
        self.use_d_keys = tuple(use_d_keys)
        self.drive_eye = drive_eye
        self.relative = relative
        self.d0 = None if d0 is None else Motion.unpack(d0)
        self._mask = exp_mix_mask(drive_eye)
        src_pitch, src_yaw, _ = source.motion.degrees()
        self._source_pitch = float(src_pitch[0])
        self._source_yaw = float(src_yaw[0])
        self._x_s = source.keypoints()

    @property
    def source_keypoints(self) -> np.ndarray:
        """(1, 21, 3) x_s: the source's own posed keypoints (the stitching MLP's other input)."""
        return self._x_s

    def set_d0(self, d0: np.ndarray) -> None:
        self.d0 = Motion.unpack(d0)

    def motion(self, generated: np.ndarray, controls: Controls | None = None) -> MotionFrames:
        """Generated motion (N, 265) -> the driving motion (N frames, keypoint space)."""
        d = Motion.unpack(generated)
        n = len(d)
        s = self.source.motion
        if self.relative and self.d0 is None:
            self.d0 = Motion.unpack(d.pack()[0])
        fields: dict[str, np.ndarray] = {}
        for key in MOTION_KEYS:
            src = np.asarray(getattr(s, key), np.float32)
            if key not in self.use_d_keys:
                fields[key] = np.repeat(src, n, axis=0)
                continue
            value = np.asarray(getattr(d, key), np.float32)
            if self.relative:
                assert self.d0 is not None
                value = src + (value - np.asarray(getattr(self.d0, key), np.float32))
            fields[key] = value
        src_exp = np.asarray(s.exp, np.float32)
        exp = fields["exp"] * self._mask + src_exp * (1.0 - self._mask)
        c = controls or Controls()
        if c.vad_alpha < 1.0:
            exp = exp * c.vad_alpha + src_exp * (1.0 - c.vad_alpha)
        pitch = bins_to_degrees(fields["pitch"]) + np.float32(c.delta_pitch)
        yaw = bins_to_degrees(fields["yaw"]) + np.float32(c.delta_yaw)
        roll = bins_to_degrees(fields["roll"]) + np.float32(c.delta_roll)
        if c.delta_exp is not None:
            exp = exp + np.asarray(c.delta_exp, np.float32).reshape(1, NUM_KEYPOINTS, 3)
        if self.drive_eye:
            exp = gaze_fix(exp, yaw - self._source_yaw, pitch - self._source_pitch)
        return MotionFrames(
            scale=fields["scale"].reshape(n),
            pitch=pitch.astype(np.float32),
            yaw=yaw.astype(np.float32),
            roll=roll.astype(np.float32),
            t=fields["t"].reshape(n, 3),
            exp=exp.astype(np.float32),
        )

    def keypoints(self, frames: MotionFrames) -> np.ndarray:
        """Driving keypoints (N, 21, 3) of driving motion `frames` (from `motion`, or
        resampled), before the stitching MLP."""
        return frames.keypoints(self.source.kp)

    def __call__(self, generated: np.ndarray, controls: Controls | None = None) -> np.ndarray:
        """Generated motion (N, 265) -> driving keypoints (N, 21, 3)."""
        return self.keypoints(self.motion(generated, controls))
