"""The avatar runtime on its own: exact pairing, segment ends, interruptions, slow renderers.

No room is involved: the tests consume the generator directly, either as fast as possible or
paced like rtc.AVSynchronizer consumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd

from avatar_runtime import IDLE_AUDIO_KEY, AvatarVideoGenerator, FrameTimeline, RuntimeOptions
from renderers import (
    Expression,
    FrameRequest,
    Renderer,
    RendererCapabilities,
    VideoFormat,
    create,
)
from renderers.testcard import read_stamp

FPS = 30
TTS_RATE = 22050  # the piper voice's rate
OUT_RATE = 24000


class RecordingRenderer(Renderer):
    """A real (if trivial) renderer that keeps every request it was asked to draw."""

    name = "recording"
    capabilities = RendererCapabilities(sample_rate=16000, batch_size=4)

    def __init__(self, video: VideoFormat, delay_s: float = 0.0, fail_every: int = 0) -> None:
        super().__init__(video)
        self.requests: list[FrameRequest] = []
        self.batches: list[list[FrameRequest]] = []
        self.delay_s = delay_s
        self.fail_every = fail_every
        self.thread_names: set[str] = set()
        self._calls = 0

    def render(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
        self._calls += 1
        self.thread_names.add(threading.current_thread().name)
        if self.fail_every and self._calls % self.fail_every == 0:
            raise RuntimeError("simulated renderer crash")
        if self.delay_s:
            time.sleep(self.delay_s * len(requests))
        self.requests.extend(requests)
        self.batches.append(list(requests))
        frame = np.zeros((self.video.height, self.video.width, 4), dtype=np.uint8)
        return [frame.copy() for _ in requests]


def unpaced(width: int = 64, height: int = 64) -> RuntimeOptions:
    """Options for a consumer that pulls as fast as it can: renders may take as long as they
    need, so every frame is rendered and these tests check pairing, not timing."""
    return RuntimeOptions(width, height, FPS, OUT_RATE, render_wait_s=10.0)


def tone_burst_audio(
    seconds: float, bursts_at: Sequence[float], rate: int = TTS_RATE
) -> np.ndarray:
    """Quiet noise floor with loud 20 ms tone bursts at the given times (int16)."""
    rng = np.random.default_rng(1)
    audio = rng.normal(0, 30, int(seconds * rate))
    for t in bursts_at:
        start = int(t * rate)
        n = int(0.02 * rate)
        audio[start : start + n] += 12000 * np.sin(2 * np.pi * 1000 * np.arange(n) / rate)
    return np.clip(audio, -32768, 32767).astype(np.int16)


def frames_of(audio: np.ndarray, rate: int = TTS_RATE, chunk_s: float = 0.1):
    step = int(rate * chunk_s)
    for i in range(0, audio.size, step):
        chunk = audio[i : i + step]
        yield rtc.AudioFrame(chunk.tobytes(), rate, 1, chunk.size)


async def collect(generator: AvatarVideoGenerator, *, until, paced: bool = False, limit=10**6):
    """Consume the generator; returns a list of ('video', VideoFrame) / ('audio', AudioFrame) /
    ('end', None) with their wall times, stopping when until(items) is true."""
    items: list[tuple[str, object, float]] = []
    it = generator.__aiter__()
    while len(items) < limit:
        item = await it.__anext__()
        now = time.perf_counter()
        if isinstance(item, AudioSegmentEnd):
            items.append(("end", None, now))
        elif isinstance(item, rtc.VideoFrame):
            items.append(("video", item, now))
            if paced:
                await asyncio.sleep(1 / FPS)
        else:
            items.append(("audio", item, now))
        if until(items):
            break
    return items


def count(items, kind: str) -> int:
    return sum(1 for k, _, _ in items if k == kind)


def speech_audio(items) -> list[rtc.AudioFrame]:
    return [
        f
        for k, f, _ in items
        if k == "audio" and not (f.userdata or {}).get(IDLE_AUDIO_KEY)  # type: ignore[union-attr]
    ]


def test_timeline_has_exact_fractional_windows() -> None:
    timeline = FrameTimeline(16000, 30)
    sizes = {timeline.window(k)[1] - timeline.window(k)[0] for k in range(90)}
    assert sizes == {533, 534}
    ten_minutes = 30 * 600
    assert timeline.boundary(ten_minutes) == 600 * 16000
    assert sum(timeline.window(k)[1] - timeline.window(k)[0] for k in range(ten_minutes)) == (
        600 * 16000
    )
    assert timeline.frames_covering(16000) == 30
    assert timeline.frames_covering(16001) == 31


async def test_ten_minutes_of_speech_stay_paired_without_drift() -> None:
    minutes = 10
    bursts = [1.0, 60.0, 300.0, 599.0]
    audio = tone_burst_audio(minutes * 60, bursts)
    renderer = RecordingRenderer(VideoFormat(64, 64, FPS))
    generator = AvatarVideoGenerator(renderer, unpaced())
    for frame in frames_of(audio):
        await generator.push_audio(frame)
    await generator.push_audio(AudioSegmentEnd())

    items = await collect(generator, until=lambda items: items[-1][0] == "end")
    await generator.aclose()

    # Every video frame is followed by exactly its own 1/30 s of audio, and nothing else.
    kinds = [k for k, _, _ in items]
    assert kinds[-1] == "end" and kinds.count("end") == 1
    pairs = kinds[:-1]
    assert pairs == ["video", "audio"] * (len(pairs) // 2)
    speech = speech_audio(items)
    assert len(speech) == minutes * 60 * FPS
    assert {f.samples_per_channel for f in speech} == {OUT_RATE // FPS}

    # Each burst lands in the frame its time says, in both the published audio and the audio
    # the renderer saw, at minute 10 as at second 1.
    loud_out = [
        i
        for i, f in enumerate(speech)
        if np.abs(np.frombuffer(f.data, dtype=np.int16)).max() > 4000
    ]
    speech_requests = [r for r in renderer.requests if r.is_speech]
    loud_render = [
        i for i, r in enumerate(speech_requests) if np.abs(r.own_window()).max() > 4000 / 32768
    ]
    for t in bursts:
        expected = int(t * FPS)
        assert expected in loud_out, f"burst at {t}s missing from published frame {expected}"
        assert expected in loud_render, f"burst at {t}s missing from rendered frame {expected}"
    assert len(loud_out) <= 2 * len(bursts) and len(loud_render) <= 2 * len(bursts)

    # The renderer's speech clock is exact: frame k starts at floor(k * 16000 / 30).
    timeline = FrameTimeline(16000, FPS)
    positions = [r.speech_position for r in speech_requests]
    assert positions == [timeline.boundary(k) for k in range(len(positions))]


async def test_every_utterance_gets_exactly_one_segment_end_in_order() -> None:
    renderer = RecordingRenderer(VideoFormat(64, 64, FPS))
    generator = AvatarVideoGenerator(renderer, unpaced())
    utterances = [0.5, 0.0, 0.005, 1.25]  # seconds; an empty one and one shorter than a frame
    for seconds in utterances:
        for frame in frames_of(tone_burst_audio(seconds, [])):
            await generator.push_audio(frame)
        await generator.push_audio(AudioSegmentEnd())

    items = await collect(generator, until=lambda items: count(items, "end") == len(utterances))
    await generator.aclose()

    speech_frames_per_segment: list[int] = []
    current = 0
    for kind, frame, _ in items:
        if kind == "audio" and not (frame.userdata or {}).get(IDLE_AUDIO_KEY):
            current += 1
        elif kind == "end":
            speech_frames_per_segment.append(current)
            current = 0
    expected = [FrameTimeline(OUT_RATE, FPS).frames_covering(int(s * OUT_RATE)) for s in utterances]
    # Resampling may round the length by a sample: allow one frame of padding either way.
    assert len(speech_frames_per_segment) == len(utterances)
    for got, want in zip(speech_frames_per_segment, expected, strict=True):
        assert abs(got - want) <= 1
    assert speech_frames_per_segment[1] == 0


async def test_segment_end_arriving_after_the_audio_is_played_still_comes_out() -> None:
    renderer = RecordingRenderer(VideoFormat(64, 64, FPS))
    generator = AvatarVideoGenerator(renderer, unpaced())
    for frame in frames_of(tone_burst_audio(0.4, [])):
        await generator.push_audio(frame)
    # Play all the speech (and some idle) before the end arrives.
    items = await collect(generator, until=lambda items: count(items, "video") >= 30)
    assert count(items, "end") == 0
    await generator.push_audio(AudioSegmentEnd())
    more = await collect(generator, until=lambda items: items[-1][0] == "end", limit=10)
    await generator.aclose()
    assert more[-1][0] == "end"


async def test_interruption_returns_to_idle_on_the_next_frame_and_next_turn_works() -> None:
    renderer = RecordingRenderer(VideoFormat(64, 64, FPS))
    generator = AvatarVideoGenerator(renderer, unpaced())
    for frame in frames_of(tone_burst_audio(3.0, [])):
        await generator.push_audio(frame)
    await generator.push_audio(AudioSegmentEnd())
    await collect(generator, until=lambda items: len(speech_audio(items)) >= 20)

    generator.clear_buffer()
    after = await collect(generator, until=lambda items: count(items, "video") >= 10)
    assert speech_audio(after) == [], "speech continued after clear_buffer"
    assert count(after, "end") == 0  # the interruption is reported instead of an end
    assert generator.stats.interruptions == 1

    # The next turn plays completely and ends normally.
    for frame in frames_of(tone_burst_audio(0.5, [])):
        await generator.push_audio(frame)
    await generator.push_audio(AudioSegmentEnd())
    turn = await collect(generator, until=lambda items: items[-1][0] == "end")
    await generator.aclose()
    assert 14 <= len(speech_audio(turn)) <= 16
    speech_requests = [r for r in renderer.requests if r.is_speech]
    assert speech_requests[-1].segment == 2


async def test_slow_renderer_repeats_pictures_but_never_delays_audio() -> None:
    # 50 ms per frame: slower than the 33 ms a 30 fps frame allows.
    renderer = RecordingRenderer(VideoFormat(64, 64, FPS), delay_s=0.05)
    renderer.capabilities = RendererCapabilities(sample_rate=16000, batch_size=1)
    generator = AvatarVideoGenerator(renderer, RuntimeOptions(64, 64, FPS, OUT_RATE))
    lags: list[float] = []

    async def watch_loop() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - before - 0.005)

    watcher = asyncio.create_task(watch_loop())
    for frame in frames_of(tone_burst_audio(2.0, [])):
        await generator.push_audio(frame)
    await generator.push_audio(AudioSegmentEnd())
    items = await collect(generator, until=lambda items: items[-1][0] == "end", paced=True)
    watcher.cancel()
    await generator.aclose()

    speech = speech_audio(items)
    assert len(speech) == 60, "speech audio was lost"
    audio_times = [t for k, f, t in items if k == "audio"]
    gaps = np.diff(audio_times)
    # Paced at 33 ms; a late render may hold a frame back by at most the render wait.
    assert gaps.max() < 1 / FPS + 1 / FPS + 0.02
    assert generator.stats.repeated_frames > 0
    assert generator.stats.dropped_renders > 0
    assert max(lags) < 0.03, "the event loop stalled while the renderer was busy"
    assert "MainThread" not in renderer.thread_names


async def test_pictures_stay_fresh_after_a_short_consumer_stall() -> None:
    # A 150 ms stall (a busy event loop at start-up), after which the consumer keeps its pace
    # but never makes the time up, as audio cannot. Renders must resume, not every later
    # frame be a repeat of the last picture.
    renderer = RecordingRenderer(VideoFormat(64, 64, FPS))
    renderer.capabilities = RendererCapabilities(sample_rate=16000, batch_size=1)
    generator = AvatarVideoGenerator(renderer, RuntimeOptions(64, 64, FPS, OUT_RATE))
    stream = generator.__aiter__()
    frames = 0
    repeats_after_stall: list[int] = []
    while frames < 75:
        item = await stream.__anext__()
        if not isinstance(item, rtc.VideoFrame):
            continue
        frames += 1
        await asyncio.sleep(1 / FPS + (0.15 if frames == 10 else 0.0))
        if frames == 30:
            settled = generator.stats.repeated_frames
        if frames > 30:
            repeats_after_stall.append(generator.stats.repeated_frames - settled)
    await generator.aclose()
    # A few repeats while the clock follows (this consumer also drifts, sleeps overshoot).
    assert repeats_after_stall[-1] <= 4, f"{repeats_after_stall[-1]} of 45 frames were repeats"


async def test_crashing_renderer_keeps_audio_flowing() -> None:
    renderer = RecordingRenderer(VideoFormat(64, 64, FPS), fail_every=3)
    renderer.capabilities = RendererCapabilities(sample_rate=16000, batch_size=1)
    generator = AvatarVideoGenerator(renderer, unpaced())
    for frame in frames_of(tone_burst_audio(1.0, [])):
        await generator.push_audio(frame)
    await generator.push_audio(AudioSegmentEnd())
    items = await collect(generator, until=lambda items: items[-1][0] == "end")
    await generator.aclose()
    assert len(speech_audio(items)) == 30
    assert count(items, "video") == 30
    assert generator.stats.render_errors >= 1
    assert generator.stats.fallback_frames > 0
    assert generator.renderer_error is not None
    assert generator.renderer_error.code == "render_failed"


# -- a renderer that fails or hangs: the fallback picture, the fault, the retry ------------------


class FaultyRenderer(Renderer):
    """Draws frame k as a flat picture with k (mod 256) in its first pixel and 1 (speech) or 0
    (idle) in the second; raises while `broken`, blocks while `hanging` is set (until
    `release` is), and records which thread ran each call."""

    name = "faulty"
    capabilities = RendererCapabilities(sample_rate=16000, batch_size=1)

    def __init__(self, video: VideoFormat) -> None:
        super().__init__(video)
        self.broken = False
        self.hanging = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self.hung_calls = 0
        self.good_threads: list[str] = []
        self.hung_threads: list[str] = []

    def render(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
        self.calls += 1
        if self.hanging.is_set():
            self.hung_calls += 1
            self.hung_threads.append(threading.current_thread().name)
            self.release.wait(30)
        if self.broken:
            raise RuntimeError("the model ran out of memory")
        self.good_threads.append(threading.current_thread().name)
        pictures = []
        for request in requests:
            frame = np.full((self.video.height, self.video.width, 4), 90, dtype=np.uint8)
            frame[0, 0, 0] = request.index % 256
            frame[0, 0, 1] = 1 if request.is_speech else 0
            pictures.append(frame)
        return pictures


def picture_of(frame: rtc.VideoFrame) -> tuple[int, bool]:
    """(frame index mod 256, is speech) as FaultyRenderer drew them."""
    first = np.frombuffer(frame.data, dtype=np.uint8)[:2]
    return int(first[0]), bool(first[1])


def is_one_idle_picture(shown: set[tuple[int, bool]], last_seen: int) -> bool:
    """`shown` is one idle picture, the last one drawn: the one seen last, or one drawn just
    after it and not shown yet (pictures are drawn up to a few frames ahead)."""
    if len(shown) != 1:
        return False
    index, speech = next(iter(shown))
    return not speech and (index - last_seen) % 256 <= LEAD


class PacedConsumer:
    """Reads the generator the way AvatarPublisher does (audio LEAD frames ahead of pictures),
    taking each frame's audio when a real 30 fps playback would, and keeps what it got."""

    def __init__(self, generator: AvatarVideoGenerator) -> None:
        generator.lead_audio(LEAD)
        self.generator = generator
        self.video: list[tuple[float, rtc.VideoFrame]] = []
        self.audio: list[tuple[float, rtc.AudioFrame]] = []
        self.kinds: list[str] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        start = time.perf_counter()
        async for item in self.generator:
            now = time.perf_counter()
            if isinstance(item, rtc.VideoFrame):
                self.video.append((now, item))
                self.kinds.append("video")
            elif isinstance(item, rtc.AudioFrame):
                self.audio.append((now, item))
                self.kinds.append("audio")
                # The audio source takes a frame's audio once the one LEAD frames back played.
                due = start + (len(self.audio) - LEAD) / FPS
                await asyncio.sleep(max(0.0, due - time.perf_counter()))

    def now(self) -> int:
        return len(self.video)

    async def until_frames(self, n: int, timeout: float = 20.0) -> None:
        deadline = time.perf_counter() + timeout
        while len(self.video) < n:
            assert time.perf_counter() < deadline, f"only {len(self.video)} of {n} frames came"
            assert not self._task.done(), "the generator stopped"
            await asyncio.sleep(0.01)

    def fps(self, first: int, last: int) -> float:
        times = [t for t, _ in self.video[first:last]]
        return (len(times) - 1) / (times[-1] - times[0])

    def max_gap(self, first: int, last: int) -> float:
        return float(np.diff([t for t, _ in self.video[first:last]]).max())

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.generator.aclose()


