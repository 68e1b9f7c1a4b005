"""The publisher's side of the avatar contract, in a real room: what the agent is told about
playback. A missing or early "playback finished" hangs or confuses the agent, so these pin it.

The agent side is livekit-agents' own `QueueAudioOutput` (the in-process audio sink), whose
`playback_started` / `playback_finished` events are what `AgentSession` waits on.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.voice.avatar import QueueAudioOutput
from livekit.agents.voice.io import PlaybackFinishedEvent

from avatar_runtime import AvatarPublisher, AvatarVideoGenerator, RuntimeOptions
from renderers import VideoFormat, create
from tests.livekit_server import LiveKitServer, make_token

pytestmark = pytest.mark.livekit

RATE = 24000


def speech(seconds: float) -> list[rtc.AudioFrame]:
    """A voiced-ish signal in 100 ms frames, as a TTS would push it (faster than real time)."""
    t = np.arange(int(seconds * RATE)) / RATE
    wave = (0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))) * 32767
    samples = wave.astype(np.int16)
    step = RATE // 10
    return [
        rtc.AudioFrame(samples[i : i + step].tobytes(), RATE, 1, samples[i : i + step].size)
        for i in range(0, samples.size, step)
    ]


class Recorder:
    def __init__(self, audio: QueueAudioOutput) -> None:
        self.started: list[float] = []
        self.finished: list[tuple[float, PlaybackFinishedEvent]] = []
        audio.on("playback_started", lambda _: self.started.append(time.perf_counter()))
        audio.on("playback_finished", lambda ev: self.finished.append((time.perf_counter(), ev)))

    async def wait_finished(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.perf_counter() + timeout
        while len(self.finished) < count:
            assert time.perf_counter() < deadline, "no playback_finished reported"
            await asyncio.sleep(0.01)


@pytest.fixture
async def avatar(livekit_server: LiveKitServer):
    room = rtc.Room()
    await room.connect(livekit_server.url, make_token(livekit_server, "avatar", "publisher-test"))
    audio = QueueAudioOutput(sample_rate=RATE, wait_playback_start=True)
    generator = AvatarVideoGenerator(
        create("testcard", VideoFormat(256, 256, 30)), RuntimeOptions(256, 256, 30, RATE)
    )
    publisher = AvatarPublisher(room, audio_recv=audio, video_gen=generator)
    await publisher.start()
    await asyncio.sleep(0.5)  # idle frames flowing, tracks published
    try:
        yield audio, Recorder(audio), publisher
    finally:
        # Bounded, so a stuck shutdown fails here instead of hanging the session.
        await asyncio.wait_for(publisher.aclose(), 15)
        await asyncio.wait_for(room.disconnect(), 15)


async def test_an_utterance_reports_started_once_and_finished_after_it_has_played(avatar) -> None:
    audio, recorder, publisher = avatar
    pushed_at = time.perf_counter()
    for frame in speech(1.5):
        await audio.capture_frame(frame)
    audio.flush()
    await recorder.wait_finished(1)

    finished_at, event = recorder.finished[0]
    assert len(recorder.started) == 1
    assert event.interrupted is False
    assert event.playback_position == pytest.approx(1.5, abs=1 / 30)
    # Reported when played, not when queued: at least the utterance's length after it began.
    assert finished_at - pushed_at >= 1.5 - 0.05
    assert publisher.video_publication is not None and publisher.audio_publication is not None


async def test_clear_buffer_reports_an_interrupted_playback_at_once(avatar) -> None:
    audio, recorder, _ = avatar
    for frame in speech(3.0):
        await audio.capture_frame(frame)
    audio.flush()
    await asyncio.sleep(1.0)

    cleared_at = time.perf_counter()
    audio.clear_buffer()
    await recorder.wait_finished(1)
    finished_at, event = recorder.finished[0]
    assert event.interrupted is True
    assert 0.5 < event.playback_position < 1.6
    assert finished_at - cleared_at < 0.2

    # Nothing more is reported for the cleared utterance, and the next one plays normally.
    await asyncio.sleep(0.5)
    assert len(recorder.finished) == 1
    for frame in speech(0.5):
        await audio.capture_frame(frame)
    audio.flush()
    await recorder.wait_finished(2)
    assert recorder.finished[1][1].interrupted is False
    assert recorder.finished[1][1].playback_position == pytest.approx(0.5, abs=1 / 30)
