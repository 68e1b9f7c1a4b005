"""Offline talking-video renders (`avatar_runtime.offline`): audio file + portrait -> MP4.

Every MP4 is read back with PyAV and checked as a player would see it: an H.264 and an AAC
track, as long as the audio, starting together; the lips move with loud speech and keep still
in a silent gap; the mouth opens when the sound starts (the audio track is compared with what
went in, sample for sample, so an offset between the tracks shows). Small sizes and a few
seconds of audio keep each render to about a second.

Speech is `tests.media.speech_like_audio` (voiced syllables), laid out with exact silences
here. Avatars are prepared in a cache directory of this module's own.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import renderers
from avatar_runtime import EMOTIONS
from avatar_runtime.offline import (
    OfflineRenderError,
    OfflineRenderLimits,
    RenderedVideo,
    render_talking_video,
)
from renderers import FrameRequest, RendererCapabilities
from renderers import registry as renderer_registry
from renderers.bundled import DEFAULT_PORTRAIT
from renderers.meshwarp import landmarks as lm
from renderers.meshwarp.avatar import prepare_avatar
from renderers.testcard import TestcardRenderer
from tests.media import speech_like_audio

pytestmark = pytest.mark.usefixtures("private_cache")  # avatars prepared in a cache of its own

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000
FPS = 30
SIZE = 256
LEAD_S, FIRST_S, GAP_S, SECOND_S, TAIL_S = 0.5, 1.2, 1.0, 1.0, 0.31
"""The test speech: silence, speech, a silent gap, speech, silence (4.01 s: not a whole
number of frames, so the last window is a partial one)."""


# -- media -------------------------------------------------------------------------------------


def speech(seconds: float, rate: int, scratch: Path) -> np.ndarray:
    """Syllable-like speech (float32 mono) from tests.media."""
    return speech_like_audio(scratch / f"speech-{seconds}-{rate}.wav", seconds, rate)


def silence(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros(round(seconds * rate), dtype=np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """16-bit WAV; `samples` float in [-1, 1], (n,) mono or (n, channels)."""
    pcm = np.clip(np.rint(samples * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1 if pcm.ndim == 1 else pcm.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path


def encode_audio(path: Path, samples: np.ndarray, rate: int, codec: str) -> Path:
    """Mono float samples encoded with PyAV, container from the suffix. Timestamps are set, so
    the muxer records the encoder's start-up delay and the file decodes to exactly `samples`'
    length (within a codec frame)."""
    pcm = np.clip(np.rint(samples * 32767), -32768, 32767).astype(np.int16)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        for start in range(0, pcm.size, 1024):
            chunk = pcm[None, start : start + 1024]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), "s16", "mono")
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@dataclass
class Mp4:
    """What a player gets from an MP4."""

    container_format: str
    video_codec: str
    audio_codec: str
    pixel_format: str
    width: int
    height: int
    fps: Fraction
    video_start_s: float
    audio_start_s: float
    video_duration_s: float
    audio_duration_s: float
    """From the track's header (the encoder's last-frame padding excluded)."""
    frames: list[np.ndarray]
    """HxWx3 RGB."""
    frame_times: np.ndarray
    """When each frame goes on screen (s), from its timestamp."""
    audio: np.ndarray
    """float32 mono as decoded, placed by the timestamps (sample i plays at i / audio_rate);
    it may run on by the padding of AAC's last frame."""
    audio_rate: int