MAX_GAP_S = 0.3
"""The longest a paced consumer may wait for a frame while the renderer fails (it is never
blocked by the renderer: the render timeout is longer, 0.6 s)."""


def fault_options(**overrides: float) -> RuntimeOptions:
    values = {"render_timeout_s": 0.6, "render_retry_s": 0.2, "render_retry_max_s": 0.4}
    values.update(overrides)
    return replace(RuntimeOptions(64, 64, FPS, OUT_RATE), **values)


async def test_a_renderer_that_raises_shows_the_idle_picture_reports_it_and_recovers() -> None:
    renderer = FaultyRenderer(VideoFormat(64, 64, FPS))
    generator = AvatarVideoGenerator(renderer, fault_options())
    faults: list[dict | None] = []
    generator.add_fault_listener(lambda f: faults.append(f.to_dict() if f else None))
    consumer = PacedConsumer(generator)
    try:
        await consumer.until_frames(20)
        idle_index, speech = picture_of(consumer.video[-1][1])
        assert not speech and generator.renderer_error is None

        renderer.broken = True
        broke_at = consumer.now()
        speech_from = len(consumer.audio)
        for frame in frames_of(tone_burst_audio(2.0, [])):
            await generator.push_audio(frame)
        await generator.push_audio(AudioSegmentEnd())
        await consumer.until_frames(broke_at + 75)  # 2.5 s: the speech and some idle after it
        fault = generator.renderer_error
        assert fault is not None and fault.code == "render_failed"
        assert "out of memory" in fault.message and "Error" not in fault.message
        assert faults and faults[0] is not None and faults[0]["code"] == "render_failed"
        assert set(faults[0]) == {"code", "message", "since"}
        assert fault.failures >= 2, "the renderer was not tried again after its back-off"

        # Every frame still came, at 30 fps, each with exactly its own audio: the 2 s of
        # speech in full, one picture per 1/30 s of audio.
        broken_frames = consumer.video[broke_at + 5 : broke_at + 75]
        assert consumer.fps(broke_at, broke_at + 75) >= 27
        # (a loaded machine stalls a consumer now and then; a blocked generator would stall it
        # for the render timeout and more)
        assert consumer.max_gap(broke_at, broke_at + 75) < MAX_GAP_S
        speech_out = [
            f for _, f in consumer.audio[speech_from:] if not (f.userdata or {}).get(IDLE_AUDIO_KEY)
        ]
        assert len(speech_out) == 2 * FPS
        assert sum(f.samples_per_channel for f in speech_out) == 2 * OUT_RATE
        pairs = (len(consumer.kinds) - LEAD) // 2
        assert consumer.kinds[LEAD : LEAD + 2 * pairs] == ["audio", "video"] * pairs
        # ... and the picture is the last idle one: no speech picture, no new frame drawn.
        assert is_one_idle_picture({picture_of(f) for _, f in broken_frames}, idle_index)
        assert generator.stats.fallback_frames >= 70

        renderer.broken = False
        fixed_at = consumer.now()
        await consumer.until_frames(fixed_at + 30)  # back-off <= 0.4 s, then renders again
        assert generator.renderer_error is None
        assert faults[-1] is None
        last_index, _ = picture_of(consumer.video[-1][1])
        assert last_index == (len(consumer.video) - 1) % 256, "the renderer draws again"
        assert consumer.fps(fixed_at, fixed_at + 30) >= 27
    finally:
        await consumer.stop()


