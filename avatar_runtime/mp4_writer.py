"""An MP4 file of H.264 video and AAC audio, written frame by frame with PyAV.

Timestamps are counted, never measured: video frame k has pts k in a 1/fps time base, audio
sample n has pts n in a 1/rate time base, so both tracks start at zero and stay together for
any length. The AAC encoder's priming delay is hidden by the MP4 muxer's edit list.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
"""The sample rates AAC signals natively; anything else is resampled to 48 kHz."""


def aac_rate(sample_rate: int) -> int:
    """The AAC track's rate for audio at `sample_rate`: the same when AAC has it, else 48 kHz."""
    return sample_rate if sample_rate in AAC_RATES else 48000


class Mp4Writer:
    """`write_video(rgba)` once per frame and `write_audio(int16 mono)` in any chunks, then
    `close()` (or use it as a context manager; leaving it by an exception closes without
    finishing the file, which the caller then discards)."""

    def __init__(
        self,
        path: Path,
        *,
        width: int,
        height: int,
        fps: Fraction,
        audio_rate: int,
        crf: int = 23,
        preset: str = "veryfast",
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError("yuv420p needs even width and height")
        self.fps = fps
        self.audio_rate = audio_rate
        self.frames = 0
        self.audio_samples = 0
        self._container = av.open(
            str(path), mode="w", format="mp4", options={"movflags": "+faststart"}
        )
        try:
            self._video = self._container.add_stream(
                "libx264",
                rate=fps,
                options={"preset": preset, "crf": str(crf), "g": str(max(1, round(2 * fps)))},
            )
            self._video.width = width
            self._video.height = height
            self._video.pix_fmt = "yuv420p"
            self._video.codec_context.time_base = Fraction(1) / fps
            self._audio = self._container.add_stream("aac", rate=audio_rate, layout="mono")
            # Plenty for one voice; AAC allows at most 6 bits a sample per channel.
            self._audio.bit_rate = min(96000, 4 * audio_rate)
            self._audio_frame_size = 1024  # AAC-LC's frame; the encoder wants exactly this
            self._pending = np.zeros(0, dtype=np.int16)
        except BaseException:
            self._container.close()
            raise

    def write_video(self, rgba: np.ndarray) -> None:
        """One HxWx4 (or HxWx3) uint8 picture: the next frame."""
        picture = av.VideoFrame.from_ndarray(
            np.ascontiguousarray(rgba), format="rgba" if rgba.shape[2] == 4 else "rgb24"
        )
        picture.pts = self.frames
        picture.time_base = self._video.codec_context.time_base
        self._container.mux(self._video.encode(picture))
        self.frames += 1

    def write_audio(self, samples: np.ndarray) -> None:
        """int16 mono at `audio_rate`, continuing the track."""
        self._pending = np.concatenate([self._pending, samples.astype(np.int16, copy=False)])
        size = self._audio_frame_size
        whole = self._pending.size - self._pending.size % size
        for start in range(0, whole, size):
            self._encode_audio(self._pending[start : start + size])
        self._pending = self._pending[whole:]

    def close(self) -> None:
        """Flush both encoders and finish the file."""
        if self._pending.size:
            self._encode_audio(self._pending)  # AAC takes a short last frame
            self._pending = np.zeros(0, dtype=np.int16)
        self._container.mux(self._video.encode(None))
        self._container.mux(self._audio.encode(None))
        self._container.close()

    def abort(self) -> None:
        """Stop without finishing the file (it is not playable; the caller deletes it)."""
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away anyway
            pass

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def _encode_audio(self, samples: np.ndarray) -> None:
        planar = (samples.astype(np.float32) * np.float32(1.0 / 32768.0)).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout="mono")
        frame.sample_rate = self.audio_rate
        frame.pts = self.audio_samples
        frame.time_base = Fraction(1, self.audio_rate)
        self._container.mux(self._audio.encode(frame))
        self.audio_samples += samples.size
