"""The foundation's room test with `AVATAR_RENDERER=wav2lip`: an avatar prepared by the job
system's preparation from a generated talking-head video and installed into the avatars
directory as the job system installs it, a checkpoint with random weights in the published
layout, a dispatched worker, and a LiveKit subscriber that sees and hears the avatar.

Random weights draw noise, not lips, which is enough here: the mouth region must change while
the voice is heard and hold still (the avatar's own frames) when it is not. The training video
is a still portrait, so any change while idle would be the renderer's doing.
"""

from __future__ import annotations

import importlib.util
import pickle
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.observer import RoomObserver, observer_token, picture_change, speak_and_watch
from control_api.jobs.storage import install_package
from renderers.preparation import PreparationLimits, prepare_avatar_package
from tests.livekit_server import LiveKitServer
from tests.media import BACKGROUND_BGR, astronaut_head, write_video
from tests.worker_process import running_worker

pytestmark = [
    pytest.mark.livekit,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed"),
]

WIDTH, HEIGHT = 320, 240  # the video's size: the avatar's frames are shown as they are
SENTENCE = "Hello there. I am the avatar, and my mouth moves while I talk to you."


@pytest.fixture(scope="module")
def avatar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wav2lip-room")
    side = int(0.94 * HEIGHT)
    frame = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    frame[:] = BACKGROUND_BGR[::-1]
    x0, y0 = (WIDTH - side) // 2, (HEIGHT - side) // 2
    frame[y0 : y0 + side, x0 : x0 + side] = cv2.resize(astronaut_head(), (side, side))
    video = write_video(root / "still.mp4", (frame for _ in range(90)), 25)
    prepared = prepare_avatar_package(
        video,
        avatar_id="room-avatar",
        model="wav2lip",
        out_dir=root / "out",
        limits=PreparationLimits(face_size=96),
    )
    return install_package(prepared.package, root / "avatars", "room-avatar")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from renderers.wav2lip.checkpoint import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("weights") / "wav2lip.pth", size=96)


@pytest.fixture(scope="module")
def agent_name(
    livekit_server: LiveKitServer, avatar: Path, checkpoint: Path, private_cache: Path
) -> Iterator[str]:
    name = f"e2e-wav2lip-{uuid.uuid4().hex[:6]}"
    env = {
        "AVATAR_AGENT_NAME": name,
        "AVATAR_RENDERER": "wav2lip",
        "AVATAR_SOURCE": str(avatar),
        "AVATAR_AVATARS_DIR": str(avatar.parent),
        "AVATAR_WIDTH": str(WIDTH),
        "AVATAR_HEIGHT": str(HEIGHT),
        "AVATAR_WAV2LIP_CHECKPOINT": str(checkpoint),
        "AVATAR_WAV2LIP_BACKEND": "torch",
        "AVATAR_WAV2LIP_DEVICE": "cpu",
        "AVATAR_CACHE": str(private_cache),
    }
    with running_worker(livekit_server, ["-m", "agent", "dev"], env):
        yield name


def mouth_region(package: Path) -> tuple[float, float, float, float]:
    """The lower middle of the face boxes, as fractions of the frame (x0, y0, x1, y1)."""
    boxes = np.array(pickle.loads((package / "coords.pkl").read_bytes()), dtype=float)
    y1, y2, x1, x2 = boxes.mean(axis=0)
    width, height = x2 - x1, y2 - y1
    return (
        (x1 + 0.3 * width) / WIDTH,
        (y1 + 0.6 * height) / HEIGHT,
        (x2 - 0.3 * width) / WIDTH,
        (y1 + 0.85 * height) / HEIGHT,
    )


@pytest.fixture
async def observer(
    livekit_server: LiveKitServer, agent_name: str, avatar: Path
) -> AsyncIterator[RoomObserver]:
    server = livekit_server
    room = f"wav2lip-{uuid.uuid4().hex[:8]}"
    watcher = RoomObserver(
        server.url,
        observer_token(server.api_key, server.api_secret, room, "viewer", agent_name),
        decode_stamps=False,
        region=mouth_region(avatar),
    )
    await watcher.connect()
    try:
        await watcher.wait_for(lambda: len(watcher.video) > 60, 90, "the avatar's video")
        yield watcher
    finally:
        await watcher.aclose()


async def test_wav2lip_avatar_talks_in_a_real_room(observer: RoomObserver) -> None:
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
