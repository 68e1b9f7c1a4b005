"""Ditto's `emo` as our renderers' emotions.

Ditto conditions its motion on eight emotions, by index: 0 Angry, 1 Disgust, 2 Fear, 3 Happy,
4 Neutral, 5 Sad, 6 Surprise, 7 Contempt. Its `emo` is one index, several indices mixed in equal
parts, eight weights, or one of those per frame. Ours are the runtime's named emotions with an
intensity (avatar_runtime.state.EMOTIONS), of which each renderer shows some
(`capabilities.emotions`; none: no emotion control at all).

Each of Ditto's emotions stands for one of ours at some strength (`DITTO_TO_OURS`): the five we
share at full strength, and Fear, Disgust and Contempt as the nearest we have (concerned, and
angry at 60 % and 40 %). A mix becomes the one emotion of ours that gets the largest share,
at that share as its intensity: Happy alone is happy at 1.0; Happy and Neutral in equal parts
happy at 0.5; Happy and Sad in equal parts happy at 0.5 (the first in our order wins a tie).
An emotion the renderer cannot show falls back to its nearest (`FALLBACK`), else neutral.

`parse_emo` reads and checks the value (EmoError with a message for the client);
`plan_for` turns it into per-frame runs of (emotion, intensity) for one renderer.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from avatar_runtime.state import EMOTIONS

DITTO_EMOTIONS = ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise", "Contempt")
"""Ditto's emotions, in the order of its indices."""
NEUTRAL_INDEX = 4
DEFAULT_EMO = NEUTRAL_INDEX
DITTO_TO_OURS: dict[str, tuple[str, float]] = {
    "Angry": ("angry", 1.0),
    "Disgust": ("angry", 0.6),
    "Fear": ("concerned", 1.0),
    "Happy": ("happy", 1.0),
    "Neutral": ("neutral", 0.0),
    "Sad": ("sad", 1.0),
    "Surprise": ("surprised", 1.0),
    "Contempt": ("angry", 0.4),
}
"""Each of Ditto's emotions as one of ours, and how strongly (docs/streaming.md)."""
FALLBACK: dict[str, str] = {"concerned": "sad", "reassuring": "happy"}
"""Ours, for a renderer that cannot show an emotion: the nearest it may show, else neutral."""
MAX_FRAMES = 20_000
"""The longest per-frame `emo` list (over 13 minutes at 25 fps; the last entry holds after)."""

Weights = tuple[float, ...]
"""Eight non-negative weights summing to 1, in Ditto's order."""


class EmoError(ValueError):
    """An `emo` that is none of Ditto's forms; the message says what is accepted."""


USAGE = (
    "'emo' must be one of Ditto's emotion indices 0-7 (0 Angry, 1 Disgust, 2 Fear, 3 Happy, "
    "4 Neutral, 5 Sad, 6 Surprise, 7 Contempt), a list of indices to mix, a list of 8 weights, "
    "a list of those per frame, or an emotion's name"
)


@dataclass(frozen=True)
class Emo:
    """A checked `emo`: one mix for the whole session, or one per frame."""

    frames: tuple[Weights, ...]
    """One mix (the whole session) or one per frame (the last one holds after the list)."""
    per_frame: bool = False


@dataclass(frozen=True)
class Run:
    """From frame `start` on (until the next run), this emotion at this intensity."""

    start: int
    emotion: str
    intensity: float


# --- reading it -------------------------------------------------------------------------------


def parse_emo(value: Any) -> Emo:
    """`value` as sent in the init's config; EmoError when it is none of the accepted forms."""
    if value is None:
        return Emo((_one_hot(DEFAULT_EMO),))
    if isinstance(value, list) and value and any(isinstance(v, list) for v in value):
        if len(value) > MAX_FRAMES:
            raise EmoError(f"a per-frame 'emo' has at most {MAX_FRAMES} entries, not {len(value)}")
        return Emo(tuple(_mix(v, f"emo[{i}]") for i, v in enumerate(value)), per_frame=True)
    return Emo((_mix(value, "emo"),))