async def test_a_hung_renderer_is_given_up_retried_on_a_fresh_thread_and_capped() -> None:
    renderer = FaultyRenderer(VideoFormat(64, 64, FPS))
    generator = AvatarVideoGenerator(renderer, fault_options(max_hung_renders=2))
    consumer = PacedConsumer(generator)
    try:
        await consumer.until_frames(20)
        first_thread = renderer.good_threads[-1]
        idle_index, _ = picture_of(consumer.video[-1][1])

        renderer.hanging.set()
        hung_at = consumer.now()
        speech_from = len(consumer.audio)
        for frame in frames_of(tone_burst_audio(1.0, [])):
            await generator.push_audio(frame)
        await generator.push_audio(AudioSegmentEnd())
        # The timeout (0.6 s), a retry that hangs too (after 0.2 s, given up 0.6 s later),
        # then no more: two threads are stuck, the most it accepts.
        await consumer.until_frames(hung_at + 75)
        fault = generator.renderer_error
        assert fault is not None and fault.code == "render_timeout"
        assert renderer.hung_calls == 2
        assert len(set(renderer.hung_threads)) == 2, "a retry ran on the thread that hung"
        assert generator.stats.render_timeouts == 2

        # The hang never stopped the frames or the audio.
        assert consumer.fps(hung_at, hung_at + 75) >= 27
        assert consumer.max_gap(hung_at, hung_at + 75) < MAX_GAP_S
        speech_out = [
            f for _, f in consumer.audio[speech_from:] if not (f.userdata or {}).get(IDLE_AUDIO_KEY)
        ]
        assert len(speech_out) == FPS
        shown = {picture_of(f) for _, f in consumer.video[hung_at + 25 : hung_at + 75]}
        assert is_one_idle_picture(shown, idle_index)

        # Still capped: nothing more was tried while both threads are stuck.
        await consumer.until_frames(hung_at + 90)
        assert renderer.hung_calls == 2

        renderer.hanging.clear()
        renderer.release.set()  # the stuck calls return (their pictures are thrown away)
        released_at = consumer.now()
        await consumer.until_frames(released_at + 30)
        assert generator.renderer_error is None
        assert renderer.good_threads[-1] not in {first_thread, *renderer.hung_threads}
        last_index, _ = picture_of(consumer.video[-1][1])
        assert last_index == (len(consumer.video) - 1) % 256
    finally:
        renderer.release.set()
        await consumer.stop()


