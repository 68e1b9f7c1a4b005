"""Exact frame boundaries in samples, and a growable sample buffer.

Frame k of an utterance owns samples [boundary(k), boundary(k + 1)). Boundaries are computed
from k directly with exact rational arithmetic (a fractional accumulator that never rounds
twice), so 16 kHz at 30 fps gives windows of 533 or 534 samples and frame 30 * 600 starts at
exactly 600 * 16000 samples: no drift over any length of speech.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np


class FrameTimeline:
    def __init__(self, sample_rate: int, fps: float) -> None:
        if sample_rate <= 0 or fps <= 0:
            raise ValueError("sample_rate and fps must be positive")
        self.sample_rate = sample_rate
        self.fps = Fraction(fps).limit_denominator(1001)
        self._samples_per_frame = Fraction(sample_rate) / self.fps

    def boundary(self, frame: int) -> int:
        """First sample of `frame` (floor of frame * rate / fps)."""
        return int(frame * self._samples_per_frame)  # int() floors a positive Fraction

    def window(self, frame: int) -> tuple[int, int]:
        return self.boundary(frame), self.boundary(frame + 1)

    def frames_covering(self, samples: int) -> int:
        """Fewest frames whose windows hold `samples` samples."""
        frames = int(samples / self._samples_per_frame)
        while self.boundary(frames) < samples:
            frames += 1
        return frames

    def seconds(self, samples: int) -> float:
        return samples / self.sample_rate


class SampleBuffer:
    """Append-only 1-D buffer addressed by absolute sample index, trimmed from the front.

    Chunks are appended as they arrive and joined lazily, so appending is O(1) and reading a
    window touches only what it needs.
    """

    def __init__(self, dtype: type[np.generic]) -> None:
        self._dtype = dtype
        self._chunks: list[np.ndarray] = []
        self._joined = np.zeros(0, dtype=dtype)
        self._start = 0  # absolute index of self._joined[0]
        self._length = 0  # absolute end (total samples ever appended)
        self._start_hint = 0  # samples before this may be dropped

    @property
    def end(self) -> int:
        return self._length

    def append(self, samples: np.ndarray) -> None:
        if samples.size:
            self._chunks.append(samples.astype(self._dtype, copy=False))
            self._length += samples.size

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop); positions before the first sample or past the end are zeros."""
        out = np.zeros(max(0, stop - start), dtype=self._dtype)
        if self._chunks:
            self._joined = np.concatenate([self._joined, *self._chunks])
            self._chunks.clear()
        lo, hi = max(start, self._start, self._start_hint), min(stop, self._length)
        if hi > lo:
            out[lo - start : hi - start] = self._joined[lo - self._start : hi - self._start]
        return out

    def trim_before(self, index: int) -> None:
        """Forget samples before `index` (they will read back as zeros).

        Memory is reclaimed only once at least half the buffer is dead, so trimming after
        every frame costs amortised O(1) instead of a copy of the whole queue.
        """
        self._start_hint = max(self._start_hint, index)
        dead = self._start_hint - self._start
        if dead > 0 and dead * 2 >= self._length - self._start:
            if self._chunks:
                self._joined = np.concatenate([self._joined, *self._chunks])
                self._chunks.clear()
            drop = min(dead, self._joined.size)
            self._joined = self._joined[drop:].copy()
            self._start += drop
