"""`AvatarSession` from a user's own agent, in both modes: how long the avatar takes to join,
how soon a reply is heard, what livekit-agents reports as its playback latency, what a control
costs, and how soon an interruption silences the avatar, all seen from a viewer in the room.

    python -m bench --only library

Each round joins a fresh room as the user's agent (its AgentSession speaks with the piper
voice), starts an `AvatarSession` with meshwarp at 512x512 (remote: through the project's
avatar worker, a separate process registered with the same server), and measures:

* join: `AvatarMetrics` (start until the avatar's video track is published, livekit-agents'
  own measure);
* first audio: `session.say()` until the viewer hears the avatar;
* control round trip: `await avatar.set_emotion(...)` (remote: an RPC to the avatar);
* interrupt to silence: `await session.interrupt()` until the viewer hears no speech.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from livekit import rtc
from livekit.agents import Agent, AgentSession
from livekit.agents.metrics.base import AvatarMetrics
from livekit.agents.voice.room_io import RoomOptions

from avatar_runtime import AvatarSession
from avatar_runtime.piper_tts import PiperTTS
from tests.livekit_server import LiveKitServer, make_token
from tests.worker_process import running_worker

from .observer import RoomObserver

ROUNDS = 3
SIZE = 512
TEXT = (
    "Good morning, and thank you for calling. I will keep talking for a while, so that you "
    "can interrupt me whenever you like, and we can see how quickly I stop."
)
WORKER_NAME = f"bench-avatar-{uuid.uuid4().hex[:6]}"
LOUD_DB = -40.0


async def one_round(server: LiveKitServer, mode: str, voice: PiperTTS) -> dict[str, float]:
    name = f"bench-library-{uuid.uuid4().hex[:8]}"
    room = rtc.Room()
    await room.connect(server.url, make_token(server, "agent", name, can_update_own_metadata=True))
    session: AgentSession[None] = AgentSession(
        tts=voice, turn_handling={"interruption": {"resume_false_interruption": False}}
    )
    avatar = AvatarSession(
        renderer="meshwarp",
        width=SIZE,
        height=SIZE,
        mode="remote" if mode == "remote" else "inprocess",
        avatar_worker_name=WORKER_NAME,
        livekit_url=server.url,
        api_key=server.api_key,
        api_secret=server.api_secret,
    )
    metrics: list[AvatarMetrics] = []
    avatar.on("metrics_collected", metrics.append)
    viewer = RoomObserver(server.url, make_token(server, "viewer", name), decode_stamps=False)
    try:
        await viewer.connect()
        await avatar.start(session, room=room)
        await session.start(
            agent=Agent(instructions="bench"),
            room=room,
            room_options=RoomOptions(text_input=False, audio_input=False, audio_output=False),
        )
        await avatar.wait_for_join(timeout=60)
        await viewer.wait_for(lambda: len(viewer.video) >= 15, 30, "the avatar's video")
        joined = next(m for m in metrics if m.avatar_joined_time is not None)
        assert joined.avatar_joined_time and joined.session_started_time

        await asyncio.sleep(0.5)
        said = time.perf_counter()
        session.say(TEXT)
        await viewer.wait_for(lambda: _loud_since(viewer, said), 30, "the reply to be heard")
        heard = next(a.arrived for a in viewer.audio if a.arrived >= said and a.rms_db > LOUD_DB)
        await asyncio.sleep(1.5)

        started = time.perf_counter()
        await avatar.set_emotion("happy", 0.6)
        control_ms = (time.perf_counter() - started) * 1000

        interrupted = time.perf_counter()
        await session.interrupt()
        await viewer.wait_for(lambda: _quiet_since(viewer, interrupted, 0.5), 10, "silence")
        last_loud = max(
            (a.arrived for a in viewer.audio if a.rms_db > LOUD_DB), default=interrupted
        )
        return {
            "join_ms": (joined.avatar_joined_time - joined.session_started_time) * 1000,
            "first_audio_ms": (heard - said) * 1000,
            "control_ms": control_ms,
            "interrupt_to_silence_ms": max(0.0, last_loud - interrupted) * 1000,
        }
    finally:
        await viewer.aclose()
        await avatar.aclose()
        await session.aclose()
        await room.disconnect()


def _loud_since(viewer: RoomObserver, since: float) -> bool:
    return any(a.arrived >= since and a.rms_db > LOUD_DB for a in viewer.audio)


def _quiet_since(viewer: RoomObserver, since: float, seconds: float) -> bool:
    """The viewer has heard `seconds` of quiet audio after `since`."""
    after = [a for a in viewer.audio if a.arrived >= since]
    if not after or after[-1].arrived - since < seconds:
        return False
    last_loud = max((a.arrived for a in after if a.rms_db > LOUD_DB), default=since)
    return after[-1].arrived - last_loud >= seconds


@contextmanager
def avatar_worker(server: LiveKitServer) -> Iterator[None]:
    with running_worker(
        server,
        ["-m", "agent.avatar_worker", "dev"],
        {"AVATAR_WORKER_NAME": WORKER_NAME, "AVATAR_RENDERER": "meshwarp"},
    ):
        yield


async def run(server: LiveKitServer) -> dict[str, Any]:
    voice = PiperTTS()
    voice.prewarm(block=True)
    results: dict[str, Any] = {"rounds": ROUNDS, "size": f"{SIZE}x{SIZE}", "modes": {}}
    for mode in ("inprocess", "remote"):
        print(f"bench: library, {mode}", flush=True)
        with avatar_worker(server) if mode == "remote" else _nothing():
            rounds = [await one_round(server, mode, voice) for _ in range(ROUNDS)]
        results["modes"][mode] = {
            key: round(statistics.median(r[key] for r in rounds), 1) for key in rounds[0]
        }
        results["modes"][mode]["max_join_ms"] = round(max(r["join_ms"] for r in rounds), 1)
    results["cpu_count"] = os.cpu_count()
    return results


@contextmanager
def _nothing() -> Iterator[None]:
    yield
