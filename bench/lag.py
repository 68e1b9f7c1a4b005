"""The one lag search both viewers use: which shift of the received audio's loudness best
matches a per-picture signal (the testcard's stamped loudness for `observer`, the mouth's
opening for the independent `viewer`)."""

from __future__ import annotations

import numpy as np

SILENCE_DB = -60.0


def best_lag(
    frame_times: np.ndarray,
    frame_signal: np.ndarray,
    audio_starts: np.ndarray,
    audio_db: np.ndarray,
    *,
    period: float,
    max_lag_ms: float,
) -> tuple[float, float]:
    """(lag in ms, Pearson correlation) of the best lag L, 1 ms steps within +-max_lag_ms:
    the one for which the loudness of the audio heard during [t - L, t - L + period) matches
    the signal of the picture at t best. Audio chunks are given by their start times (sorted)
    and loudness in dB; loudness is averaged as power. Positive L: pictures come after their
    sound."""
    power = 10 ** (np.clip(audio_db, SILENCE_DB, 0.0) / 10)
    cumulative = np.concatenate([[0.0], np.cumsum(power)])

    def loudness_db(window_starts: np.ndarray) -> np.ndarray:
        lo = np.searchsorted(audio_starts, window_starts)
        hi = np.searchsorted(audio_starts, window_starts + period)
        count = np.maximum(hi - lo, 1)
        mean = (cumulative[hi] - cumulative[lo]) / count
        return np.clip(10 * np.log10(np.maximum(mean, 1e-12)), SILENCE_DB, 0.0)

    lags = np.arange(-max_lag_ms, max_lag_ms + 0.5, 1.0) / 1000.0
    scores = np.full(len(lags), -1.0)
    for i, lag in enumerate(lags):
        heard = loudness_db(frame_times - lag)
        if np.std(heard) > 1e-6:
            scores[i] = float(np.corrcoef(heard, frame_signal)[0, 1])
    best = int(np.argmax(scores))
    return float(lags[best] * 1000.0), float(scores[best])
