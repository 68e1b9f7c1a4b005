"""Mouth shape from speech audio, one video frame at a time.

Three stages, all cheap numpy (tens of microseconds a frame):

* `mouth_features(window, rate)` reads one frame's audio (about 33 ms) and returns `RawMouth`:
  its loudness after a noise gate and a few spectral measures (a rough F1 and F2, the share of
  energy above 3 kHz), plus the instantaneous mouth *target* they map to. Stateless.
* `MouthSmoother` turns the per-frame targets into motion: each channel opens faster than it
  closes, the jaw trails the lips, idle frames relax the mouth shut without a jump.
* `MouthTrack` glues both to the runtime's `FrameRequest`s: what the renderer calls.

Why not a loudness meter: loudness alone opens the mouth as wide for "ee" as for "ah", keeps it
open on a hissing "s" and rounds nothing. The vowel's first formant (F1) rises as the jaw
opens, its second (F2) rises as the lips spread and falls as they round, and fricatives put
their energy above 3 kHz with the teeth nearly together. A 33 ms window at 16 kHz resolves
those well enough to pick the broad mouth posture, which is all a mesh warp can show.

Known limits (measured on the piper voice): American English fronts "oo" after t, d, n, y
("too", "new", "you") to an F2 of 2 kHz and more, where its spectrum is an "ee"'s: those read as
spread, not rounded (back "o", "oa", "or", "oo" after labials do round). Nasal murmur ("m", "n")
is voiced and fairly loud, so an "m" leaves the lips a little open rather than shut. Telling
those apart needs phoneme recognition, not a spectrum.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..base import FrameRequest

__all__ = [
    "CLOSED",
    "MouthShape",
    "MouthSmoother",
    "MouthTrack",
    "MouthTuning",
    "RawMouth",
    "mouth_features",
]


@dataclass(frozen=True)
class MouthShape:
    """The mouth posture of one video frame."""

    openness: float = 0.0
    """Lip opening: 0 closed .. 1 wide open."""
    width: float = 0.0
    """Mouth corners: -1 pursed/narrow .. 0 neutral .. +1 spread (as in "ee", or teeth showing)."""
    rounding: float = 0.0
    """Lip rounding/protrusion: 0 none .. 1 fully rounded (as in "oo", "o")."""
    jaw: float = 0.0
    """Jaw drop: 0 closed .. 1 open; follows `openness`, a little behind it."""
    press: float = 0.0
    """Lips pressed together: 0 none .. 1 a bilabial closure ("m", "b", "p") in speech."""


CLOSED = MouthShape()


@dataclass(frozen=True)
class MouthTuning:
    """The numbers behind the audio → mouth mapping (see `mouth_features`)."""

    gate_db: float = -56.0
    """Frame RMS (dBFS) at or below which the frame counts as silence. TTS gaps measure -60 to
    -90 dBFS and breath/room noise sits around -60; quiet speech (20 dB down) keeps its vowels
    near -32 dBFS, well above the gate."""
    ref_db: float = -14.0
    """Frame RMS of a loud vowel in peak-normalised TTS speech (piper: vowels -10 to -16 dBFS):
    the level at which loudness reaches 1."""
    level_gamma: float = 1.2
    """Expands the dB scale a little so weak consonants open less than vowels."""
    closure_level: float = 0.08
    """Loudness under which a speech frame is a closure (stop, pause): the lips close fast."""
    f1_closed_hz: float = 320.0
    """F1 estimate at or below which the vowel is close ("ee", "oo"): least open."""
    f1_open_hz: float = 680.0
    """F1 estimate at or above which the vowel is open ("ah"): most open."""
    min_shape_openness: float = 0.4
    """Share of the loudness-driven opening that a close vowel still gets."""
    f2_back_hz: float = 1000.0
    """F2 estimate at or below which a vowel is fully back (rounded in English: "oo", "o")."""
    f2_round_hz: float = 1350.0
    """F2 estimate above which a vowel gets no rounding at all."""
    f2_spread_hz: float = 1450.0
    """F2 estimate above which the lips start to spread..."""
    f2_front_hz: float = 2000.0
    """...and at or above which they are fully spread (a front vowel: "ee", "ay")."""
    f1_round_full_hz: float = 420.0
    """F1 at or below which a back vowel is fully rounded ("oo" ~300 Hz, "o" ~450 Hz)..."""
    f1_round_none_hz: float = 720.0
    """...and at or above which it is not rounded at all ("ah" ~730 Hz)."""
    hiss_start: float = 0.3
    """Share of energy above 3 kHz where a frame starts to count as a fricative..."""
    hiss_full: float = 0.7
    """...and where it fully is one ("s", "sh", "f", "th")."""
    hiss_openness: float = 0.25
    """What is left of the opening on a full fricative (teeth nearly together)."""
    hiss_width: float = 0.3
    """Width on a full fricative: slightly spread, teeth showing."""


DEFAULT_TUNING = MouthTuning()

# Spectral bands (Hz). Voiced speech below 80 Hz is hum, above 8 kHz there is nothing at 16 kHz.
_TOTAL_BAND = (80.0, 8000.0)
_F1_BAND = (200.0, 1000.0)  # the first formant lives here for every vowel and speaker
_F2_BAND = (900.0, 3000.0)  # the second formant of all but the backmost vowels, and F3
_HISS_BAND = (3000.0, 8000.0)  # frication noise; vowels put a few percent at most up here


@dataclass(frozen=True)
class RawMouth:
    """What one frame's audio says about the mouth, before any smoothing."""

    rms_db: float
    """RMS of the window in dBFS (-120 for digital silence)."""
    level: float
    """Loudness 0..1 after the noise gate (0 at or below `gate_db`, 1 at `ref_db`)."""
    f1_hz: float
    """Power-weighted centroid of 200–1000 Hz: a rough first formant."""
    f2_hz: float
    """Power-weighted centroid of 900–3000 Hz: a rough second formant."""
    hiss: float
    """Share of the energy above 3 kHz (0..1)."""
    openness: float
    """Target lip opening 0..1."""
    width: float
    """Target width -1..1."""
    rounding: float
    """Target rounding 0..1."""
    closure: bool
    """A speech frame too quiet to be anything but a closure: close the lips quickly."""


