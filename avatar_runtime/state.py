"""Live, per-session avatar state that controls change and renderers read on the next frame."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from renderers import Expression

EMOTIONS = ("neutral", "happy", "sad", "concerned", "surprised", "angry", "reassuring")


@dataclass
class AvatarState:
    emotion: str = "neutral"
    intensity: float = 0.0
    background: str = "original"

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def set_emotion(self, emotion: str, intensity: float) -> None:
        if emotion not in EMOTIONS:
            raise ValueError(f"unknown emotion '{emotion}'; valid: {', '.join(EMOTIONS)}")
        if not 0.0 <= intensity <= 1.0:
            raise ValueError("intensity must be between 0 and 1")
        with self._lock:
            self.emotion, self.intensity = emotion, intensity

    def expression(self) -> Expression:
        with self._lock:
            return Expression(self.emotion, self.intensity)