def read_mp4(path: Path) -> Mp4:
    with av.open(str(path)) as container:
        assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
        video, audio = container.streams.video[0], container.streams.audio[0]
        info = dict(
            container_format=container.format.name,
            video_codec=video.codec_context.name,
            audio_codec=audio.codec_context.name,
            pixel_format=video.codec_context.pix_fmt,
            width=video.codec_context.width,
            height=video.codec_context.height,
            fps=video.average_rate,
            video_start_s=float(video.start_time * video.time_base),
            audio_start_s=float(audio.start_time * audio.time_base),
            video_duration_s=float(video.duration * video.time_base),
            audio_duration_s=float(audio.duration * audio.time_base),
            audio_rate=audio.codec_context.sample_rate,
        )
        decoded = [
            (frame.to_ndarray(format="rgb24"), frame.time) for frame in container.decode(video)
        ]
    with av.open(str(path)) as container:
        pieces = [
            (frame.to_ndarray().mean(axis=0), frame.time) for frame in container.decode(audio=0)
        ]
    rate = info["audio_rate"]
    audio = np.zeros(max(round(t * rate) + p.size for p, t in pieces), dtype=np.float32)
    for piece, time in pieces:
        start = round(time * rate)
        audio[max(start, 0) : start + piece.size] = piece[max(-start, 0) :]
    return Mp4(
        **info,
        frames=[picture for picture, _ in decoded],
        frame_times=np.array([time for _, time in decoded]),
        audio=audio,
    )


def frame_rms(audio: np.ndarray, rate: int, count: int, fps: float = FPS) -> np.ndarray:
    """The loudness of each frame's 1/fps of audio."""
    bounds = [math.floor(k * rate / fps) for k in range(count + 1)]
    return np.array(
        [
            np.sqrt(np.mean(audio[lo:hi].astype(np.float64) ** 2))
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
        ]
    )


# -- the main render ---------------------------------------------------------------------------


@dataclass
class Talk:
    samples: np.ndarray
    result: RenderedVideo
    mp4: Mp4
    progress: list[tuple[float, str]]
    seen_while_rendering: list[bool]
    """For each progress call: did `out` exist yet?"""


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> Talk:
    """Speech, a 1 s silent gap, speech, rendered by meshwarp at 256x256."""
    scratch = tmp_path_factory.mktemp("talk")
    samples = np.concatenate(
        [
            silence(LEAD_S),
            speech(FIRST_S, RATE, scratch),
            silence(GAP_S),
            speech(SECOND_S, RATE, scratch),
            silence(TAIL_S),
        ]
    )
    audio = write_wav(scratch / "talk.wav", samples, RATE)
    out = scratch / "out" / "talk.mp4"
    calls: list[tuple[float, str]] = []
    seen: list[bool] = []

    def progress(fraction: float, message: str) -> None:
        calls.append((fraction, message))
        seen.append(out.exists())

    result = render_talking_video(
        audio=audio, out=out, width=SIZE, height=SIZE, fps=FPS, progress=progress
    )
    return Talk(samples, result, read_mp4(out), calls, seen)


def test_mp4_has_h264_video_and_aac_audio_of_the_audios_length(talk: Talk) -> None:
    mp4, result = talk.mp4, talk.result
    duration = talk.samples.size / RATE
    assert mp4.container_format.startswith("mov,mp4")
    assert (mp4.video_codec, mp4.audio_codec) == ("h264", "aac")
    assert mp4.pixel_format == "yuv420p"
    assert (mp4.width, mp4.height, mp4.fps) == (SIZE, SIZE, FPS)
    assert mp4.audio_rate == RATE  # 16 kHz is an AAC rate: kept as it is
    assert mp4.video_start_s == 0.0 and mp4.audio_start_s == 0.0
    assert abs(mp4.audio_duration_s - duration) <= 1 / FPS
    assert abs(mp4.video_duration_s - mp4.audio_duration_s) <= 1 / FPS
    assert abs(len(mp4.frames) - math.ceil(duration * FPS)) <= 1
    assert result == RenderedVideo(
        path=result.path,
        duration_s=len(mp4.frames) / FPS,
        frames=len(mp4.frames),
        width=SIZE,
        height=SIZE,
        fps=float(FPS),
    )


def test_audio_track_is_the_input_audio_from_time_zero(talk: Talk) -> None:
    """Sample for sample (through AAC): same sound, no offset. An encoder delay left in the
    track, or a lost window, would shift it by at least a millisecond."""
    sent, got = talk.samples, talk.mp4.audio
    assert got.size >= sent.size
    got = got[: sent.size]
    search = 400  # 25 ms either way
    lags = np.arange(-search, search + 1)
    middle = slice(search, sent.size - search)
    scores = [
        float(np.dot(sent[middle], got[search + lag : sent.size - search + lag])) for lag in lags
    ]
    assert abs(int(lags[int(np.argmax(scores))])) <= RATE // 1000
    assert np.corrcoef(sent, got)[0, 1] > 0.9


