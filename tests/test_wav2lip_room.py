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
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bench.observer import RoomObserver
from control_api.jobs.storage import install_package
from renderers.preparation import PreparationLimits, prepare_avatar_package
from tests.livekit_server import LiveKitServer
from tests.room_fixtures import (
    assert_mouth_moves_while_speaking,
    observer,  # noqa: F401 - a fixture
    renderer_worker,
    still_portrait_video,
)

pytestmark = [
    pytest.mark.livekit,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed"),
]


@pytest.fixture(scope="module")
def avatar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wav2lip-room")
    video = still_portrait_video(root / "still.mp4", frames=90, fps=25)
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
    settings = {
        "AVATAR_WAV2LIP_CHECKPOINT": str(checkpoint),
        "AVATAR_WAV2LIP_BACKEND": "torch",
        "AVATAR_WAV2LIP_DEVICE": "cpu",
    }
    with renderer_worker(livekit_server, "wav2lip", avatar, private_cache, settings) as name:
        yield name


@pytest.fixture(scope="module")
def face_box(avatar: Path) -> tuple[float, float, float, float]:
    boxes = np.array(pickle.loads((avatar / "coords.pkl").read_bytes()), dtype=float)
    y1, y2, x1, x2 = boxes.mean(axis=0)  # LiveTalking's order
    return x1, y1, x2, y2


async def test_wav2lip_avatar_talks_in_a_real_room(
    observer: RoomObserver,  # noqa: F811 - the fixture imported from room_fixtures
) -> None:
    await assert_mouth_moves_while_speaking(observer)
