"""The remote avatar's audio receiver and `lk.clear_buffer`, against a real livekit-server.

The agent side here speaks livekit-agents' wire protocol by hand (byte streams on
`lk.audio_stream`, the `lk.clear_buffer` RPC) so that the order the race produces under load
is made on purpose: the clear arrives while the interrupted reply's stream is still open (its
trailer comes after). livekit-agents' own receiver then yields the cut stream's end after the
clear, which the generator counts as an empty utterance of its own: the avatar's utterance
counter moved by one more than the turns. `ClearingAudioReceiver` yields only the speech that
follows the clear. (A stream waiting behind an open one cannot happen: a new stream's header
ends the open one in livekit-agents' receiver.)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd

from avatar_runtime import ClearingAudioReceiver
from tests.livekit_server import LiveKitServer, make_token

pytestmark = pytest.mark.livekit

RATE = 24000
CHUNK = RATE // 10  # 100 ms
AUDIO_TOPIC = "lk.audio_stream"  # livekit-agents' DataStream audio protocol
CLEAR_BUFFER = "lk.clear_buffer"


async def _until(predicate, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class _Agent:
    def __init__(self, room: rtc.Room, avatar: str) -> None:
        self.room = room
        self.avatar = avatar

    async def open(self) -> rtc.ByteStreamWriter:
        return await self.room.local_participant.stream_bytes(
            name=f"AUDIO_{uuid.uuid4().hex[:8]}",
            topic=AUDIO_TOPIC,
            destination_identities=[self.avatar],
            attributes={"sample_rate": str(RATE), "num_channels": "1"},
        )

    @staticmethod
    async def say(writer: rtc.ByteStreamWriter, chunks: int, level: int) -> None:
        for _ in range(chunks):
            await writer.write(np.full(CHUNK, level, np.int16).tobytes())

    async def clear(self) -> None:
        await self.room.local_participant.perform_rpc(
            destination_identity=self.avatar, method=CLEAR_BUFFER, payload=""
        )


@pytest.fixture
async def rooms(livekit_server: LiveKitServer) -> AsyncIterator[tuple[rtc.Room, rtc.Room]]:
    name = f"recv-{uuid.uuid4().hex[:8]}"
    agent, avatar = rtc.Room(), rtc.Room()
    suffix = uuid.uuid4().hex[:6]
    await agent.connect(livekit_server.url, make_token(livekit_server, f"agent-{suffix}", name))
    await avatar.connect(livekit_server.url, make_token(livekit_server, f"avatar-{suffix}", name))
    try:
        yield agent, avatar
    finally:
        await avatar.disconnect()
        await agent.disconnect()


async def test_a_clear_drops_the_rest_of_the_cut_stream_and_its_end_but_not_the_next_turn(
    rooms: tuple[rtc.Room, rtc.Room],
) -> None:
    agent_room, avatar_room = rooms
    agent = _Agent(agent_room, avatar_room.local_participant.identity)
    receiver = ClearingAudioReceiver(
        avatar_room, sender_identity=agent_room.local_participant.identity
    )
    await receiver.start()
    items: list[rtc.AudioFrame | AudioSegmentEnd | str] = []
    receiver.on("clear_buffer", lambda: items.append("clear"))

    async def consume() -> None:
        async for item in receiver:
            items.append(item)

    consumer = asyncio.create_task(consume())
    try:
        # The reply: its stream stays open (the agent is still synthesising it).
        reply = await agent.open()
        await agent.say(reply, 3, 1000)
        await _until(lambda: any(isinstance(i, rtc.AudioFrame) for i in items), 10, "the reply")
        # The interruption, then the rest of the reply and its end (level 1000, all stale).
        await agent.clear()
        await agent.say(reply, 2, 1000)
        await reply.aclose()
        # The next turn, after the clear (level 3000).
        turn = await agent.open()
        await agent.say(turn, 4, 3000)
        await turn.aclose()
        await _until(
            lambda: "clear" in items and isinstance(items[-1], AudioSegmentEnd),
            10,
            "the next turn's end",
        )
        await asyncio.sleep(0.3)  # anything stale still on its way would arrive now
    finally:
        consumer.cancel()
        await receiver.aclose()

    after = items[items.index("clear") + 1 :]
    ends = [i for i in after if isinstance(i, AudioSegmentEnd)]
    frames = [i for i in after if isinstance(i, rtc.AudioFrame)]
    levels = {int(np.frombuffer(f.data, np.int16).max()) for f in frames}
    assert len(ends) == 1, f"{len(ends)} utterance ends after the clear (one is the next turn)"
    assert levels == {3000}, f"audio after the clear from streams at levels {sorted(levels)}"
    assert sum(f.samples_per_channel for f in frames) == 4 * CHUNK
    assert isinstance(after[-1], AudioSegmentEnd)
    # What the receiver recorded of each stream: the cut reply (no end), the next turn.
    segments = list(receiver.segments.values())
    assert [(s["cleared"], s["ended"]) for s in segments] == [(True, False), (False, True)]
    assert segments[1]["samples"] == 4 * CHUNK
