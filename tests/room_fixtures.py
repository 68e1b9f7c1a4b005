"""The room-test scaffolding the lip-sync renderers' room tests share (test_wav2lip_room.py,
test_musetalk_room.py): a still-portrait video to prepare an avatar from, a dispatched worker
for a renderer, a LiveKit subscriber watching the mouth, and the check that the mouth moves
while the voice is heard and holds still when it is not.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.observer import RoomObserver, observer_token, picture_change, speak_and_watch
from tests.livekit_server import LiveKitServer
from tests.media import BACKGROUND_BGR, astronaut_head, write_video
from tests.worker_process import running_worker

WIDTH, HEIGHT = 320, 240  # the video's size: the avatar's frames are shown as they are
SENTENCE = "Hello there. I am the avatar, and my mouth moves while I talk to you."


def still_portrait_video(path: Path, *, frames: int, fps: float) -> Path:
    """A WIDTH x HEIGHT video of one still portrait (the astronaut's head on the background):
    any change in the avatar while idle would be the renderer's doing."""
    side = int(0.94 * HEIGHT)
    frame = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    frame[:] = BACKGROUND_BGR[::-1]
    x0, y0 = (WIDTH - side) // 2, (HEIGHT - side) // 2
    frame[y0 : y0 + side, x0 : x0 + side] = cv2.resize(astronaut_head(), (side, side))
    return write_video(path, (frame for _ in range(frames)), fps)


@contextmanager
def renderer_worker(
    server: LiveKitServer,
    renderer: str,
    avatar: Path | None,
    private_cache: Path,
    settings: Mapping[str, str],
    *,
    size: tuple[int, int] = (WIDTH, HEIGHT),
) -> Iterator[str]:
    """A dispatched worker rendering `avatar` (None: the bundled portrait) with `renderer`
    (its `settings`: the renderer's own AVATAR_* variables) at `size`; yields its agent
    name."""
    name = f"e2e-{renderer}-{uuid.uuid4().hex[:6]}"
    source = (
        {}
        if avatar is None
        else {
            "AVATAR_SOURCE": str(avatar),
            "AVATAR_AVATARS_DIR": str(avatar.parent),
        }
    )
    env = {
        "AVATAR_AGENT_NAME": name,
        "AVATAR_RENDERER": renderer,
        **source,
        "AVATAR_WIDTH": str(size[0]),
        "AVATAR_HEIGHT": str(size[1]),
        **settings,
        "AVATAR_CACHE": str(private_cache),
    }
    with running_worker(server, ["-m", "agent", "dev"], env):
        yield name


def mouth_region(x1: float, y1: float, x2: float, y2: float) -> tuple[float, float, float, float]:
    """The lower middle of a face box (video pixels), as fractions of the frame (x0, y0, x1,
    y1)."""
    width, height = x2 - x1, y2 - y1
    return (
        (x1 + 0.3 * width) / WIDTH,
        (y1 + 0.6 * height) / HEIGHT,
        (x2 - 0.3 * width) / WIDTH,
        (y1 + 0.85 * height) / HEIGHT,
    )


@asynccontextmanager
async def watching_room(
    server: LiveKitServer, agent_name: str, region: tuple[float, float, float, float]
) -> AsyncIterator[RoomObserver]:
    """A subscriber in a fresh room with the agent, measuring `region`, once the avatar's
    video flows."""
    room = f"{agent_name}-{uuid.uuid4().hex[:8]}"
    watcher = RoomObserver(
        server.url,
        observer_token(server.api_key, server.api_secret, room, "viewer", agent_name),
        decode_stamps=False,
        region=region,
    )
    await watcher.connect()
    try:
        await watcher.wait_for(lambda: len(watcher.video) > 60, 90, "the avatar's video")
        yield watcher
    finally:
        await watcher.aclose()


async def assert_mouth_moves_while_speaking(observer: RoomObserver) -> None:
    """Speak a sentence: the video keeps its size and 25 fps, and the mouth region changes
    while the voice is heard, far more than it does idle."""
    turn = await speak_and_watch(observer, SENTENCE, greeting_timeout=60)
    speaking, idle = turn.speaking, turn.idle
    assert {(v.width, v.height) for v in observer.video} == {(WIDTH, HEIGHT)}
    fps = observer.fps(turn.start, turn.end)
    assert fps >= 25, f"only {fps:.1f} fps while speaking"
    assert observer.audio and observer.video
    # The mouth is re-drawn while the voice is heard; idle, it is the avatar's own.
    talking = picture_change(speaking, idle)
    resting = picture_change(idle, idle)
    assert talking > 2 * resting + 1.0, f"mouth change talking {talking:.1f}, quiet {resting:.1f}"
    assert np.mean([v.luma.mean() for v in idle]) > 30


@pytest.fixture
async def observer(
    livekit_server: LiveKitServer, agent_name: str, face_box: tuple[float, float, float, float]
) -> AsyncIterator[RoomObserver]:
    """A subscriber watching the mouth of the test module's `agent_name` worker; the module
    gives `face_box`, the avatar's mean face box (x1, y1, x2, y2, video pixels)."""
    async with watching_room(livekit_server, agent_name, mouth_region(*face_box)) as watcher:
        yield watcher
