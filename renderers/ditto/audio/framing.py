"""Ditto's audio framing: which samples each HuBERT window reads and which of its outputs
become 25 fps feature frames, for the online (streaming) and offline (whole clip) paths.

Facts, from the official code (antgroup/ditto-talkinghead: inference.py,
core/atomic_components/wav2feat.py, stream_pipeline_online.py):

* Audio is 16 kHz, video 25 fps: one frame is 640 samples (40 ms).
* `chunksize = (3, 5, 2)`: left-context, new and look-ahead frames of one window.
  A window is `int(sum(chunksize) * 0.04 * 16000) + 80 = 6480` samples; HuBERT (stride 320,
  receptive field 400) turns it into 20 frames at 50 Hz x 1024. The frames
  `[-sum(chunksize[1:]) * 2 : -chunksize[2] * 2] = [-14:-4]` are averaged in pairs
  (`reshape(5, 2, 1024).mean(1)`): 5 frames at 25 fps per window.
* Online (inference.py): 1920 zero samples (`chunksize[0] * 640`) are prepended to the clip;
  windows start every `chunksize[1] * 640 = 3200` samples while the start is inside the
  padded clip, and the last ones are zero-padded to a full window. That gives
  `5 * ceil((len + 1920) / 3200)` frames; Ditto's online pipeline renders all of them (its
  `N_d = num_f` only places the closing eye and fade controls).
* Offline (`Wav2FeatHubert.wav2feat`): `split_len - int(sum(chunksize[1:]) * 0.04 * 16000)
  = 2000` zeros are prepended and a window of zeros appended; windows start at `i * 640` for
  `i = 0, 5, 10, ...` while `i < num_f`, and the result is cut to
  `num_f = ceil(len / 16000 * 25)` frames.
* The two differ by 80 samples (5 ms): offline window k reads the clip's samples
  `[3200k - 2000, 3200k + 4480)`, online window k reads `[3200k - 1920, 3200k + 4560)`.
  So offline(clip) equals online(80 zeros + clip) cut to offline's `num_f`, and no
  streaming front end that keeps up with the audio can reproduce the offline path exactly.
* Silence pre-fill (stream_pipeline_online.py, `setup`): before streaming, the audio-feature
  buffer of the audio-to-motion stage is filled with `overlap_v2 = 10` frames computed by the
  offline path from `overlap_v2 * 640` zero samples (not zero features: HuBERT of silence is
  not zero).
* `num_f` is Ditto's float formula; for about one length in 10,000 (4480 samples, 8960, ...)
  it is one more than `ceil(len / 640)` (4480 / 16000 * 25 = 7.000000000000001). Kept as is.

Everything here is numpy arithmetic around an `Encoder`: any callable taking one window
(1-D float32, 16 kHz) and returning the 50 Hz features, (T, dim) or (1, T, dim)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
"""Hz, of the audio HuBERT reads."""
FPS = 25
"""Frames per second of the features (and of Ditto's video)."""
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
"""640 samples, 40 ms."""
HUBERT_STRIDE = 320
"""Samples between two HuBERT output frames (50 Hz)."""
HUBERT_RECEPTIVE_FIELD = 400
"""Samples the conv front end of HuBERT needs for one output frame."""
FEATURE_DIM = 1024
"""Width of HuBERT-large's features."""
DEFAULT_CHUNKSIZE: tuple[int, int, int] = (3, 5, 2)
"""Ditto's default (left-context, new, look-ahead) frames per window."""
DEFAULT_OVERLAP = 10
"""Ditto's `overlap_v2`: frames of silence features the online buffer starts with."""
WINDOW_EXTRA_SAMPLES = 80
"""Added to a window's 25 fps span (`+ 80` in Ditto) so HuBERT yields exactly 2 frames per
video frame: 400 - 320 = 80."""

Encoder = Callable[[np.ndarray], np.ndarray]
"""One window of audio (1-D float32) -> HuBERT features (T, dim) or (1, T, dim)."""


def num_frames(n_samples: int) -> int:
    """25 fps frames for `n_samples` of 16 kHz audio, as Ditto counts them:
    `ceil(n / 16000 * 25)` (float arithmetic, see the module doc)."""
    return math.ceil(n_samples / SAMPLE_RATE * FPS)


def encoder_frames(n_samples: int) -> int:
    """HuBERT output frames for `n_samples` of input (its conv front end: stride 320,
    receptive field 400): `floor((n - 400) / 320) + 1`, 0 below 400 samples."""
    if n_samples < HUBERT_RECEPTIVE_FIELD:
        return 0
    return (n_samples - HUBERT_RECEPTIVE_FIELD) // HUBERT_STRIDE + 1


@dataclass(frozen=True)
class DittoFraming:
    """The window arithmetic for one `chunksize` (Ditto's formulas, literally)."""

    chunksize: tuple[int, int, int] = DEFAULT_CHUNKSIZE

    def __post_init__(self) -> None:
        if len(self.chunksize) != 3 or any(int(c) != c or c < 0 for c in self.chunksize):
            raise ValueError(f"chunksize must be three non-negative integers: {self.chunksize}")
        if self.chunksize[1] < 1:
            raise ValueError(f"chunksize[1] (new frames per window) must be >= 1: {self.chunksize}")
        object.__setattr__(self, "chunksize", tuple(int(c) for c in self.chunksize))

    @property
    def window_samples(self) -> int:
        """`split_len`: samples HuBERT reads per window (6480)."""
        return int(sum(self.chunksize) * 0.04 * SAMPLE_RATE) + WINDOW_EXTRA_SAMPLES

    @property
    def hop_samples(self) -> int:
        """Samples between two windows' starts (3200)."""
        return self.chunksize[1] * SAMPLES_PER_FRAME

    @property
    def lead_in_samples(self) -> int:
        """Zeros the online path prepends to the audio (1920)."""
        return self.chunksize[0] * SAMPLES_PER_FRAME

    @property
    def offline_lead_in_samples(self) -> int:
        """Zeros the offline path prepends (2000): 80 more than online."""
        return self.window_samples - int(sum(self.chunksize[1:]) * 0.04 * SAMPLE_RATE)

    @property
    def frames_per_window(self) -> int:
        """25 fps frames one window yields (5)."""
        return self.chunksize[1]

    @property
    def encoder_frames_per_window(self) -> int:
        """HuBERT frames of one window (20)."""
        return encoder_frames(self.window_samples)

    @property
    def feature_slice(self) -> slice:
        """The HuBERT frames kept from a window: `[-14:-4]`."""
        return slice(-sum(self.chunksize[1:]) * 2, -self.chunksize[2] * 2)

    @property
    def lookahead_samples(self) -> int:
        """Audio a window reads past the end of its last output frame (1280 + 80)."""
        return self.window_samples - self.lead_in_samples - self.hop_samples

    def online_window_count(self, n_samples: int) -> int:
        """Windows the online loop runs for a clip of `n_samples`:
        `len(range(0, n + lead_in, hop))`."""
        return len(range(0, n_samples + self.lead_in_samples, self.hop_samples))

    def online_frame_count(self, n_samples: int) -> int:
        """25 fps frames Ditto's online loop yields (5 per window, before any trim)."""
        return self.online_window_count(n_samples) * self.frames_per_window

    def window_features(self, encoding: np.ndarray) -> np.ndarray:
        """A window's HuBERT output (T, dim) or (1, T, dim) -> its 25 fps frames
        (chunksize[1], dim), float32: the kept slice averaged in pairs."""
        encoding = np.asarray(encoding)
        if encoding.ndim == 3 and encoding.shape[0] == 1:
            encoding = encoding[0]
        if encoding.ndim != 2:
            raise ValueError(f"HuBERT output must be (T, dim), got {encoding.shape}")
        kept = encoding[self.feature_slice]
        if kept.shape[0] != 2 * self.frames_per_window:
            raise ValueError(
                f"HuBERT gave {encoding.shape[0]} frames for a {self.window_samples}-sample "
                f"window; expected {self.encoder_frames_per_window}"
            )
        pairs = kept.reshape(self.frames_per_window, 2, encoding.shape[1])
        return pairs.mean(axis=1).astype(np.float32, copy=False)

    def run_window(self, encoder: Encoder, window: np.ndarray) -> np.ndarray:
        """One window (exactly `window_samples`) through `encoder` -> its 25 fps frames."""
        if window.shape != (self.window_samples,):
            raise ValueError(f"a window is {self.window_samples} samples, got {window.shape}")
        return self.window_features(encoder(np.ascontiguousarray(window, dtype=np.float32)))


def as_float_pcm(pcm: np.ndarray | Sequence[float]) -> np.ndarray:
    """16 kHz mono PCM as 1-D float32: int16 scaled by 1/32768, floats as they are."""
    array = np.asarray(pcm)
    if array.ndim != 1:
        raise ValueError(f"PCM must be 1-D mono, got shape {array.shape}")
    if array.dtype == np.int16:
        return array.astype(np.float32) / np.float32(32768.0)
    if array.dtype.kind not in "fiu" and array.size:
        raise ValueError(f"PCM must be float or int16, got {array.dtype}")
    if array.dtype.kind in "iu" and array.size:
        raise ValueError(f"integer PCM must be int16, got {array.dtype}")
    return array.astype(np.float32, copy=False)


def online_features(
    audio: np.ndarray,
    encoder: Encoder,
    chunksize: tuple[int, int, int] = DEFAULT_CHUNKSIZE,
    *,
    trim: bool = True,
) -> np.ndarray:
    """Ditto's online path over a whole clip at once (inference.py's loop): 1920 zeros
    prepended, a window every 3200 samples, the last ones zero-padded. (n, dim) float32.

    trim: cut to `num_frames(len(audio))`, the clip's own length (what `AudioFeatureStream`
    gives with `flush(trim=True)`); False keeps Ditto's `5 * ceil((len + 1920) / 3200)`.
    An empty clip gives no frames."""
    framing = DittoFraming(chunksize)
    audio = as_float_pcm(audio)
    if audio.size == 0:
        return np.zeros((0, FEATURE_DIM), dtype=np.float32)
    padded = np.concatenate([np.zeros(framing.lead_in_samples, np.float32), audio])
    frames = []
    count = num_frames(audio.size) if trim else framing.online_frame_count(audio.size)
    windows = -(-count // framing.frames_per_window)
    for k in range(windows):
        start = k * framing.hop_samples
        window = padded[start : start + framing.window_samples]
        if window.size < framing.window_samples:
            window = np.pad(window, (0, framing.window_samples - window.size))
        frames.append(framing.run_window(encoder, window))
    return np.concatenate(frames, axis=0)[:count]


def offline_features(
    audio: np.ndarray,
    encoder: Encoder,
    chunksize: tuple[int, int, int] = DEFAULT_CHUNKSIZE,
) -> np.ndarray:
    """Ditto's offline path (`Wav2FeatHubert.wav2feat`) over a whole 16 kHz clip:
    `num_frames(len(audio))` frames, (n, dim) float32. 80 samples earlier than the online
    path (see the module doc)."""
    framing = DittoFraming(chunksize)
    audio = as_float_pcm(audio)
    count = num_frames(audio.size)
    if count == 0:
        return np.zeros((0, FEATURE_DIM), dtype=np.float32)
    padded = np.concatenate(
        [
            np.zeros(framing.offline_lead_in_samples, np.float32),
            audio,
            np.zeros(framing.window_samples, np.float32),
        ]
    )
    frames = []
    for i in range(0, count, framing.frames_per_window):
        start = i * SAMPLES_PER_FRAME
        frames.append(framing.run_window(encoder, padded[start : start + framing.window_samples]))
    return np.concatenate(frames, axis=0)[:count]


def silence_prefill(
    encoder: Encoder,
    overlap: int = DEFAULT_OVERLAP,
    chunksize: tuple[int, int, int] = DEFAULT_CHUNKSIZE,
) -> np.ndarray:
    """The `overlap` frames Ditto's online pipeline starts its audio-feature buffer with:
    the offline path over `overlap * 640` zero samples. (overlap, dim) float32."""
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    features = offline_features(
        np.zeros(overlap * SAMPLES_PER_FRAME, np.float32), encoder, chunksize
    )
    if len(features) != overlap:  # Ditto asserts the same
        raise ValueError(f"silence pre-fill gave {len(features)} frames, not {overlap}")
    return features
