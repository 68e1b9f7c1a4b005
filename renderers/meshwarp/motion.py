"""Life and feeling as control weights: idle motion (blinks, breathing, sway, glances) and
emotions with smooth transitions. Both are functions of the frame clock, so they run on
unbroken through speech and silence: nothing jumps when speech starts or stops."""

from __future__ import annotations

import math

import numpy as np

from ..base import Expression
from .rig import CONTROLS, INDEX

EMOTION_POSES: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"smile": 1.0, "squint": 0.35, "brow_raise": 0.15, "lips_part": 0.1},
    # A smiling portrait keeps some of its smile unless the corners are pulled well down.
    "sad": {"frown": 1.5, "brow_inner_up": 1.2, "squint": 0.15, "head_y": 1.5, "gaze_y": 0.5,
            "mouth_round": 0.15},
    "concerned": {"brow_inner_up": 1.0, "brow_lower": 0.5, "frown": 0.7},
    "surprised": {"brow_raise": 1.0, "eye_wide": 0.9, "jaw_open": 0.25, "lips_part": 0.3},
    "angry": {"brow_lower": 1.3, "frown": 1.1, "squint": 0.5, "mouth_wide": 0.2},
    "reassuring": {"smile": 0.6, "brow_inner_up": 0.45, "squint": 0.2, "head_roll": 2.0},
}  # fmt: skip
UNSMILE: dict[str, float] = {"sad": 1.0, "angry": 1.0, "concerned": 0.7}
"""Share of the portrait's own smile that each emotion takes away (see `pose`)."""
UNSMILE_PRESS = 0.8
"""lips_press added at a full unsmile of a broad smile (see `pose`)."""
TRANSITION_S = 0.3
"""An emotion change is 95 % done after this long."""


def pose(name: str, intensity: float, portrait_smile: float = 0.0) -> np.ndarray:
    """The control weights of emotion `name` at `intensity` (0..1). `portrait_smile`: how
    much the portrait smiles by itself, in units of the smile control (see
    `avatar.portrait_smile`); sad, angry and concerned undo that much smile first (corners
    down and in, cheeks down), so a smiling photo's smile does not show through them."""
    weights = np.zeros(len(CONTROLS), dtype=np.float32)
    k = float(np.clip(intensity, 0.0, 1.0))
    for control, value in EMOTION_POSES.get(name, {}).items():
        weights[INDEX[control]] = value * k
    undo = UNSMILE.get(name, 0.0) * k
    weights[INDEX["smile"]] -= undo * portrait_smile
    # ...and press the lips together, over the teeth a smile showed.
    weights[INDEX["lips_press"]] += UNSMILE_PRESS * undo * min(1.0, portrait_smile)
    return weights


class EmotionBlend:
    """Moves from the current pose toward the requested one with a ~300 ms ease."""

    def __init__(self, fps: float, portrait_smile: float = 0.0) -> None:
        # Three time constants make 95 %: exp(-3) ~ 0.05.
        self._alpha = 1.0 - math.exp(-(1.0 / fps) / (TRANSITION_S / 3.0))
        self._weights = np.zeros(len(CONTROLS), dtype=np.float32)
        self.portrait_smile = portrait_smile
        """The loaded portrait's own smile (see `pose`)."""

    def step(self, expression: Expression) -> np.ndarray:
        target = pose(expression.emotion, expression.intensity, self.portrait_smile)
        self._weights += (target - self._weights) * self._alpha
        return self._weights.copy()

    def snap(self, expression: Expression) -> None:
        """Jump to `expression`: the next step returns its full pose."""
        self._weights = pose(expression.emotion, expression.intensity, self.portrait_smile)


