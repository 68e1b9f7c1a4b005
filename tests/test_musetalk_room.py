"""The foundation's room test with `AVATAR_RENDERER=musetalk`: an avatar prepared by the job
system's preparation (`model: musetalk`) from a generated still-portrait video and installed
into the avatars directory as the job system installs it, MuseTalk's models with random weights
at SMALL sizes in the published layout (tests/musetalk_fixtures.py), a dispatched worker, and a
LiveKit subscriber that sees and hears the avatar.

Random weights draw noise, not lips, which is enough here: the mouth region must change while
the voice is heard and hold still (the avatar's own frames) when it is not. On this CPU a
frame costs more than a thirtieth of a second, so the runtime repeats pictures to keep the
room's rate; the change is still there while speaking.
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
from renderers.preparation import prepare_avatar_package
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
    pytest.mark.skipif(
        importlib.util.find_spec("diffusers") is None, reason="the musetalk extra is not installed"
    ),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.musetalk_fixtures import SMALL_VAE, write_models

    tiny_vae = {**SMALL_VAE, "block_out_channels": [4, 4, 8, 8], "norm_num_groups": 2}
    return write_models(tmp_path_factory.mktemp("musetalk-models"), vae=tiny_vae)


@pytest.fixture(scope="module")
def avatar(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Path:
    root = tmp_path_factory.mktemp("musetalk-room")
    video = still_portrait_video(root / "still.mp4", frames=38, fps=12)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AVATAR_MUSETALK_DIR", str(models))
        patch.setenv("AVATAR_MUSETALK_DEVICE", "cpu")
        prepared = prepare_avatar_package(
            video, avatar_id="room-avatar", model="musetalk", out_dir=root / "out"
        )
    return install_package(prepared.package, root / "avatars", "room-avatar")


@pytest.fixture(scope="module")
def agent_name(
    livekit_server: LiveKitServer, avatar: Path, models: Path, private_cache: Path
) -> Iterator[str]:
    settings = {"AVATAR_MUSETALK_DIR": str(models), "AVATAR_MUSETALK_DEVICE": "cpu"}
    with renderer_worker(livekit_server, "musetalk", avatar, private_cache, settings) as name:
        yield name


@pytest.fixture(scope="module")
def face_box(avatar: Path) -> tuple[float, float, float, float]:
    boxes = np.array(pickle.loads((avatar / "coords.pkl").read_bytes()), dtype=float)
    x1, y1, x2, y2 = boxes.mean(axis=0)  # MuseTalk's order
    return x1, y1, x2, y2


async def test_musetalk_avatar_talks_in_a_real_room(
    observer: RoomObserver,  # noqa: F811 - the fixture imported from room_fixtures
) -> None:
    await assert_mouth_moves_while_speaking(observer)