_SILENT = RawMouth(
    rms_db=-120.0,
    level=0.0,
    f1_hz=0.0,
    f2_hz=0.0,
    hiss=0.0,
    openness=0.0,
    width=0.0,
    rounding=0.0,
    closure=True,
)


@dataclass(frozen=True)
class _Plan:
    """Per (window length, rate): the Hann taper, FFT size and band bins, computed once."""

    hann: np.ndarray
    nfft: int
    total: slice
    f1: slice
    f1_hz: np.ndarray
    f2: slice
    f2_hz: np.ndarray
    hiss: slice


@lru_cache(maxsize=16)
def _plan(n: int, sample_rate: int) -> _Plan:
    nfft = 512
    while nfft < n:
        nfft *= 2
    bin_hz = sample_rate / nfft
    top = nfft // 2 + 1

    def band(lo: float, hi: float) -> slice:
        return slice(min(top, math.ceil(lo / bin_hz)), min(top, math.floor(hi / bin_hz) + 1))

    f1, f2 = band(*_F1_BAND), band(*_F2_BAND)
    freqs = np.arange(top, dtype=np.float64) * bin_hz
    # periodic Hann, so that the taper of 533 and 534 samples differs by nothing but length
    hann = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)
    return _Plan(
        hann=hann,
        nfft=nfft,
        total=band(*_TOTAL_BAND),
        f1=f1,
        f1_hz=freqs[f1],
        f2=f2,
        f2_hz=freqs[f2],
        hiss=band(*_HISS_BAND),
    )


