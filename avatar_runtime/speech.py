"""Queued speech, cut into per-frame windows.

Audio arrives from the agent's TTS at its own rate, in chunks of any size, usually faster than
real time. Each utterance (segment) is resampled twice, as a stream: to the published audio
rate and to the renderer's rate. Both are sliced on the same frame timeline, so a video frame
and the audio published with it always cover the same instant of speech.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc

from renderers import Expression, FrameRequest

from .timeline import FrameTimeline, SampleBuffer


@dataclass(frozen=True)
class SpeechWindow:
    """The audio of one speech frame."""

    segment: int
    """Utterance number, 1-based."""
    frame_in_segment: int
    out_audio: np.ndarray
    """int16 mono at the published rate: exactly this frame's window."""
    render_audio: np.ndarray
    """float32 mono at the renderer's rate: look-behind + window + look-ahead."""
    window_offset: int
    window_length: int
    segment_position: int
    """Renderer-rate samples of this utterance before this frame's window."""
    last: bool
    """True for the final frame of a finished utterance."""
    first_audio_at: float
    """perf_counter() when the utterance's first audio reached the runtime."""

    def frame_request(
        self, *, index: int, speech_position: int, expression: Expression | None = None
    ) -> FrameRequest:
        """The renderer's request for this window shown as frame `index`, after
        `speech_position` renderer-rate samples of speech (the live generator and offline
        renders build their requests alike)."""
        return FrameRequest(
            index=index,
            audio=self.render_audio,
            window_offset=self.window_offset,
            window_length=self.window_length,
            speech_position=speech_position,
            segment=self.segment,
            segment_position=self.segment_position,
            expression=expression or Expression(),
        )


class _Resampler:
    """Streaming mono resampler to a fixed rate; a pass-through when rates match."""

    def __init__(self, input_rate: int, output_rate: int) -> None:
        self._native = (
            rtc.AudioResampler(input_rate, output_rate, num_channels=1)
            if input_rate != output_rate
            else None
        )

    def push(self, mono: np.ndarray, input_rate: int) -> np.ndarray:
        if self._native is None:
            return mono
        frame = rtc.AudioFrame(mono.tobytes(), input_rate, 1, mono.size)
        return _join(self._native.push(frame))

    def flush(self) -> np.ndarray:
        return _join(self._native.flush()) if self._native is not None else _EMPTY_I16


_EMPTY_I16 = np.zeros(0, dtype=np.int16)


def _join(frames: list[rtc.AudioFrame]) -> np.ndarray:
    if not frames:
        return _EMPTY_I16
    return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])


def to_mono_int16(frame: rtc.AudioFrame) -> np.ndarray:
    samples = np.frombuffer(frame.data, dtype=np.int16)
    if frame.num_channels == 1:
        return samples.copy()
    channels = samples.reshape(-1, frame.num_channels).astype(np.int32)
    return (channels.sum(axis=1) // frame.num_channels).astype(np.int16)


@dataclass
class _Segment:
    number: int
    first_audio_at: float
    out: SampleBuffer = field(default_factory=lambda: SampleBuffer(np.int16))
    render: SampleBuffer = field(default_factory=lambda: SampleBuffer(np.float32))
    input_rate: int = 0
    out_resampler: _Resampler | None = None
    render_resampler: _Resampler | None = None
    ended: bool = False
    next_frame: int = 0


class SpeechQueue:
    """Utterances waiting to be shown, oldest first. Not thread-safe: use from the event loop."""

    def __init__(
        self,
        *,
        out_rate: int,
        render_rate: int,
        fps: float,
        lookbehind_s: float = 0.0,
        lookahead_s: float = 0.0,
    ) -> None:
        self.out_rate = out_rate
        self.render_rate = render_rate
        self.out_timeline = FrameTimeline(out_rate, fps)
        self.render_timeline = FrameTimeline(render_rate, fps)
        self._lookbehind = int(round(lookbehind_s * render_rate))
        self._lookahead = int(round(lookahead_s * render_rate))
        self._segments: deque[_Segment] = deque()
        self._segment_count = 0

    # -- input -------------------------------------------------------------------------------

    def push(self, frame: rtc.AudioFrame) -> None:
        if frame.samples_per_channel == 0:
            return
        segment = self._open_segment()
        if segment.input_rate != frame.sample_rate:
            self._flush_resamplers(segment)
            segment.input_rate = frame.sample_rate
            segment.out_resampler = _Resampler(frame.sample_rate, self.out_rate)
            segment.render_resampler = _Resampler(frame.sample_rate, self.render_rate)
        assert segment.out_resampler and segment.render_resampler
        mono = to_mono_int16(frame)
        segment.out.append(segment.out_resampler.push(mono, frame.sample_rate))
        rendered = segment.render_resampler.push(mono, frame.sample_rate)
        segment.render.append(rendered.astype(np.float32) / 32768.0)

    def end_segment(self) -> None:
        """Mark the end of the current utterance (an end with no audio is an empty utterance)."""
        segment = self._open_segment()
        self._flush_resamplers(segment)
        segment.ended = True

    def clear(self) -> int:
        """Drop all queued speech. Returns the number of utterances dropped."""
        dropped = len(self._segments)
        self._segments.clear()
        return dropped

    # -- output ------------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        return bool(self._segments)

    def pop_empty_end(self) -> bool:
        """Remove a finished utterance that has no frames left; True when one was removed."""
        if self._segments and self._segments[0].ended and self._frames_left(self._segments[0]) == 0:
            self._segments.popleft()
            return True
        return False

    def next_window(self) -> SpeechWindow | None:
        """The next frame's speech if all its audio (and look-ahead) has arrived, else None."""
        if not self._segments:
            return None
        segment = self._segments[0]
        if segment.ended and self._frames_left(segment) == 0:
            return None  # an empty end is waiting; the caller pops it with pop_empty_end()
        k = segment.next_frame
        out_lo, out_hi = self.out_timeline.window(k)
        ren_lo, ren_hi = self.render_timeline.window(k)
        ready = segment.ended or (
            segment.out.end >= out_hi and segment.render.end >= ren_hi + self._lookahead
        )
        if not ready:
            return None
        window = SpeechWindow(
            segment=segment.number,
            frame_in_segment=k,
            out_audio=segment.out.read(out_lo, out_hi),
            render_audio=segment.render.read(ren_lo - self._lookbehind, ren_hi + self._lookahead),
            window_offset=self._lookbehind,
            window_length=ren_hi - ren_lo,
            segment_position=ren_lo,
            last=segment.ended and self._frames_left(segment) == 1,
            first_audio_at=segment.first_audio_at,
        )
        segment.next_frame += 1
        segment.out.trim_before(out_hi)
        segment.render.trim_before(ren_hi - self._lookbehind)
        if window.last:
            self._segments.popleft()
        return window

    # -- internals ---------------------------------------------------------------------------

    def _open_segment(self) -> _Segment:
        if not self._segments or self._segments[-1].ended:
            self._segment_count += 1
            self._segments.append(_Segment(self._segment_count, time.perf_counter()))
        return self._segments[-1]

    def _frames_left(self, segment: _Segment) -> int:
        if not segment.ended:
            return -1  # unknown yet
        total = self.out_timeline.frames_covering(segment.out.end)
        return max(0, total - segment.next_frame)

    @staticmethod
    def _flush_resamplers(segment: _Segment) -> None:
        if segment.out_resampler is not None and segment.render_resampler is not None:
            segment.out.append(segment.out_resampler.flush())
            tail = segment.render_resampler.flush()
            segment.render.append(tail.astype(np.float32) / 32768.0)
