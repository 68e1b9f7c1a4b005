"""Wav2Lip's mel features (its `audio.py` + `hparams.py`), in numpy, whole-utterance and streaming.

16 kHz mono -> pre-emphasis 0.97 -> STFT (n_fft 800, hop 200, Hann window 800, centred with
reflect padding) -> magnitude -> 80 Slaney mel bands 55-7600 Hz (Slaney area normalisation) ->
20*log10(max(1e-5, x)) - 20 dB -> symmetric normalisation to [-4, 4], clipped. 80 columns per
second; column c is centred on sample 200*c.

`StreamingMel` yields exactly the columns `melspectrogram` gives for the whole utterance: both run
the same per-column code on the same (pre-emphasised, reflect-padded) samples; the stream only
emits a column once every sample under its window has arrived.
"""

from __future__ import annotations

import math

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 800
HOP = 200
WIN = 800
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS_VALUE = 4.0
MEL_STEP_COLUMNS = 16
"""Mel columns per video frame window (16 x 12.5 ms = 200 ms)."""
COLUMNS_PER_SECOND = SAMPLE_RATE / HOP  # 80

_PAD = N_FFT // 2


# --- Slaney mel scale (librosa's default, htk=False) ---------------------------------------

_F_SP = 200.0 / 3  # Hz per mel in the linear part
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15
_LOGSTEP = math.log(6.4) / 27.0  # 27 mels per factor 6.4 above 1 kHz


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    logarithmic = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, logarithmic, linear)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _F_SP
    logarithmic = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, logarithmic, linear)


