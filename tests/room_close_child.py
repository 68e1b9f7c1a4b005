"""A process that has the server close rooms under its live, speaking avatar, round after round.

`python -m tests.room_close_child URL HTTP_URL API_KEY API_SECRET ROUNDS`: each round joins a
new room, starts the real avatar runtime (testcard renderer, in-process audio), speaks, has the
server delete the room (the control API's DELETE does exactly this) while audio and video are
being published, and closes the avatar as the agent would. It prints "round N ok" per round.

livekit-rtc 1.1.21 segfaults when the server closes a room while a video `publish_track` is in
flight (docs/livekit-rtc-notes.md); `start_avatar` returns, and announces the avatar, only once
its tracks are up, so the deletion here, made as soon as the avatar is announced, must never
kill this process (tests/test_control_api_sessions.py checks its exit).
"""

from __future__ import annotations

import asyncio
import sys
import time

import numpy as np
from livekit import api, rtc
from livekit.agents.voice.avatar import QueueAudioOutput

from avatar_runtime import RuntimeOptions, start_avatar
from tests.livekit_server import LiveKitServer, make_token

RATE = 24000
FRAME = RATE // 100  # 10 ms


async def _speak(audio: QueueAudioOutput, seconds: float) -> None:
    tone = (np.sin(np.arange(FRAME) * 2 * np.pi * 220 / RATE) * 8000).astype(np.int16)
    for _ in range(int(seconds * 100)):
        await audio.capture_frame(rtc.AudioFrame(tone.tobytes(), RATE, 1, FRAME))
    audio.flush()


async def _round(server: LiveKitServer, lk: api.LiveKitAPI, name: str) -> None:
    room = rtc.Room()
    await room.connect(server.url, make_token(server, "avatar", name, can_update_own_metadata=True))
    audio = QueueAudioOutput(sample_rate=RATE, wait_playback_start=True)
    running = await start_avatar(
        room, audio, renderer="testcard", source=None, options=RuntimeOptions(128, 128, 30, RATE)
    )
    speaking = asyncio.create_task(_speak(audio, 2.0))
    try:
        await asyncio.sleep(0.05)  # a few frames of speech on the way
        await lk.room.delete_room(api.DeleteRoomRequest(room=name))
        deadline = time.monotonic() + 5
        while room.isconnected() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if room.isconnected():
            raise RuntimeError(f"room {name} was not closed by the server")
    finally:
        speaking.cancel()
        await asyncio.wait_for(running.aclose(), 15)
        await asyncio.wait_for(room.disconnect(), 15)


async def main(server: LiveKitServer, rounds: int, prefix: str) -> None:
    async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as lk:
        for n in range(rounds):
            await _round(server, lk, f"{prefix}-{n}")
            print(f"round {n} ok", flush=True)


if __name__ == "__main__":
    url, http_url, key, secret, count = sys.argv[1:6]
    asyncio.run(
        main(LiveKitServer(url, http_url, key, secret), int(count), f"close-{time.time_ns()}")
    )