@pytest.mark.parametrize("tts_rate", [16000, 22050, 24000, 44100, 48000])
async def test_testcard_stamps_carry_the_exact_speech_position(tts_rate: int) -> None:
    video = VideoFormat(256, 128, FPS)
    generator = AvatarVideoGenerator(create("testcard", video), unpaced(256, 128))
    audio = tone_burst_audio(1.0, [0.5], rate=tts_rate)
    for frame in frames_of(audio, rate=tts_rate):
        await generator.push_audio(frame)
    await generator.push_audio(AudioSegmentEnd())
    items = await collect(generator, until=lambda items: items[-1][0] == "end")
    await generator.aclose()

    stamps = []
    for kind, frame, _ in items:
        if kind == "video":
            pixels = np.frombuffer(frame.data, dtype=np.uint8).reshape(128, 256, 4)
            stamps.append(read_stamp(pixels))
    assert all(s is not None for s in stamps)
    speech_stamps = [s for s in stamps if s.speech]
    assert len(speech_stamps) == 30
    timeline = FrameTimeline(16000, FPS)
    assert [s.speech_position for s in speech_stamps] == [timeline.boundary(k) for k in range(30)]
    assert [s.frame_index for s in stamps] == list(range(len(stamps)))
    loudest = max(speech_stamps, key=lambda s: s.level)
    assert loudest.speech_position == timeline.boundary(15)  # the burst at 0.5 s


