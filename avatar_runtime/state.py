"""Live, per-session avatar state that controls change and renderers read on the next frame."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from renderers import Expression

from .backgrounds import BackgroundLibrary, parse_background

EMOTIONS = ("neutral", "happy", "sad", "concerned", "surprised", "angry", "reassuring")


@dataclass
class AvatarState:
    emotion: str = "neutral"
    intensity: float = 0.0
    background: str = "original"
    """The background spec the compositor shows (avatar_runtime.backgrounds); read it per
    frame, change it with `set_background`."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def set_emotion(self, emotion: str, intensity: float) -> None:
        if emotion not in EMOTIONS:
            raise ValueError(f"unknown emotion '{emotion}'; valid: {', '.join(EMOTIONS)}")
        if not 0.0 <= intensity <= 1.0:
            raise ValueError("intensity must be between 0 and 1")
        with self._lock:
            self.emotion, self.intensity = emotion, intensity

    def set_background(self, spec: str, library: BackgroundLibrary | None) -> str:
        """Validate `spec` (ValueError listing the valid ones) and make it current, in its
        canonical spelling, which is returned."""
        canonical = parse_background(spec, library).spec
        with self._lock:
            self.background = canonical
        return canonical

    def expression(self) -> Expression:
        with self._lock:
            return Expression(self.emotion, self.intensity)