@pytest.fixture(scope="module")
def mouth_box() -> tuple[slice, slice]:
    """Rows and columns around the lips where meshwarp draws the astronaut at 256x256."""
    points = prepare_avatar(None, SIZE, SIZE).points
    lips = points[list(lm.UPPER_LIP_INNER + lm.LOWER_LIP_INNER), :2]
    x0, y0 = np.floor(lips.min(axis=0)).astype(int) - 3
    x1, y1 = np.ceil(lips.max(axis=0)).astype(int) + 4
    return slice(y0, y1), slice(x0, x1)


def mouth_change(frames: Sequence[np.ndarray], box: tuple[slice, slice]) -> np.ndarray:
    """Mean absolute change of the mouth region from the previous frame (0 for frame 0)."""
    region = np.stack([frame[box].astype(np.float32) for frame in frames])
    change = np.abs(np.diff(region, axis=0)).mean(axis=(1, 2, 3))
    return np.concatenate([[0.0], change])


def mouth_darkening(
    frames: Sequence[np.ndarray], box: tuple[slice, slice], rest: int
) -> np.ndarray:
    """How much darker the mouth region is than in frame `rest` (lips closed): the open
    mouth shows its dark inside."""
    brightness = np.array([frame[box].mean() for frame in frames])
    return brightness[rest] - brightness


def gap_frames() -> range:
    """Frames well inside the silent gap (the lips have had 300 ms to settle)."""
    start = LEAD_S + FIRST_S + 0.3
    end = LEAD_S + FIRST_S + GAP_S - 0.05
    return range(math.ceil(start * FPS), math.floor(end * FPS))


def test_lips_move_with_loud_speech_and_keep_still_in_the_gap(
    talk: Talk, mouth_box: tuple[slice, slice]
) -> None:
    frames = talk.mp4.frames
    change = mouth_change(frames, mouth_box)
    loudness = frame_rms(talk.mp4.audio, RATE, len(frames))
    loud = np.flatnonzero(loudness > 0.3 * loudness.max())
    gap = np.array(gap_frames())
    assert loud.size >= 10
    assert np.all(loudness[gap] < 1e-3)  # the gap really is silent in the MP4
    moving, still = float(change[loud].mean()), float(change[gap].mean())
    assert moving > 5 * still, (moving, still)
    assert still < 1.5, still  # breathing and sway only, plus compression noise
    # And the mouth is open for loud frames, shut in the gap.
    darkening = mouth_darkening(frames, mouth_box, rest=int(gap[0]))
    assert float(np.median(darkening[loud])) > 4.0
    assert float(np.abs(darkening[gap]).max()) < 1.5


def onset_times(audio: np.ndarray, rate: int, starts: Sequence[float]) -> list[float]:
    """When the sound first rises past 10 % of its peak after each of `starts` (seconds)."""
    threshold = 0.1 * float(np.abs(audio).max())
    onsets = []
    for start in starts:
        first = int(start * rate)
        onsets.append((first + int(np.argmax(np.abs(audio[first:]) > threshold))) / rate)
    return onsets


def test_mouth_opens_within_two_frames_of_the_sound(
    talk: Talk, mouth_box: tuple[slice, slice]
) -> None:
    """Audio onsets measured on the MP4's own audio track, mouth openings on its pictures."""
    frames = talk.mp4.frames
    darkening = mouth_darkening(frames, mouth_box, rest=gap_frames()[0])
    opened = darkening > 0.35 * darkening.max()
    second_start = LEAD_S + FIRST_S + GAP_S
    for onset in onset_times(talk.mp4.audio, RATE, [0.0, second_start - 0.2]):
        first_open = int(np.argmax(opened[math.floor((onset - 0.2) * FPS) :]))
        first_open += math.floor((onset - 0.2) * FPS)
        # A frame is on screen for 1/fps from its time: compare its middle with the onset.
        shown = talk.mp4.frame_times[first_open] + 0.5 / FPS
        assert abs(shown - onset) <= 2 / FPS, (onset, first_open, shown)