async def test_a_frame_cleared_while_its_render_is_awaited_is_not_sent() -> None:
    # A render slow enough that the emitter is waiting for it when the interruption lands.
    renderer = RecordingRenderer(VideoFormat(64, 64, FPS), delay_s=0.2)
    renderer.capabilities = RendererCapabilities(sample_rate=16000, batch_size=1)
    generator = AvatarVideoGenerator(renderer, unpaced())
    for frame in frames_of(tone_burst_audio(1.0, [])):
        await generator.push_audio(frame)
    it = generator.__aiter__()
    pending = asyncio.ensure_future(it.__anext__())
    await asyncio.sleep(0.05)  # the emitter now waits for the first speech frame's picture
    generator.clear_buffer()
    first = await pending
    items = [first] + [await it.__anext__() for _ in range(5)]
    await generator.aclose()
    audio = [i for i in items if isinstance(i, rtc.AudioFrame)]
    assert audio and all((a.userdata or {}).get(IDLE_AUDIO_KEY) for a in audio)


async def test_a_frame_cleared_after_its_picture_went_out_sends_silence_not_its_speech() -> None:
    # The consumer has taken a speech frame's picture (AVSynchronizer may hold it while its
    # queue is full) when the interruption lands: that frame's audio must not play.
    generator = AvatarVideoGenerator(RecordingRenderer(VideoFormat(64, 64, FPS)), unpaced())
    for frame in frames_of(tone_burst_audio(1.0, [])):
        await generator.push_audio(frame)
    it = generator.__aiter__()
    while not isinstance(await it.__anext__(), rtc.VideoFrame):
        pass
    speech = await it.__anext__()
    assert isinstance(speech, rtc.AudioFrame) and not (speech.userdata or {}).get(IDLE_AUDIO_KEY)
    assert isinstance(await it.__anext__(), rtc.VideoFrame)  # the next speech frame's picture

    generator.clear_buffer()
    audio = await it.__anext__()
    await generator.aclose()
    assert isinstance(audio, rtc.AudioFrame)
    assert (audio.userdata or {}).get(IDLE_AUDIO_KEY), "speech played after clear_buffer"
    assert audio.samples_per_channel == speech.samples_per_channel  # A/V queues stay level
    assert not np.frombuffer(audio.data, dtype=np.int16).any()