class IdleMotion:
    """Blinks at natural random intervals, breathing, a slow head sway and small glances."""

    def __init__(self, fps: float, seed: int = 7) -> None:
        self.fps = fps
        rng = np.random.default_rng(seed)
        self._phases = rng.uniform(0, 2 * math.pi, size=8)
        # Blink start times (s): 2-6 s apart, now and then a quick double blink.
        gaps = rng.uniform(2.0, 6.0, size=2000)
        starts = np.cumsum(gaps) - gaps[0] + 1.2
        doubles = starts[rng.random(starts.size) < 0.15] + 0.45
        self._blinks = np.sort(np.concatenate([starts, doubles]))
        # Glances: a new small gaze target every 1-3.5 s.
        self._glance_times = np.cumsum(rng.uniform(1.0, 3.5, size=4000))
        self._glance_targets = rng.normal(0.0, 0.35, size=(4000, 2)).clip(-0.8, 0.8)
        # Both schedules cover a couple of hours; longer sessions go round them again (the
        # first blink of a round comes 4.2 s after the last one of the previous round, and
        # the gaze of a round starts where the previous round's ended).
        self._blink_period = float(self._blinks[-1]) + 3.0
        self._glance_period = float(self._glance_times[-1])

    def weights(self, index: int) -> np.ndarray:
        t = index / self.fps
        w = np.zeros(len(CONTROLS), dtype=np.float32)
        blink = self._blink(t % self._blink_period)
        w[INDEX["blink_right"]] = w[INDEX["blink_left"]] = blink
        p = self._phases
        w[INDEX["head_y"]] = 0.9 * math.sin(2 * math.pi * t / 4.2 + p[0])  # breathing
        w[INDEX["head_x"]] = 1.4 * (
            math.sin(2 * math.pi * 0.071 * t + p[1]) + 0.5 * math.sin(2 * math.pi * 0.19 * t + p[2])
        )
        w[INDEX["head_roll"]] = 0.9 * (
            math.sin(2 * math.pi * 0.053 * t + p[3]) + 0.4 * math.sin(2 * math.pi * 0.23 * t + p[4])
        )
        gaze = self._gaze(t % self._glance_period)
        w[INDEX["gaze_x"]], w[INDEX["gaze_y"]] = gaze
        return w

    def _blink(self, t: float) -> float:
        """0 open .. 1 closed: 70 ms to close, 40 ms closed, 120 ms to open."""
        i = int(np.searchsorted(self._blinks, t, side="right")) - 1
        if i < 0:
            return 0.0
        dt = t - self._blinks[i]
        if dt < 0.07:
            return dt / 0.07
        if dt < 0.11:
            return 1.0
        if dt < 0.23:
            return 1.0 - (dt - 0.11) / 0.12
        return 0.0

    def _gaze(self, t: float) -> tuple[float, float]:
        i = int(np.searchsorted(self._glance_times, t, side="right"))
        target = self._glance_targets[i % len(self._glance_targets)]
        previous = self._glance_targets[(i - 1) % len(self._glance_targets)]
        since = t - (self._glance_times[i - 1] if i > 0 else 0.0)
        # A saccade takes ~50 ms: ease between the previous and the new target.
        k = min(1.0, since / 0.05)
        k = k * k * (3 - 2 * k)
        gaze = previous + (target - previous) * k
        return float(gaze[0]), float(gaze[1])


class SpeechMotion:
    """Head motion that follows the speech rhythm: a small nod and brow lift on each stressed
    syllable (the opening rising faster than its slow average), and a slow turn that changes
    side from one emphasis to the next. Back to nothing in silence, without a jump."""

    def __init__(self, fps: float, seed: int = 11) -> None:
        self._fast = 1.0 - math.exp(-1.0 / (fps * 0.06))
        self._slow = 1.0 - math.exp(-1.0 / (fps * 0.35))
        self._ease = 1.0 - math.exp(-1.0 / (fps * 0.45))
        self._nod_alpha = 1.0 - math.exp(-1.0 / (fps * 0.1))
        self._rng = np.random.default_rng(seed)
        self._level = 0.0
        self._average = 0.0
        self._turn_target = 0.0
        self._turn = 0.0
        self._nod = 0.0
        self._armed = True

    def step(self, openness: float) -> np.ndarray:
        self._level += (openness - self._level) * self._fast
        self._average += (openness - self._average) * self._slow
        emphasis = max(0.0, self._level - self._average)
        if emphasis > 0.12 and self._armed:
            # A new stressed syllable: the head turns a little the other way.
            side = -math.copysign(1.0, self._turn_target or 1.0)
            self._turn_target = side * float(self._rng.uniform(1.5, 3.5))
            self._armed = False
        elif emphasis < 0.04:
            self._armed = True
        if self._average < 0.03:
            self._turn_target = 0.0  # silence: let the turn settle back
        self._turn += (self._turn_target - self._turn) * self._ease
        self._nod += (min(3.0, 6.0 * emphasis) - self._nod) * self._nod_alpha
        w = np.zeros(len(CONTROLS), dtype=np.float32)
        w[INDEX["head_x"]] = self._turn
        w[INDEX["head_y"]] = self._nod
        w[INDEX["head_roll"]] = 0.4 * self._turn
        w[INDEX["brow_raise"]] = min(0.35, 1.2 * emphasis)
        return w
