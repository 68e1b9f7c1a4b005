"""Reading a whole audio file (anything PyAV decodes: WAV, MP3, M4A/AAC, OGG/Opus, FLAC, ...)
as mono 16-bit samples at the file's own rate, for offline renders.

Channels are mixed by their mean, so a voice on one side of a stereo file keeps its shape (at
half the level) instead of cancelling or clipping. Errors carry a stable `code` and a message
meant for the person who sent the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from renderers.errors import CodedError, short_reason


class AudioFileError(CodedError):
    """An audio file that cannot be used; `message` is for the user, `code` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, retryable=False)


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray
    """int16 mono."""
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate


def format_seconds(seconds: float) -> str:
    """`600` for 600.0 and `2.5` for 2.5: how limits read in messages."""
    return f"{seconds:g}"


def read_audio_mono(path: Path, *, max_seconds: float) -> DecodedAudio:
    """The first audio stream of `path`, mixed to mono, at its own sample rate.

    AudioFileError codes: `audio_not_found`; `unsupported_audio_format` ("Unsupported audio
    format: {format}", where format is the container PyAV found without an audio stream, or
    the file's extension when PyAV cannot open it at all); `corrupt_audio`; `audio_empty`;
    `audio_too_long` ("Audio too long, maximum X seconds allowed"), raised as soon as the
    decoded length passes the limit, so a huge file is never decoded whole.
    """
    if not path.is_file():
        raise AudioFileError("audio_not_found", f"Audio file not found: {path.name}")
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, ValueError, UnicodeDecodeError):
        kind = path.suffix.lstrip(".").lower() or "unknown"
        raise AudioFileError(
            "unsupported_audio_format", f"Unsupported audio format: {kind}"
        ) from None
    with container:
        if not container.streams.audio:
            kind = container.format.name.split(",")[0]
            raise AudioFileError("unsupported_audio_format", f"Unsupported audio format: {kind}")
        stream = container.streams.audio[0]
        too_long = AudioFileError(
            "audio_too_long",
            f"Audio too long, maximum {format_seconds(max_seconds)} seconds allowed",
        )
        # The header's duration is only a hint (VBR MP3s lie); the decoded length decides.
        if stream.duration is not None and stream.time_base is not None:
            if float(stream.duration * stream.time_base) > max_seconds + 1.0:
                raise too_long
        chunks: list[np.ndarray] = []
        rate = 0
        total = 0
        resampler: av.AudioResampler | None = None
        try:
            for frame in container.decode(stream):
                if resampler is None:
                    rate = frame.sample_rate
                    # Planar float at the first frame's rate and layout: later frames that
                    # change either are converted to match, so the chunks join up.
                    resampler = av.AudioResampler("fltp", frame.layout.name, rate)
                for converted in resampler.resample(frame):
                    total += _append_mono(chunks, converted)
                if total > max_seconds * rate:
                    raise too_long
            if resampler is not None:
                for converted in resampler.resample(None):
                    total += _append_mono(chunks, converted)
        except av.FFmpegError as error:
            reason = short_reason(error, "decoding failed")
            raise AudioFileError(
                "corrupt_audio", f"Audio could not be decoded (corrupt or truncated file): {reason}"
            ) from None
    if total == 0:
        raise AudioFileError("audio_empty", "Audio is empty: it holds no samples")
    if total > max_seconds * rate:
        raise too_long
    mono = np.concatenate(chunks)
    samples = np.clip(np.rint(mono * 32767.0), -32768, 32767).astype(np.int16)
    return DecodedAudio(samples=samples, sample_rate=rate)


def _append_mono(chunks: list[np.ndarray], frame: av.AudioFrame) -> int:
    planes = frame.to_ndarray()  # (channels, samples) for planar formats
    if planes.shape[1] == 0:
        return 0
    chunks.append(planes.mean(axis=0, dtype=np.float32))
    return planes.shape[1]