# -- audio lead (how AvatarPublisher reads the generator) ---------------------------------------

LEAD = 3


def stamp_of(frame: rtc.VideoFrame, width: int, height: int):
    return read_stamp(np.frombuffer(frame.data, dtype=np.uint8).reshape(height, width, 4))


async def test_with_an_audio_lead_each_picture_comes_the_lead_after_its_own_audio() -> None:
    generator = AvatarVideoGenerator(
        create("testcard", VideoFormat(256, 128, FPS)), unpaced(256, 128)
    )
    generator.lead_audio(LEAD)
    for frame in frames_of(tone_burst_audio(1.0, [0.5])):
        await generator.push_audio(frame)
    await generator.push_audio(AudioSegmentEnd())
    items = await collect(generator, until=lambda items: count(items, "video") >= 45)
    await generator.aclose()

    # Audio of frames 0..LEAD-1 first; then each picture k follows the audio of frame k+LEAD.
    kinds = [k for k, _, _ in items if k != "end"]
    assert kinds[:LEAD] == ["audio"] * LEAD
    assert kinds[LEAD:] == ["audio", "video"] * ((len(kinds) - LEAD) // 2)
    stamps = [stamp_of(f, 256, 128) for k, f, _ in items if k == "video"]
    assert [s.frame_index for s in stamps] == list(range(len(stamps)))
    # Still exactly paired: the speech pictures carry the speech positions of their own audio.
    speech_stamps = [s for s in stamps if s.speech]
    timeline = FrameTimeline(16000, FPS)
    assert [s.speech_position for s in speech_stamps] == [
        timeline.boundary(k) for k in range(len(speech_stamps))
    ]
    assert len(speech_audio(items)) == 30


async def test_with_an_audio_lead_a_picture_shows_an_expression_set_after_its_audio_left() -> None:
    renderer = RecordingRenderer(VideoFormat(64, 64, FPS))
    renderer.capabilities = RendererCapabilities(sample_rate=16000, batch_size=1)
    current = [Expression("neutral", 0.0)]
    generator = AvatarVideoGenerator(renderer, unpaced(), expression=lambda: current[0])
    generator.lead_audio(LEAD)
    stream = generator.__aiter__()
    audio_frames = 0
    while audio_frames < 30:
        if isinstance(await stream.__anext__(), rtc.AudioFrame):
            audio_frames += 1
    # Frame 29's audio is out (frames 0..29); pictures up to ~26 are out or being drawn.
    current[0] = Expression("happy", 1.0)
    pictures = 0
    while pictures < 10:
        if isinstance(await stream.__anext__(), rtc.VideoFrame):
            pictures += 1
    await generator.aclose()

    by_index = {r.index: r.expression.emotion for r in renderer.requests}
    # The picture of a frame whose audio left before the change is drawn after it.
    assert by_index[29 - LEAD + 2] == "happy"
    assert by_index[29] == "happy"
    assert by_index[10] == "neutral"


async def test_with_an_audio_lead_an_interruption_drops_the_pictures_still_owed() -> None:
    generator = AvatarVideoGenerator(
        create("testcard", VideoFormat(256, 128, FPS)), unpaced(256, 128)
    )
    generator.lead_audio(LEAD)
    for frame in frames_of(tone_burst_audio(3.0, [])):
        await generator.push_audio(frame)
    await generator.push_audio(AudioSegmentEnd())
    before = await collect(generator, until=lambda items: len(speech_audio(items)) >= 20)
    last_audio_out = 19  # frames 0..19 are speech, and their audio is out

    generator.clear_buffer()
    after = await collect(generator, until=lambda items: count(items, "video") >= 10)
    await generator.aclose()

    assert speech_audio(after) == []
    shown = [stamp_of(f, 256, 128) for k, f, _ in before + after if k == "video"]
    # No picture of a cleared frame (one whose audio the consumer threw away) goes out, and
    # the pictures after the interruption are idle and in order.
    indexes = [s.frame_index for s in shown]
    assert indexes == sorted(indexes)
    cleared = set(range(last_audio_out - LEAD + 1, last_audio_out + 1))
    assert not cleared & set(indexes), (
        f"pictures of cleared frames went out: {cleared & set(indexes)}"
    )
    assert all(not s.speech for s in shown[-10:])


def test_lead_audio_needs_idle_audio_and_must_come_before_reading() -> None:
    renderer = RecordingRenderer(VideoFormat(64, 64, FPS))
    silent_idle = AvatarVideoGenerator(
        renderer, RuntimeOptions(64, 64, FPS, OUT_RATE, idle_audio=False)
    )
    with pytest.raises(ValueError, match="idle audio"):
        silent_idle.lead_audio(LEAD)
    with pytest.raises(ValueError):
        AvatarVideoGenerator(renderer, unpaced()).lead_audio(-1)


async def test_an_utterances_first_frame_is_rendered_alone_and_the_rest_in_batches() -> None:
    renderer = RecordingRenderer(VideoFormat(64, 64, FPS))  # prefers batches of 4
    generator = AvatarVideoGenerator(renderer, unpaced())
    for seconds in (0.5, 0.5):
        for frame in frames_of(tone_burst_audio(seconds, [])):
            await generator.push_audio(frame)
        await generator.push_audio(AudioSegmentEnd())
    await collect(generator, until=lambda items: count(items, "end") == 2)
    await generator.aclose()

    speech_batches = [b for b in renderer.batches if b[0].is_speech]
    firsts = [b for b in speech_batches if b[0].segment_position == 0]
    assert len(firsts) == 2 and all(len(b) == 1 for b in firsts)
    assert max(len(b) for b in speech_batches) > 1  # the others still go in batches
