"""MuseTalk's audio tokens, computed as an utterance's audio arrives.

MuseTalk (musetalk/utils/audio_processor.py, get_whisper_chunk) runs Whisper-tiny's encoder
over 30-second segments (WhisperFeatureExtractor's log-mel, zero-padded to 30 s) and stacks
every hidden state: 50 positions a second, `layers` (5) x 384 each. The features are padded
with 4 zero positions in front (2 x audio_padding_length_left) and, for video frame k at
`fps`, the frame's window is the 10 positions (2 x (2 + 2 + 1)) starting at
floor(k * 50 / fps) in the padded array: positions 2k - 4 .. 2k + 5 at 25 fps, audio from
80 ms before the frame's start to 120 ms after it. The window is flattened time-major to
10 x layers tokens ('b c h w -> b (c h) w': 50 x 384 for tiny).

Streaming (`UtteranceFeatures`): the utterance's audio is kept (at most the last 30 s) and,
for a batch of frames, the encoder runs once over the audio heard so far from
`LEFT_CONTEXT_S` before the earliest position needed (aligned to the 20 ms position grid),
padded to 30 s as MuseTalk pads its last segment. Positions past the audio heard are zero, as
MuseTalk's trim-and-pad makes the positions past an utterance's end. The renderer's lookahead
makes sure the positions a frame needs have been heard (plus the encoder's own reach of a few
milliseconds).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

SAMPLE_RATE = 16000
FEATURES_PER_SECOND = 50
SAMPLES_PER_FEATURE = SAMPLE_RATE // FEATURES_PER_SECOND
PADDING_LEFT = 2
PADDING_RIGHT = 2
WINDOW = 2 * (PADDING_LEFT + PADDING_RIGHT + 1)
"""Feature positions per frame (10)."""
LEFT_CONTEXT_S = 2.0
"""Audio before the earliest position needed that the encoder also sees."""
SEGMENT_S = 30.0
_RECEPTIVE_S = 0.04
"""How far past a position's own 20 ms the encoder reads (STFT half window, two convs)."""


def lookahead_seconds(fps: float) -> float:
    """Audio needed past the end of a frame's own 1/fps slot: the window reaches 120 ms past
    the frame's start (at 25 fps), plus the encoder's own reach."""
    last = WINDOW - math.ceil(FEATURES_PER_SECOND / fps) * PADDING_LEFT  # past the start
    return max(0.0, last / FEATURES_PER_SECOND + _RECEPTIVE_S - 1.0 / fps)


def window_start(frame: int, fps: float) -> int:
    """The first feature position (unpadded; may be negative) of utterance frame `frame`."""
    padding = math.ceil(FEATURES_PER_SECOND / fps) * PADDING_LEFT
    return math.floor(frame * FEATURES_PER_SECOND / fps) - padding


class FeatureExtractor:
    """WhisperFeatureExtractor's log-mel with Whisper's defaults (80 bins, 25 ms window, 10 ms
    hop, 30 s padding): what MuseTalk's AutoFeatureExtractor loads from whisper-tiny.

    The extractor pads the audio with zeros to 30 s before its STFT; the padding's log-mel is
    then the floor Whisper clips to (the segment's maximum - 8, scaled: max - 2 after
    `(x + 4) / 4`). So the STFT runs over the audio only and the rest of the 3000 frames is
    filled with that floor: the same numbers but at the audio's last frame (a few ms), for
    a fraction of the work on a short window."""

    def __init__(self, mel_bins: int = 80, frames: int = 3000) -> None:
        from transformers import WhisperFeatureExtractor

        self._extract = WhisperFeatureExtractor(feature_size=mel_bins)
        self.frames = frames

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.size < 400:  # shorter than one STFT window: pad to it
            audio = np.pad(audio, (0, 400 - audio.size))
        out = self._extract(
            audio[: self.frames * 160],
            sampling_rate=SAMPLE_RATE,
            return_tensors="np",
            padding="longest",
        )
        mel = np.asarray(out["input_features"][0], dtype=np.float32)[:, : self.frames]
        full = np.full((mel.shape[0], self.frames), mel.max() - 2.0, dtype=np.float32)
        full[:, : mel.shape[1]] = mel
        return full


class UtteranceFeatures:
    """The audio tokens of one utterance's frames.

    `encode(mel)` is the network (MuseTalkNetworks.audio_features), `mel(audio)` the log-mel
    (FeatureExtractor); both are passed in so tests can count calls."""

    def __init__(
        self,
        segment: int,
        *,
        mel: Callable[[np.ndarray], np.ndarray],
        encode: Callable[[np.ndarray], np.ndarray],
        layers: int,
        width: int,
    ) -> None:
        self.segment = segment
        self._mel, self._encode = mel, encode
        self._layers, self._width = layers, width
        self._audio = np.zeros(0, dtype=np.float32)
        self._origin = 0  # utterance sample of _audio[0]
        self.fed = 0  # utterance samples received so far
        self.encoder_runs = 0

    def feed(self, audio: np.ndarray, start: int) -> None:
        """`audio` begins at utterance sample `start`; what was already fed is skipped, a gap
        (frames that were never rendered) is filled with silence to keep time right."""
        end = start + audio.size
        if start > self.fed:
            self._append(np.zeros(start - self.fed, dtype=np.float32))
            self.fed = start
        if end > self.fed:
            self._append(np.asarray(audio[self.fed - start :], dtype=np.float32))
            self.fed = end

    def tokens(self, frames: list[int], fps: float) -> np.ndarray:
        """(len(frames), WINDOW * layers, width) float32 tokens of utterance frames `frames`."""
        starts = [window_start(k, fps) for k in frames]
        first = max(0, min(starts))
        heard = self.fed // SAMPLES_PER_FEATURE  # positions fully heard
        context = int(LEFT_CONTEXT_S * FEATURES_PER_SECOND)
        segment = int(SEGMENT_S * FEATURES_PER_SECOND)
        begin = max(first - context, heard - segment + WINDOW, self._origin // SAMPLES_PER_FEATURE)
        begin = max(0, min(begin, first))
        features = np.zeros((0, self._layers, self._width), dtype=np.float32)
        if heard > begin and max(starts) + WINDOW > 0:
            offset = begin * SAMPLES_PER_FEATURE - self._origin
            audio = self._audio[offset : offset + segment * SAMPLES_PER_FEATURE]
            features = self._encode(self._mel(audio))[: heard - begin]
            self.encoder_runs += 1
        out = np.zeros((len(frames), WINDOW, self._layers, self._width), dtype=np.float32)
        for row, start in enumerate(starts):
            lo, hi = max(start, begin), min(start + WINDOW, begin + len(features))
            if hi > lo:
                out[row, lo - start : hi - start] = features[lo - begin : hi - begin]
        return out.reshape(len(frames), WINDOW * self._layers, self._width)

    def _append(self, samples: np.ndarray) -> None:
        self._audio = np.concatenate([self._audio, samples])
        keep = int((SEGMENT_S + LEFT_CONTEXT_S) * SAMPLE_RATE)
        if self._audio.size > 2 * keep:  # drop what no frame can need any more
            drop = (self._audio.size - keep) // SAMPLES_PER_FEATURE * SAMPLES_PER_FEATURE
            self._audio = self._audio[drop:]
            self._origin += drop
