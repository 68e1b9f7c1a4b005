"""What LivePortrait's keypoints should do on each frame: speech, emotion and idle life.

The face is driven with the same vocabulary as meshwarp's (renderers/meshwarp/rig.py's
controls), from the same sources, so the two renderers speak, feel and idle alike:

* speech: `MouthTrack` reads each frame's audio (formants, loudness) a little *ahead* of the
  frame (LOOKAHEAD_S) because lips move before the sound they shape comes out; without it the
  mouth looks late even when the pictures are exactly in sync with their audio;
* emotion: meshwarp's `EMOTION_POSES`, scaled by intensity and eased over ~300 ms
  (`EmotionBlend`);
* idle life: `IdleMotion`'s blinks, breathing, sway and glances, on the frame clock.

`plan` turns those control weights into LivePortrait's terms: expression-edit slider values
(expression.py), head-pose offsets in degrees, and target openness ratios for the lip and eye
retargeting networks. The gains are in CONTROL_GAINS; docs/liveportrait-renderer.md has the
table and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..base import Expression, FrameRequest
from ..meshwarp.motion import EmotionBlend, IdleMotion
from ..meshwarp.mouth import MouthTrack
from ..meshwarp.rig import INDEX
from . import expression as edit

LOOKAHEAD_S = 0.04
"""How far ahead of its frame the mouth reads the audio (lips lead the sound)."""
MAX_LIP_RATIO = 0.8
"""The lip-open ratio the retargeting network was trained up to (the app's slider)."""

CONTROL_GAINS = {
    "smile": 0.9,  # smile slider per unit of rig smile
    "frown_smile": -0.35,  # frown pulls the corners down: a negative smile ...
    "frown_purse": 4.0,  # ... with the lips pressed
    "brow_raise": 22.0,  # eyebrow slider
    "brow_inner_up": -8.0,  # LivePortrait's negative eyebrow draws the brows together
    "brow_lower": -18.0,
    "mouth_wide": 6.0,  # grin slider
    "mouth_round_pout": 0.04,
    "mouth_round_purse": 6.0,
    "gaze_x": 18.0,  # gaze sliders; the rig's +y looks down, LivePortrait's +y up
    "gaze_y": -20.0,
    "head_x": 1.2,  # degrees of yaw per rig unit (1 % of the face's size)
    "head_y": -1.0,  # degrees of pitch: the rig's +y nods down
    "head_roll": 1.0,  # degrees
    "lips_part": 0.5,  # lip-open ratio per unit
    "jaw_open": 0.25,
    "eye_wide": 0.45,  # eye ratio x (1 + gain * eye_wide)
    "squint": -0.35,
}


@dataclass(frozen=True)
class FacePlan:
    """One frame's face, in LivePortrait's terms (arrays of shape (B,) for a batch)."""

    smile: np.ndarray
    eyebrow: np.ndarray
    grin: np.ndarray
    pout: np.ndarray
    purse: np.ndarray
    gaze_x: np.ndarray
    gaze_y: np.ndarray
    pitch: np.ndarray
    """Degrees added to the source's pose."""
    yaw: np.ndarray
    roll: np.ndarray
    lip_ratio: np.ndarray
    """Target lip-open ratio (0 closed .. MAX_LIP_RATIO)."""
    eye_scale: np.ndarray
    """Target eye openness as a share of the source's (0 closed, 1 as in the portrait)."""

    def edited(self, delta: np.ndarray) -> np.ndarray:
        """The source's expression deformation (B, 21, 3) with this plan's edits."""
        out = edit.smile(delta, self.smile)
        out = edit.eyebrow(out, self.eyebrow)
        out = edit.grin(out, self.grin)
        out = edit.pout(out, self.pout)
        out = edit.purse(out, self.purse)
        return edit.gaze(out, self.gaze_x, self.gaze_y)


def plan(weights: np.ndarray) -> FacePlan:
    """Rig control weights (B, len(CONTROLS)) -> LivePortrait's terms."""
    w = np.atleast_2d(np.asarray(weights, dtype=np.float32))
    g = CONTROL_GAINS

    def c(name: str) -> np.ndarray:
        return w[:, INDEX[name]]

    blink = np.clip(np.maximum(c("blink_left"), c("blink_right")), 0.0, 1.0)
    eye_scale = (1.0 - blink) * (1.0 + g["eye_wide"] * np.clip(c("eye_wide"), 0.0, None))
    eye_scale = eye_scale * np.clip(1.0 + g["squint"] * c("squint"), 0.2, 1.0)
    lips = g["lips_part"] * c("lips_part") + g["jaw_open"] * c("jaw_open")
    rounding = np.clip(c("mouth_round"), 0.0, None)
    return FacePlan(
        smile=g["smile"] * c("smile") + g["frown_smile"] * c("frown"),
        eyebrow=g["brow_raise"] * c("brow_raise")
        + g["brow_inner_up"] * c("brow_inner_up")
        + g["brow_lower"] * c("brow_lower"),
        grin=g["mouth_wide"] * np.clip(c("mouth_wide"), 0.0, None),
        pout=g["mouth_round_pout"] * rounding,
        purse=g["mouth_round_purse"] * rounding + g["frown_purse"] * c("frown"),
        gaze_x=g["gaze_x"] * c("gaze_x"),
        gaze_y=g["gaze_y"] * c("gaze_y"),
        pitch=g["head_y"] * c("head_y"),
        yaw=g["head_x"] * c("head_x"),
        roll=g["head_roll"] * c("head_roll"),
        lip_ratio=np.clip(lips, 0.0, MAX_LIP_RATIO),
        eye_scale=np.clip(eye_scale, 0.0, 1.6),
    )


class Driver:
    """FrameRequests in frame order -> rig control weights, one row per frame."""

    def __init__(self, fps: float, sample_rate: int) -> None:
        self.lookahead = int(round(LOOKAHEAD_S * sample_rate))
        self._mouth = MouthTrack(fps=fps, sample_rate=sample_rate)
        self._emotion = EmotionBlend(fps)
        self._idle = IdleMotion(fps)

    def weights(self, requests: Sequence[FrameRequest]) -> np.ndarray:
        rows = []
        for request in requests:
            shape = self._mouth.step(self._ahead(request))
            w = self._idle.weights(request.index) + self._emotion.step(request.expression)
            w[INDEX["jaw_open"]] += 0.95 * shape.jaw
            w[INDEX["lips_part"]] += 0.9 * shape.openness
            w[INDEX["mouth_wide"]] += 0.7 * max(shape.width, 0.0)
            w[INDEX["mouth_round"]] += 0.85 * shape.rounding + 0.3 * max(-shape.width, 0.0)
            rows.append(w)
        return np.stack(rows)

    def _ahead(self, request: FrameRequest) -> FrameRequest:
        """The request with its own window moved LOOKAHEAD_S later, as far as its audio
        reaches (the runtime delivers `lookahead_s` of audio past the window)."""
        if request.audio is None:
            return request
        room = len(request.audio) - (request.window_offset + request.window_length)
        shift = max(0, min(self.lookahead, room))
        return replace(request, window_offset=request.window_offset + shift)

    def snap(self, expression: Expression) -> None:
        self._emotion.snap(expression)

    def reset(self) -> None:
        self._mouth.reset()