def _ramp(x: float, lo: float, hi: float) -> float:
    """0 at lo, 1 at hi, linear between, clamped (hi < lo gives a falling ramp)."""
    t = (x - lo) / (hi - lo)
    return 0.0 if t <= 0.0 else 1.0 if t >= 1.0 else t


def mouth_features(
    window: np.ndarray, sample_rate: int, tuning: MouthTuning = DEFAULT_TUNING
) -> RawMouth:
    """Read one frame's audio (float mono in [-1, 1]) into loudness, spectral shape and the
    mouth target they imply. Stateless; an empty window reads as silence.

    The mapping:

    * loudness: RMS in dBFS mapped linearly from `gate_db` (0) to `ref_db` (1), then raised to
      `level_gamma`. Everything under the gate, silence and breath noise, is exactly 0.
    * openness = loudness × vowel height × (less on a fricative). Vowel height comes from F1:
      it rises as the jaw drops (~300 Hz for "ee"/"oo", ~700 Hz for "ah"), so a close vowel
      keeps `min_shape_openness` of the opening and an open one all of it.
    * rounding: F2 low (back vowel) AND F1 not high. "oo" and "o" have F2 under ~1 kHz and are
      rounded in English; "ah" also has a lowish F2 but a high F1, and is not rounded.
    * width = spread − rounding, spread rising with F2 from `f2_spread_hz` to `f2_front_hz`
      ("ee" has F2 ≈ 2.3 kHz and spread lips).
    * fricatives ("s", "sh", "f"): most of the energy above 3 kHz. The teeth come nearly
      together (openness × `hiss_openness`), the lips go slightly spread (`hiss_width`) and the
      formant estimates, meaningless in noise, are faded out.
    * width and rounding fade out with loudness too, so near-silence is a neutral mouth.
    """
    x = np.asarray(window, dtype=np.float32).reshape(-1)
    n = x.size
    if n < 32:
        return _SILENT
    x = x - x.mean()  # DC would count as loudness and land in no band
    mean_square = float(np.dot(x, x)) / n
    if not math.isfinite(mean_square) or mean_square < 1e-12:
        return _SILENT
    rms_db = 10.0 * math.log10(mean_square)
    level = _ramp(rms_db, tuning.gate_db, tuning.ref_db) ** tuning.level_gamma

    plan = _plan(n, int(sample_rate))
    spectrum = np.fft.rfft(x * plan.hann, plan.nfft)
    power = spectrum.real * spectrum.real + spectrum.imag * spectrum.imag
    total = float(power[plan.total].sum()) + 1e-20
    p1 = power[plan.f1]
    p2 = power[plan.f2]
    e1 = float(p1.sum())
    e2 = float(p2.sum())
    f1_hz = float(np.dot(p1, plan.f1_hz)) / e1 if e1 > 0.0 else 0.0
    f2_hz = float(np.dot(p2, plan.f2_hz)) / e2 if e2 > 0.0 else 0.0
    hiss = min(1.0, float(power[plan.hiss].sum()) / total)

    fricative = _ramp(hiss, tuning.hiss_start, tuning.hiss_full)
    voiced = 1.0 - fricative
    height = _ramp(f1_hz, tuning.f1_closed_hz, tuning.f1_open_hz)  # 0 close .. 1 open vowel
    back = _ramp(f2_hz, tuning.f2_round_hz, tuning.f2_back_hz)  # 1 at F2 <= f2_back_hz
    spread = _ramp(f2_hz, tuning.f2_spread_hz, tuning.f2_front_hz)
    # rounded = back (low F2) and not open (F1 not high): "oo", "o" and "aw" round, "ah" (F2
    # as low as "o"'s, but F1 ~730 Hz) does not; a central "uh" (F1 ~500, F2 ~1.2 kHz) gets
    # some, which reads as a relaxed, slightly narrowed mouth
    vowel_rounding = back * _ramp(f1_hz, tuning.f1_round_none_hz, tuning.f1_round_full_hz)
    # the spectral shape is only trusted once the frame is clearly more than a whisper
    presence = _ramp(level, 0.0, 0.25)

    shape_open = tuning.min_shape_openness + (1.0 - tuning.min_shape_openness) * height
    openness = level * shape_open * (1.0 - (1.0 - tuning.hiss_openness) * fricative)
    rounding = presence * voiced * vowel_rounding
    width = presence * (voiced * (spread - vowel_rounding) + fricative * tuning.hiss_width)
    return RawMouth(
        rms_db=rms_db,
        level=level,
        f1_hz=f1_hz,
        f2_hz=f2_hz,
        hiss=hiss,
        openness=min(1.0, openness),
        width=max(-1.0, min(1.0, width)),
        rounding=min(1.0, rounding),
        closure=level < tuning.closure_level,
    )