def mel_filterbank(
    sr: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    fmin: float = FMIN,
    fmax: float = FMAX,
) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) triangular filters on the Slaney mel scale, each scaled to unit
    area in Hz (height 2 / bandwidth), as librosa.filters.mel(norm="slaney") builds them."""
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bin_hz = np.linspace(0.0, sr / 2, 1 + n_fft // 2)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz[None, :] - lower) / (centre - lower)
    falling = (upper - bin_hz[None, :]) / (upper - centre)
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    return triangles * (2.0 / (upper - lower))


_MEL_BASIS = mel_filterbank()
_WINDOW = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)  # periodic Hann (fftbins=True)


# --- the per-column computation both paths share --------------------------------------------


def to_float_audio(wav: np.ndarray) -> np.ndarray:
    """int16 PCM or float audio -> float64 in [-1, 1] (int16 scaled by 1/32768)."""
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {wav.shape}")
    if wav.dtype == np.int16:
        return wav.astype(np.float64) / 32768.0
    if not np.issubdtype(wav.dtype, np.floating):
        raise ValueError(f"audio must be int16 or float, got {wav.dtype}")
    return wav.astype(np.float64)


def _columns(padded: np.ndarray, count: int) -> np.ndarray:
    """Mel columns of the first `count` STFT frames of a padded, pre-emphasised signal."""
    if count <= 0:
        return np.zeros((N_MELS, 0), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(padded[: (count - 1) * HOP + N_FFT], N_FFT)
    magnitude = np.abs(np.fft.rfft(frames[::HOP] * _WINDOW, axis=1))  # (count, 401)
    mel = _MEL_BASIS @ magnitude.T
    db = 20.0 * np.log10(np.maximum(10 ** (MIN_LEVEL_DB / 20), mel)) - REF_LEVEL_DB
    scaled = 2 * MAX_ABS_VALUE * (db - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS_VALUE
    return np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)


def _preemphasise(wav: np.ndarray, previous: float) -> np.ndarray:
    """y[n] = x[n] - 0.97 x[n-1], with x[-1] = `previous` (0 at an utterance start)."""
    out = wav.copy()
    out[0] -= PREEMPHASIS * previous
    out[1:] -= PREEMPHASIS * wav[:-1]
    return out


def column_count(samples: int) -> int:
    """Columns of an utterance of `samples` samples (librosa's centred STFT)."""
    return 1 + samples // HOP


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """(80, 1 + len(wav) // 200) float32 mel of a whole 16 kHz utterance."""
    x = to_float_audio(wav)
    if x.size == 0:
        return np.zeros((N_MELS, 0), dtype=np.float32)
    return _whole(_preemphasise(x, 0.0))


def _whole(emphasised: np.ndarray) -> np.ndarray:
    padded = np.pad(emphasised, _PAD, mode="reflect")
    return _columns(padded, column_count(emphasised.size))


class StreamingMel:
    """Mel columns as audio streams in: `push` returns the columns that no later audio can
    change, `finish` the rest (which use the reflect padding at the end). One utterance per
    instance; `reset` starts another."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._received = 0
        self._last_sample = 0.0
        self._emitted = 0
        self._signal = np.zeros(0)  # pre-emphasised samples, until the left padding is known
        self._padded: np.ndarray | None = None  # padded signal from column `_emitted` on
        self._finished = False

    @property
    def columns_emitted(self) -> int:
        return self._emitted

    @property
    def samples_received(self) -> int:
        return self._received

    def push(self, chunk: np.ndarray) -> np.ndarray:
        if self._finished:
            raise RuntimeError("StreamingMel.push after finish(); call reset() first")
        x = to_float_audio(chunk)
        if x.size == 0:
            return np.zeros((N_MELS, 0), dtype=np.float32)
        emphasised = _preemphasise(x, self._last_sample)
        self._last_sample = float(x[-1])
        self._received += x.size
        if self._padded is None:
            self._signal = np.concatenate([self._signal, emphasised])
            # The left reflect padding mirrors samples 1..400, so it is known from 401 on.
            if self._signal.size <= _PAD:
                return np.zeros((N_MELS, 0), dtype=np.float32)
            self._padded = np.concatenate([self._signal[_PAD:0:-1], self._signal])
            self._signal = np.zeros(0)
        else:
            self._padded = np.concatenate([self._padded, emphasised])
        # Column c needs samples up to 200*c + 399: final once 200*c + 400 have arrived.
        ready = max(0, (self._received - _PAD) // HOP + 1) - self._emitted
        return self._take(ready)

    def finish(self) -> np.ndarray:
        """The remaining columns, up to `column_count(samples_received)`."""
        if self._finished:
            return np.zeros((N_MELS, 0), dtype=np.float32)
        self._finished = True
        if self._padded is None:  # under 401 samples: nothing emitted yet, do it whole
            if self._signal.size == 0:
                return np.zeros((N_MELS, 0), dtype=np.float32)
            columns = _whole(self._signal)
            self._signal = np.zeros(0)
            self._emitted = columns.shape[1]
            return columns
        tail = self._padded[-_PAD - 1 : -1][::-1]  # mirrors the last 400 samples before the end
        self._padded = np.concatenate([self._padded, tail])
        return self._take(column_count(self._received) - self._emitted)

    def _take(self, count: int) -> np.ndarray:
        assert self._padded is not None
        columns = _columns(self._padded, count)
        if count > 0:
            self._padded = self._padded[count * HOP :]
            self._emitted += count
        return columns


# --- frame <-> window indexing ----------------------------------------------------------------


def window_start(frame: int, fps: float) -> int:
    """First mel column of video frame `frame`'s window: int(frame * 80 / fps) (reference)."""
    return int(frame * 80 / fps)


def mel_window(mel: np.ndarray, frame: int, fps: float) -> np.ndarray:
    """(80, 16) window of frame `frame`. Past the end the reference uses the last 16 columns;
    an utterance shorter than 16 columns is padded on the right with -4 (silence)."""
    columns = mel.shape[1]
    if columns < MEL_STEP_COLUMNS:
        pad = np.full((mel.shape[0], MEL_STEP_COLUMNS - columns), -MAX_ABS_VALUE, mel.dtype)
        return np.concatenate([mel, pad], axis=1)
    start = min(window_start(frame, fps), columns - MEL_STEP_COLUMNS)
    return mel[:, start : start + MEL_STEP_COLUMNS]


def samples_needed(frame: int, fps: float) -> int:
    """Samples of the utterance that must have arrived before frame `frame`'s window is final
    (its last column's STFT window must be complete)."""
    last_column = window_start(frame, fps) + MEL_STEP_COLUMNS - 1
    return last_column * HOP + _PAD


def lookahead_seconds(fps: float) -> float:
    """Audio needed past the end of a frame's own 1/fps slot, for any frame at `fps`: the
    window spans 200 ms from about the frame's start, plus half an STFT window (25 ms)."""
    return ((MEL_STEP_COLUMNS - 1) * HOP + _PAD) / SAMPLE_RATE - 1.0 / fps
