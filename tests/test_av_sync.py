"""Lip sync is the receiver's job, and it does it only for tracks it knows belong together.

A WebRTC receiver plays each track after its own jitter buffer. It delays one to match the
other (from the RTCP sender reports) only for tracks of one MediaStream, which livekit-server
gives a subscriber when the publisher put them in one stream (`TrackPublishOptions.stream`) and
the room has `sync_streams` (livekit.yaml, the tests' server, the control API's rooms and
tokens set it). This pins the publisher's half with a real server; `python -m bench --only sync`
measures what a viewer gets.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from livekit import api, rtc
from livekit.agents.voice.avatar import QueueAudioOutput

from avatar_runtime import AvatarPublisher, AvatarVideoGenerator, RuntimeOptions
from avatar_runtime.publisher import AUDIO_TRACK_NAME, AV_STREAM, VIDEO_TRACK_NAME
from renderers import VideoFormat, create
from tests.livekit_server import LiveKitServer, make_token

pytestmark = pytest.mark.livekit

RATE = 24000


async def _publish(
    server: LiveKitServer, room_name: str
) -> tuple[rtc.Room, AvatarPublisher, QueueAudioOutput]:
    room = rtc.Room()
    await room.connect(server.url, make_token(server, "avatar", room_name))
    audio = QueueAudioOutput(sample_rate=RATE)
    generator = AvatarVideoGenerator(
        create("testcard", VideoFormat(256, 256, 30)), RuntimeOptions(256, 256, 30, RATE)
    )
    publisher = AvatarPublisher(room, audio_recv=audio, video_gen=generator)
    await publisher.start()
    return room, publisher, audio


async def test_audio_and_video_are_published_as_one_stream(livekit_server: LiveKitServer) -> None:
    room_name = f"stream-{uuid.uuid4().hex[:8]}"
    room, publisher, _ = await _publish(livekit_server, room_name)
    lkapi = api.LiveKitAPI(
        livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
    )
    try:
        for _ in range(100):
            listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room_name))
            tracks = {t.name: t for p in listed.participants for t in p.tracks}
            if len(tracks) == 2:
                break
            await asyncio.sleep(0.1)
        # What livekit-server tells every subscriber about the two tracks: one named stream,
        # not its default grouping by source (which another camera or microphone would join).
        assert {name: t.stream for name, t in tracks.items()} == {
            AUDIO_TRACK_NAME: AV_STREAM,
            VIDEO_TRACK_NAME: AV_STREAM,
        }
    finally:
        await lkapi.aclose()
        await asyncio.wait_for(publisher.aclose(), 15)
        await asyncio.wait_for(room.disconnect(), 15)