def _alpha(time_ms: float, fps: float) -> float:
    """Per-frame coefficient of a one-pole filter with time constant `time_ms`."""
    if time_ms <= 0.0:
        return 1.0
    return 1.0 - math.exp(-1000.0 / (fps * time_ms))


def _approach(value: float, target: float, alpha: float, max_step: float) -> float:
    """One smoothing step toward `target`.

    Aims a little past the target and stops on it, so the tail of the exponential ends in
    finite time (an idle mouth reaches exactly 0 instead of hovering at 0.01), and never moves
    more than `max_step` a frame.
    """
    delta = target - value
    if delta == 0.0:
        return value
    aim = delta + math.copysign(_SETTLE, delta)
    step = alpha * aim
    if abs(step) > max_step:
        step = math.copysign(max_step, step)
    if abs(step) >= abs(delta):
        return target
    return value + step


_SETTLE = 0.03
"""How far past the target the smoother aims (see `_approach`)."""


class MouthSmoother:
    """Per-channel attack/release smoothing of `RawMouth` targets into `MouthShape`s.

    * Opening (and any channel moving away from neutral) uses `attack_ms`, closing (moving back
      toward neutral) the slower `release_ms`: a speaker's lips part quickly and settle slowly.
    * A closure inside speech (a stop like "p", "t", a pause) closes the lips with `closure_ms`,
      faster than a release: the lips have to meet before the burst.
    * Width and rounding are posture, read from noisier spectral estimates: they move
      `shape_slowdown` times slower than the opening.
    * The jaw follows the smoothed lip opening through its own filter (`jaw_lag_ms`), so it
      trails the lips slightly and never leads them.
    * `step(None)` is an idle frame: every channel relaxes to closed/neutral with the release
      dynamics, from wherever it is.
    * No channel moves more than `max_rate` (full range per second) in one frame.
    """

    def __init__(
        self,
        fps: float = 30.0,
        attack_ms: float = 50.0,
        release_ms: float = 90.0,
        closure_ms: float = 45.0,
        jaw_lag_ms: float = 35.0,
        shape_slowdown: float = 1.25,
        max_rate: float = 8.0,
    ) -> None:
        if fps <= 0:
            raise ValueError("fps must be positive")
        self.fps = float(fps)
        self._attack = _alpha(attack_ms, fps)
        self._release = _alpha(release_ms, fps)
        self._closure = _alpha(closure_ms, fps)
        self._shape_attack = _alpha(attack_ms * shape_slowdown, fps)
        self._shape_release = _alpha(release_ms * shape_slowdown, fps)
        self._jaw = _alpha(jaw_lag_ms, fps)
        self._max_step = max_rate / fps
        self._shape = CLOSED
        self._target: RawMouth | None = None
        # A closure presses the lips only briefly (a stop, m/b/p): a longer pause relaxes.
        self._press_frames = max(1, round(0.15 * fps))
        self._closure_run = 0

    @property
    def shape(self) -> MouthShape:
        """The pose returned by the last `step` (closed before the first)."""
        return self._shape

    @property
    def target(self) -> RawMouth | None:
        """What the last `step` moved toward (None: idle, or forgotten by `reset`)."""
        return self._target

    def step(self, raw: RawMouth | None) -> MouthShape:
        """Advance one video frame toward `raw`'s target (None: an idle frame, relax)."""
        self._target = raw
        prev = self._shape
        if raw is None:
            t_open, t_width, t_round, closing = 0.0, 0.0, 0.0, self._release
        else:
            t_open, t_width, t_round = raw.openness, raw.width, raw.rounding
            closing = self._closure if raw.closure else self._release
        m = self._max_step
        openness = _approach(
            prev.openness, t_open, self._attack if t_open > prev.openness else closing, m
        )
        width = _approach(
            prev.width,
            t_width,
            self._shape_attack if abs(t_width) > abs(prev.width) else self._shape_release,
            m,
        )
        rounding = _approach(
            prev.rounding,
            t_round,
            self._shape_attack if t_round > prev.rounding else self._shape_release,
            m,
        )
        jaw = _approach(prev.jaw, openness, self._jaw, m)
        if raw is not None and raw.closure:
            # Only a closure that follows an opening is a bilabial/stop, not a silent start.
            if self._closure_run > 0 or prev.openness > 0.08:
                self._closure_run += 1
        else:
            self._closure_run = 0
        t_press = 1.0 if 0 < self._closure_run <= self._press_frames else 0.0
        press = _approach(
            prev.press, t_press, self._closure if t_press > prev.press else self._attack, m
        )
        self._shape = MouthShape(
            openness=openness, width=width, rounding=rounding, jaw=jaw, press=press
        )
        return self._shape

    def reset(self) -> None:
        """After an interruption: forget the target but keep the pose, so nothing snaps. The
        next steps move from where the mouth is (idle frames relax it shut)."""
        self._target = None

    def clear(self) -> None:
        """Start over closed (a new session, not an interruption: this one does jump)."""
        self._target = None
        self._closure_run = 0
        self._shape = CLOSED


