"""Counters a session keeps about its own frames, cheap enough to update on every frame."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass
class RuntimeStats:
    frames: int = 0
    speech_frames: int = 0
    idle_frames: int = 0
    repeated_frames: int = 0
    """Frames whose render was not ready in time, shown as the previous picture instead."""
    dropped_renders: int = 0
    """Renders skipped or thrown away because their frame had already gone out."""
    fallback_frames: int = 0
    """Frames that showed the fallback picture because the renderer had failed or hung."""
    render_errors: int = 0
    """Render calls that failed: raised, returned no valid pictures or hung."""
    render_timeouts: int = 0
    """Of those, the ones given up as hung (longer than the render timeout)."""
    segments: int = 0
    interruptions: int = 0
    render_ms: deque[float] = field(default_factory=lambda: deque(maxlen=300))
    first_frame_latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=50))
    """Per utterance: from its first audio reaching the runtime to its first frame leaving."""

    def snapshot(self) -> dict[str, float | int | None]:
        render = np.array(self.render_ms) if self.render_ms else np.zeros(1)
        latency = list(self.first_frame_latency_ms)
        return {
            "frames": self.frames,
            "speech_frames": self.speech_frames,
            "idle_frames": self.idle_frames,
            "repeated_frames": self.repeated_frames,
            "dropped_renders": self.dropped_renders,
            "fallback_frames": self.fallback_frames,
            "render_errors": self.render_errors,
            "render_timeouts": self.render_timeouts,
            "segments": self.segments,
            "interruptions": self.interruptions,
            "render_ms_p50": round(float(np.percentile(render, 50)), 3),
            "render_ms_p95": round(float(np.percentile(render, 95)), 3),
            "first_frame_latency_ms": round(latency[-1], 2) if latency else None,
            "first_frame_latency_ms_max": round(max(latency), 2) if latency else None,
        }
