"""`AudioFeatureStream`: Ditto's online audio framing, incremental.

Push 16 kHz PCM in chunks of any length; each push returns the 25 fps HuBERT feature frames
that became computable (a window is run as soon as its last sample has arrived). `flush()`
ends an utterance the way Ditto's online loop ends a clip (the last windows zero-padded);
`reset()` drops everything buffered (an interruption). After either, the next push starts a
new utterance with Ditto's lead-in of zeros again.

The frames of one utterance are exactly `online_features(whole utterance)` (framing.py),
whatever the chunking: the same windows, run on the same samples."""

from __future__ import annotations

import numpy as np

from .framing import (
    DEFAULT_CHUNKSIZE,
    DEFAULT_OVERLAP,
    FEATURE_DIM,
    SAMPLES_PER_FRAME,
    DittoFraming,
    Encoder,
    as_float_pcm,
    num_frames,
    silence_prefill,
)


class AudioFeatureStream:
    """Ditto's online audio-feature front end for one speaker, fed incrementally.

    encoder: one window (1-D float32, `window_samples` long) -> HuBERT features
      (T, dim) or (1, T, dim); e.g. `HubertOnnx` (hubert.py).
    chunksize: Ditto's (left-context, new, look-ahead) frames, (3, 5, 2) by default.

    Not thread-safe: one producer pushes, flushes and resets."""

    def __init__(
        self, encoder: Encoder, chunksize: tuple[int, int, int] = DEFAULT_CHUNKSIZE
    ) -> None:
        self.encoder = encoder
        self.framing = DittoFraming(chunksize)
        self._prefill: dict[int, np.ndarray] = {}
        self._dim: int | None = None
        self.reset()

    # -- state --------------------------------------------------------------------------------

    def reset(self) -> None:
        """Drop all buffered audio and start a new utterance (nothing is emitted)."""
        framing = self.framing
        # audio from the start of the next window on, lead-in zeros included
        self._pending = np.zeros(framing.lead_in_samples, dtype=np.float32)
        self._received = 0
        self._emitted = 0

    @property
    def samples_received(self) -> int:
        """Samples pushed in the current utterance."""
        return self._received

    @property
    def frames_emitted(self) -> int:
        """Feature frames returned in the current utterance."""
        return self._emitted

    @property
    def buffered_samples(self) -> int:
        """Samples held for windows not yet run (lead-in zeros included)."""
        return int(self._pending.size)

    @property
    def max_lookahead_samples(self) -> int:
        """Audio that must have arrived past a frame's end before the frame is emitted, at
        most (the first frame of a window): 3920 samples, 245 ms; the last frame of a window
        needs `framing.lookahead_samples` (1360, 85 ms). Chunking adds its own delay."""
        framing = self.framing
        return framing.window_samples - framing.lead_in_samples - SAMPLES_PER_FRAME

    # -- feeding ------------------------------------------------------------------------------

    def push(self, pcm: np.ndarray) -> np.ndarray:
        """Append 16 kHz mono PCM (float32 in [-1, 1], or int16) and return the frames now
        computable: (n, dim) float32, n a multiple of chunksize[1] (often 0)."""
        audio = as_float_pcm(pcm)
        if audio.size == 0:
            return self._empty()
        self._received += audio.size
        self._pending = np.concatenate([self._pending, audio])
        return self._run_full_windows()

    def flush(self, *, trim: bool = True) -> np.ndarray:
        """End the utterance: run the remaining windows zero-padded, as Ditto's online loop
        does at the end of a clip, return their frames and start a new utterance.

        trim: stop at `num_frames(samples_received)` frames in all, the utterance's own
        length at 25 fps (the offline count). False: every frame Ditto's online loop makes,
        `5 * ceil((samples + 1920) / 3200)` in all: 2 to 7 frames past the end of the audio
        (features of the zero padding).
        Nothing pushed since the last flush/reset: no frames."""
        framing = self.framing
        if self._received == 0:
            self.reset()
            return self._empty()
        if trim:
            total = num_frames(self._received)
        else:
            total = framing.online_frame_count(self._received)
        out = []
        while self._emitted < total:
            window = self._pending[: framing.window_samples]
            if window.size < framing.window_samples:
                window = np.pad(window, (0, framing.window_samples - window.size))
            frames = framing.run_window(self.encoder, window)
            self._remember_dim(frames)
            frames = frames[: total - self._emitted]
            out.append(frames)
            self._emitted += frames.shape[0]
            self._pending = self._pending[framing.hop_samples :]
        self.reset()
        return np.concatenate(out, axis=0) if out else self._empty()

    def silence_prefill(self, overlap: int = DEFAULT_OVERLAP) -> np.ndarray:
        """Ditto's start of the audio-to-motion feature buffer: `overlap` frames of silence
        features (framing.silence_prefill), computed once per `overlap` and cached."""
        if overlap not in self._prefill:
            features = silence_prefill(self.encoder, overlap, self.framing.chunksize)
            self._prefill[overlap] = features
            self._remember_dim(features)
        return self._prefill[overlap].copy()

    # -- internals ----------------------------------------------------------------------------

    def _run_full_windows(self) -> np.ndarray:
        framing = self.framing
        out = []
        while self._pending.size >= framing.window_samples:
            frames = framing.run_window(self.encoder, self._pending[: framing.window_samples])
            self._remember_dim(frames)
            out.append(frames)
            self._emitted += frames.shape[0]
            self._pending = self._pending[framing.hop_samples :]
        if not out:
            return self._empty()
        # keep the buffer from pinning the (possibly large) arrays it was sliced from
        self._pending = self._pending.copy()
        return np.concatenate(out, axis=0)

    def _remember_dim(self, frames: np.ndarray) -> None:
        if frames.ndim == 2 and frames.shape[0]:
            self._dim = int(frames.shape[1])

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self._dim or FEATURE_DIM), dtype=np.float32)