def _mix(value: Any, where: str) -> Weights:
    if isinstance(value, str):
        return _named(value, where)
    if _is_number(value):
        return _one_hot(_index(value, where))
    if isinstance(value, list):
        if not value or not all(_is_number(v) for v in value):
            raise EmoError(f"{where}: {USAGE}")
        if len(value) == len(DITTO_EMOTIONS):
            return _weights(value, where)
        indices = {_index(v, where) for v in value}
        return tuple(1.0 / len(indices) if i in indices else 0.0 for i in range(8))
    raise EmoError(f"{where}: {USAGE}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _index(value: Any, where: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or not 0 <= value < len(DITTO_EMOTIONS):
        raise EmoError(f"{where}: {value!r:.32} is not an emotion index 0-7; {USAGE}")
    return value


def _weights(values: Sequence[float], where: str) -> Weights:
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise EmoError(f"{where}: the 8 emotion weights must be finite numbers of at least 0")
    total = float(sum(values))
    if total <= 0:
        raise EmoError(f"{where}: the 8 emotion weights must not all be 0")
    return tuple(float(v) / total for v in values)


def _named(name: str, where: str) -> Weights:
    wanted = name.strip().lower()
    for index, ditto in enumerate(DITTO_EMOTIONS):
        if ditto.lower() == wanted:
            return _one_hot(index)
    if wanted in EMOTIONS:
        # One of ours by name: the Ditto emotion that stands for it fully, if any.
        for index, ditto in enumerate(DITTO_EMOTIONS):
            if DITTO_TO_OURS[ditto] == (wanted, 1.0):
                return _one_hot(index)
    names = ", ".join(d.lower() for d in DITTO_EMOTIONS)
    raise EmoError(f"{where}: unknown emotion {name!r:.40}; by name: {names}")


def _one_hot(index: int) -> Weights:
    return tuple(1.0 if i == index else 0.0 for i in range(len(DITTO_EMOTIONS)))


# --- as our emotions --------------------------------------------------------------------------


def to_expression(weights: Weights, shown: Sequence[str]) -> tuple[str, float]:
    """One Ditto mix as (emotion, intensity) for a renderer showing `shown` (empty: it has no
    emotion control, so always neutral)."""
    scores: dict[str, float] = {}
    for ditto, weight in zip(DITTO_EMOTIONS, weights, strict=True):
        ours, strength = DITTO_TO_OURS[ditto]
        if ours != "neutral" and weight > 0:
            scores[ours] = scores.get(ours, 0.0) + weight * strength
    if not scores or not shown:
        return "neutral", 0.0
    best = max(EMOTIONS, key=lambda e: (scores.get(e, 0.0), -EMOTIONS.index(e)))
    intensity = round(min(1.0, scores[best]), 4)
    if best not in shown:
        best = FALLBACK.get(best, "neutral")
        if best not in shown:
            return "neutral", 0.0
    return best, intensity


def plan_for(emo: Emo, shown: Sequence[str]) -> tuple[Run, ...]:
    """`emo` for a renderer showing `shown`: runs of frames with one expression each."""
    runs: list[Run] = []
    for frame, weights in enumerate(emo.frames):
        emotion, intensity = to_expression(weights, shown)
        if not runs or (runs[-1].emotion, runs[-1].intensity) != (emotion, intensity):
            runs.append(Run(frame, emotion, intensity))
    return tuple(runs)


class Schedule:
    """Runs, looked up by frame (the worker asks for every frame it renders)."""

    def __init__(self, runs: Sequence[Run]) -> None:
        self._runs = tuple(runs) or (Run(0, "neutral", 0.0),)
        self._starts = [run.start for run in self._runs]

    def at(self, frame: int) -> tuple[str, float]:
        """The (emotion, intensity) of `frame`: the last run starting at or before it."""
        run = self._runs[max(0, bisect.bisect_right(self._starts, frame) - 1)]
        return run.emotion, run.intensity


def expression_at(runs: Sequence[Run], frame: int) -> tuple[str, float]:
    """The (emotion, intensity) of `frame` (runs sorted by start, the first starting at 0)."""
    return Schedule(runs).at(frame)


__all__ = [
    "DITTO_EMOTIONS",
    "DITTO_TO_OURS",
    "Emo",
    "EmoError",
    "Run",
    "Schedule",
    "expression_at",
    "parse_emo",
    "plan_for",
    "to_expression",
]
