"""Side by side: our `AvatarPublisher` against livekit-agents' own `AvatarRunner`, the publisher a
user would otherwise pick, both fed the same piper speech the way an agent feeds them (through
`QueueAudioOutput`, faster than real time) and both rendering `testcard` frames.

The avatar runs in this process as its own participant; a second participant receives it and
measures what a viewer gets.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import numpy as np
from livekit import api, rtc
from livekit.agents.voice.avatar import AvatarOptions, AvatarRunner, QueueAudioOutput

from avatar_runtime import AvatarPublisher, AvatarVideoGenerator, RuntimeOptions
from renderers import VideoFormat, create
from tests.livekit_server import LiveKitServer

from .observer import RoomObserver, estimate_av_offset_ms, observer_token

WIDTH = HEIGHT = 512
FPS = 30
RATE = 24000


def synthesize(text: str) -> list[rtc.AudioFrame]:
    """Piper speech, chunked the way the TTS streams it (about 100 ms per frame)."""
    from avatar_runtime.piper_tts import PiperTTS

    async def run() -> list[rtc.AudioFrame]:
        tts = PiperTTS()
        frames = [event.frame async for event in tts.synthesize(text)]
        await tts.aclose()
        return frames

    return asyncio.run(run())


async def _speak(audio: QueueAudioOutput, frames: list[rtc.AudioFrame]) -> None:
    for frame in frames:
        await audio.capture_frame(frame)
    audio.flush()


async def measure(server: LiveKitServer, publisher_kind: str, speech: list[rtc.AudioFrame]) -> dict:
    room_name = f"compare-{uuid.uuid4().hex[:8]}"
    token = (
        api.AccessToken(server.api_key, server.api_secret)
        .with_identity(f"avatar-{publisher_kind}")
        .with_kind("agent")
        .with_grants(api.VideoGrants(room_join=True, room=room_name))
        .to_jwt()
    )
    room = rtc.Room()
    await room.connect(server.url, token)
    observer = RoomObserver(
        server.url, observer_token(server.api_key, server.api_secret, room_name, "viewer", None)
    )
    await observer.connect()

    audio = QueueAudioOutput(sample_rate=RATE)
    ours = publisher_kind == "avatar-agents"
    options = RuntimeOptions(WIDTH, HEIGHT, FPS, RATE, idle_audio=ours)
    generator = AvatarVideoGenerator(create("testcard", VideoFormat(WIDTH, HEIGHT, FPS)), options)
    if ours:
        runner: AvatarPublisher | AvatarRunner = AvatarPublisher(
            room, audio_recv=audio, video_gen=generator
        )
    else:
        runner = AvatarRunner(
            room,
            audio_recv=audio,
            video_gen=generator,
            options=AvatarOptions(WIDTH, HEIGHT, FPS, RATE, 1),
        )
    await runner.start()
    try:
        await observer.wait_for(lambda: len(observer.video) > 60, 60, "avatar video")
        offsets = []
        for _ in range(3):
            start = time.perf_counter()
            segment = observer.last_segment() + 1
            await _speak(audio, speech)
            await observer.wait_until_spoken(segment)
            window = [v for v in observer.video if v.arrived >= start - 0.5]
            heard = [a for a in observer.audio if a.arrived >= start - 0.5]
            offsets.append(estimate_av_offset_ms(window, heard))
            await asyncio.sleep(1.0)
        speech_frames = observer.speech_frames()
        fps = observer.fps(speech_frames[0].arrived, speech_frames[-1].arrived)
    finally:
        await runner.aclose()
        await generator.aclose()  # livekit's AvatarRunner does not close its generator
        await observer.aclose()
        await room.disconnect()
    return {
        "publisher": publisher_kind,
        "offset_ms_per_utterance": [round(o, 1) for o in offsets],
        "offset_ms_mean": round(float(np.mean(offsets)), 1),
        "delivered_fps": round(fps, 2),
        "repeated_frames": generator.stats.repeated_frames,
    }