def test_progress_climbs_to_one_and_the_file_appears_only_at_the_end(talk: Talk) -> None:
    fractions = [fraction for fraction, _ in talk.progress]
    assert fractions == sorted(fractions)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert len(fractions) > 20  # reported along the way, not only at the ends
    assert any("render" in message for _, message in talk.progress)
    assert not any(talk.seen_while_rendering[:-1])  # only the final "done" sees the file
    assert talk.seen_while_rendering[-1]
    # Nothing but the MP4 is left beside it.
    assert [p.name for p in talk.result.path.parent.iterdir()] == [talk.result.path.name]


# -- emotions ----------------------------------------------------------------------------------


def test_an_emotion_changes_the_picture(tmp_path: Path) -> None:
    audio = write_wav(
        tmp_path / "a.wav", np.concatenate([silence(0.6), speech(0.6, RATE, tmp_path)]), RATE
    )

    def render(name: str, emotion: str) -> list[np.ndarray]:
        out = render_talking_video(
            audio=audio,
            out=tmp_path / name,
            emotion=emotion,
            intensity=1.0,
            width=SIZE,
            height=SIZE,
        )
        return read_mp4(out.path).frames

    neutral, again, happy = (
        render("n.mp4", "neutral"),
        render("n2.mp4", "neutral"),
        render("h.mp4", "happy"),
    )
    face = (slice(SIZE // 4, 3 * SIZE // 4), slice(SIZE // 4, 3 * SIZE // 4))
    late = 15  # 0.5 s in: the 300 ms ease into the emotion is over
    same = np.abs(neutral[late][face].astype(float) - again[late][face]).mean()
    differs = np.abs(neutral[late][face].astype(float) - happy[late][face]).mean()
    assert same < 0.2  # rendering is deterministic...
    assert differs > 2.0  # ...so this is the emotion


# -- avatar sources and backgrounds ------------------------------------------------------------


def test_avatar_package_directory_renders_like_its_portrait(tmp_path: Path) -> None:
    """An extracted meshwarp package (a folder with `portrait.png`, as a preparation job makes
    it) animates the face in that portrait: the astronaut mirrored here, so it is told apart
    from the default portrait."""
    package = tmp_path / "my-avatar"
    package.mkdir()
    mirrored = Image.open(DEFAULT_PORTRAIT).convert("RGB").transpose(Image.FLIP_LEFT_RIGHT)
    mirrored.save(package / "portrait.png")
    audio = write_wav(tmp_path / "a.wav", speech(0.5, RATE, tmp_path), RATE)
    options = dict(audio=audio, width=SIZE, height=SIZE)
    from_package = render_talking_video(source=package, out=tmp_path / "p.mp4", **options)
    from_file = render_talking_video(
        source=package / "portrait.png", out=tmp_path / "f.mp4", **options
    )
    default = render_talking_video(out=tmp_path / "d.mp4", **options)
    package_frames = read_mp4(from_package.path).frames
    assert len(package_frames) == from_package.frames == 15
    last = package_frames[-1].astype(float)
    # (The first render builds the avatar, the second reads it back from the cache, which
    # stores the warp fields at half precision: not bit-identical.)
    assert np.abs(last - read_mp4(from_file.path).frames[-1]).mean() < 1.0
    assert np.abs(last - read_mp4(default.path).frames[-1]).mean() > 5.0

    empty = tmp_path / "empty-package"
    empty.mkdir()
    error = render_error(audio=audio, out=tmp_path / "e.mp4", source=empty, renderer="meshwarp")
    assert error.code == "invalid_package"


def test_a_colour_background_replaces_the_portraits_own(tmp_path: Path) -> None:
    audio = write_wav(tmp_path / "a.wav", speech(0.3, RATE, tmp_path), RATE)
    options = dict(audio=audio, width=SIZE, height=SIZE)
    original = read_mp4(render_talking_video(out=tmp_path / "o.mp4", **options).path).frames
    green = render_talking_video(out=tmp_path / "g.mp4", background="color:#00c000", **options)
    coloured = read_mp4(green.path).frames
    corner = (slice(0, SIZE // 10), slice(0, SIZE // 10))  # background in the astronaut photo
    face = (slice(SIZE // 3, SIZE // 2), slice(2 * SIZE // 5, 3 * SIZE // 5))
    assert np.abs(coloured[0][corner].astype(int) - (0, 192, 0)).max() <= 6
    assert np.abs(original[0][corner].astype(int) - (0, 192, 0)).max() > 60
    assert np.abs(coloured[0][face].astype(float) - original[0][face]).mean() < 3


# -- input formats -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rate", "codec"),
    [
        ("speech.mp3", 44100, "libmp3lame"),
        ("speech.m4a", 22050, "aac"),
        ("speech.ogg", 48000, "libopus"),
        ("speech.flac", 16000, "flac"),
    ],
)
def test_compressed_audio_formats_render(tmp_path: Path, name: str, rate: int, codec: str) -> None:
    samples = np.concatenate([silence(0.2, rate), speech(1.3, rate, tmp_path)])
    audio = encode_audio(tmp_path / name, samples, rate, codec)
    result = render_talking_video(
        audio=audio, out=tmp_path / "out.mp4", renderer="testcard", width=128, height=128
    )
    mp4 = read_mp4(result.path)
    duration = samples.size / rate
    assert abs(mp4.audio_duration_s - duration) <= 1 / FPS
    assert abs(len(mp4.frames) - math.ceil(duration * FPS)) <= 1
    assert mp4.audio_rate == rate  # all AAC rates: no resampling
    loudness = frame_rms(mp4.audio, rate, len(mp4.frames))
    assert loudness[: int(0.15 * FPS)].max() < 0.01 < loudness.max()  # silence, then speech


def test_stereo_is_mixed_to_mono_and_odd_rates_resampled(tmp_path: Path) -> None:
    """Voice on the left only, at 11.5 kHz (no AAC rate): the track is the mean of the two
    channels (half the level) at 48 kHz, same length."""
    rate = 11500
    voice = speech(1.5, rate, tmp_path)
    stereo = np.stack([voice, np.zeros_like(voice)], axis=1)
    audio = write_wav(tmp_path / "stereo.wav", stereo, rate)
    result = render_talking_video(
        audio=audio, out=tmp_path / "out.mp4", renderer="testcard", width=128, height=128
    )
    mp4 = read_mp4(result.path)
    assert mp4.audio_rate == 48000
    assert abs(mp4.audio_duration_s - 1.5) <= 1 / FPS
    level = float(np.sqrt(np.mean(mp4.audio[: 48000 * 3 // 2] ** 2)))
    expected = 0.5 * float(np.sqrt(np.mean(voice**2)))
    assert abs(level / expected - 1.0) < 0.1, (level, expected)


# -- driving the renderer ----------------------------------------------------------------------


class RecordingTestcard(TestcardRenderer):
    """The testcard, asking for batches of 4 with 40 ms of look-ahead and 20 ms of
    look-behind, keeping every request it gets."""

    name = "recording-testcard"
    capabilities = RendererCapabilities(
        sample_rate=16000, batch_size=4, lookahead_s=0.04, lookbehind_s=0.02
    )
    batches: list[list[FrameRequest]] = []

    def render(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
        RecordingTestcard.batches.append(list(requests))
        return super().render(requests)


def test_renderer_gets_batches_and_windows_like_the_live_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = RecordingTestcard.name
    monkeypatch.setitem(renderer_registry._REGISTRY, name, f"{__name__}:RecordingTestcard")
    RecordingTestcard.batches = []
    samples = speech(1.0, RATE, tmp_path)  # 30 frames exactly, then a partial one below
    samples = np.concatenate([samples, silence(0.02)])
    audio = write_wav(tmp_path / "a.wav", samples, RATE)
    result = render_talking_video(
        audio=audio, out=tmp_path / "out.mp4", renderer=name, emotion="sad", width=128, height=128
    )
    batches = RecordingTestcard.batches
    requests = [request for batch in batches for request in batch]
    assert [len(batch) for batch in batches] == [4] * 7 + [3]  # 31 frames
    assert result.frames == len(requests) == 31
    assert [r.index for r in requests] == list(range(31))
    lengths = [r.window_length for r in requests]
    assert set(lengths[:30]) == {533, 534}  # 16000 / 30, on the exact fractional timeline
    positions = np.cumsum([0, *lengths[:-1]])
    assert [r.speech_position for r in requests] == positions.tolist()
    assert [r.segment_position for r in requests] == positions.tolist()
    assert all(r.window_offset == 320 for r in requests)  # 20 ms look-behind
    assert all(
        r.audio is not None and r.audio.size == 320 + r.window_length + 640 for r in requests
    )
    assert {r.expression.emotion for r in requests} == {"sad"}
    # Every sample went to the renderer, in its own frame's window, exactly once.
    heard = np.concatenate([r.own_window() for r in requests])
    assert heard.size == positions[-1] + lengths[-1] >= samples.size
    assert np.abs(heard[: samples.size] - samples).max() < 2 / 32768
    # The look-ahead is the next frames' audio.
    first = requests[0]
    ahead = first.audio[320 + first.window_length :]
    assert np.array_equal(ahead, heard[first.window_length : first.window_length + 640])


# -- errors ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scratch = tmp_path_factory.mktemp("short")
    return write_wav(scratch / "short.wav", speech(0.5, RATE, scratch), RATE)


def render_error(**options: object) -> OfflineRenderError:
    with pytest.raises(OfflineRenderError) as caught:
        render_talking_video(**{"renderer": "testcard", "width": 128, "height": 128, **options})  # type: ignore[arg-type]
    return caught.value


def test_unreadable_audio_is_refused_clearly(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    text = tmp_path / "notes.txt"
    text.write_text("this is not audio\n")
    error = render_error(audio=text, out=out)
    assert (error.code, error.message) == (
        "unsupported_audio_format",
        "Unsupported audio format: txt",
    )

    picture = tmp_path / "picture.png"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(picture)
    error = render_error(audio=picture, out=out)
    assert error.code == "unsupported_audio_format"
    assert error.message.startswith("Unsupported audio format: ")

    error = render_error(audio=tmp_path / "missing.wav", out=out)
    assert (error.code, error.message) == ("audio_not_found", "Audio file not found: missing.wav")

    empty = write_wav(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), RATE)
    error = render_error(audio=empty, out=out)
    assert error.code == "audio_empty"
    assert not out.exists()


def test_too_long_audio_is_refused_with_the_limit(tmp_path: Path, short_audio: Path) -> None:
    long_audio = write_wav(tmp_path / "long.wav", speech(2.5, RATE, tmp_path), RATE)
    error = render_error(
        audio=long_audio, out=tmp_path / "o.mp4", limits=OfflineRenderLimits(max_audio_s=2.0)
    )
    assert (error.code, error.message) == (
        "audio_too_long",
        "Audio too long, maximum 2 seconds allowed",
    )
    error = render_error(
        audio=long_audio, out=tmp_path / "o.mp4", limits=OfflineRenderLimits(max_audio_s=1.5)
    )
    assert error.message == "Audio too long, maximum 1.5 seconds allowed"
    assert not (tmp_path / "o.mp4").exists()


def test_unknown_renderer_and_emotion_list_the_valid_ones(
    tmp_path: Path, short_audio: Path
) -> None:
    out = tmp_path / "o.mp4"
    error = render_error(audio=short_audio, out=out, renderer="wav2nope")
    assert error.code == "unknown_renderer"
    assert (
        error.message
        == f"Unknown renderer 'wav2nope'; valid renderers: {', '.join(renderers.available())}"
    )
    assert "meshwarp" in error.message and "testcard" in error.message

    error = render_error(audio=short_audio, out=out, renderer="meshwarp", emotion="bored")
    assert error.code == "invalid_emotion"
    assert error.message == f"Unknown emotion 'bored'; valid emotions: {', '.join(EMOTIONS)}"

    for intensity in (-0.1, 1.5, float("nan")):
        assert (
            render_error(audio=short_audio, out=out, intensity=intensity).code
            == "invalid_intensity"
        )
    assert render_error(audio=short_audio, out=out, width=129).code == "invalid_size"
    assert render_error(audio=short_audio, out=out, height=10_000).code == "invalid_size"
    assert render_error(audio=short_audio, out=out, fps=0).code == "invalid_fps"
    error = render_error(audio=short_audio, out=out, background="moon")
    assert error.code == "invalid_background" and "color:#RRGGBB" in error.message
    assert not out.exists()


def test_bad_portraits_are_refused(tmp_path: Path, short_audio: Path) -> None:
    out = tmp_path / "o.mp4"
    big = tmp_path / "big.png"
    Image.new("RGB", (400, 300), (200, 180, 160)).save(big)
    error = render_error(
        audio=short_audio, out=out, source=big, limits=OfflineRenderLimits(max_image_pixels=100_000)
    )
    assert (error.code, error.message) == (
        "image_too_large",
        "Image too large: 400x300 pixels, maximum 100000 pixels allowed",
    )
    # A plain picture: no face for meshwarp to animate.
    error = render_error(audio=short_audio, out=out, source=big, renderer="meshwarp")
    assert (error.code, error.message) == ("no_face", "No face detected in image")
    error = render_error(audio=short_audio, out=out, source=tmp_path / "nobody.jpg")
    assert (error.code, error.message) == (
        "source_not_found",
        "Avatar source not found: nobody.jpg",
    )
    assert not out.exists()


# -- atomic output -----------------------------------------------------------------------------


class Cancelled(Exception):
    pass


def test_failure_midway_leaves_no_partial_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    audio = write_wav(tmp_path / "a.wav", speech(2.0, RATE, tmp_path), RATE)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "talk.mp4"
    out.write_bytes(b"the previous render")
    rendered: list[str] = []

    def cancel_midway(fraction: float, message: str) -> None:
        rendered.append(message)
        if fraction > 0.5:
            assert len(list(out_dir.iterdir())) == 2  # the old file and the one being written
            raise Cancelled

    with pytest.raises(Cancelled):
        render_talking_video(
            audio=audio, out=out, renderer="testcard", width=128, height=128, progress=cancel_midway
        )
    assert any("render" in message for message in rendered)
    assert list(out_dir.iterdir()) == [out]
    assert out.read_bytes() == b"the previous render"

    fresh = out_dir / "fresh.mp4"
    with pytest.raises(Cancelled):
        render_talking_video(
            audio=audio,
            out=fresh,
            renderer="testcard",
            width=128,
            height=128,
            progress=cancel_midway,
        )
    assert list(out_dir.iterdir()) == [out]


# -- command line ------------------------------------------------------------------------------


def test_command_line(tmp_path: Path, short_audio: Path) -> None:
    out = tmp_path / "cli.mp4"
    command = [sys.executable, "-m", "avatar_runtime.offline", "--audio", str(short_audio)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [*command, "--out", str(out), "--renderer", "testcard", "--width", "160",
         "--height", "128"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{out}: 15 frames" in done.stdout
    mp4 = read_mp4(out)
    assert (mp4.width, mp4.height, len(mp4.frames)) == (160, 128, 15)

    failed = subprocess.run(
        [*command, "--out", str(tmp_path / "x.mp4"), "--renderer", "testcard", "--emotion", "meh"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert failed.returncode == 2
    assert "error: Unknown emotion 'meh'; valid emotions: neutral" in failed.stderr
    assert not (tmp_path / "x.mp4").exists()