class MouthTrack:
    """FrameRequests in frame order → one `MouthShape` each: what the renderer calls.

    Speech frames are read from `request.own_window()`, idle frames step the smoother with
    None. Each new request is one frame on screen, one step of the dynamics: a jump in the
    index (planned frames the runtime discarded on an interruption) is not time the viewer saw
    pass, so it is not caught up. The same frame asked for again (same index as the last) gets
    the same shape back without advancing; an index that goes back is a new timeline and
    steps on as usual.
    """

    def __init__(
        self,
        fps: float = 30.0,
        sample_rate: int = 16000,
        tuning: MouthTuning = DEFAULT_TUNING,
        lead_s: float = 0.0,
        **smoother_options: float,
    ) -> None:
        self.sample_rate = int(sample_rate)
        self.lead = max(0, round(lead_s * sample_rate))
        """Samples ahead of its own window that a frame's mouth is read from (the smoother's
        attack takes about a frame: reading early makes the opening meet the sound)."""
        self.tuning = tuning
        self.smoother = MouthSmoother(fps, **smoother_options)
        self._last_index: int | None = None
        self.last_raw: RawMouth | None = None
        """Features of the last speech frame stepped (None after an idle one)."""

    def step(self, request: FrameRequest) -> MouthShape:
        if request.index == self._last_index:
            return self.smoother.shape
        raw = (
            mouth_features(self._window(request), self.sample_rate, self.tuning)
            if request.is_speech
            else None
        )
        self._last_index = request.index
        self.last_raw = raw
        return self.smoother.step(raw)

    def _window(self, request: FrameRequest) -> np.ndarray:
        """The frame's own window moved `lead` samples later, as far as the look-ahead the
        request carries allows (none: its own window)."""
        audio = request.audio
        assert audio is not None
        start = request.window_offset
        end = start + request.window_length
        shift = max(0, min(self.lead, audio.size - end))
        return audio[start + shift : end + shift]

    def __call__(self, requests: Iterable[FrameRequest]) -> list[MouthShape]:
        return [self.step(r) for r in requests]

    def reset(self) -> None:
        """After an interruption: no snap, the next frames move on from the current pose."""
        self.smoother.reset()
        self.last_raw = None
