"""The foundation's room test with `AVATAR_RENDERER=liveportrait`: random weights at the SMALL
sizes in LivePortrait's published layout (tests/liveportrait_fixtures.py), a dispatched
worker, and a LiveKit subscriber that sees and hears the avatar.

Random weights paint a smooth blur over the face, not a face, which is enough here: the
pipeline runs end to end (crop, appearance and motion once, driving keypoints, retargeting,
stitching, warp, decode, paste-back), audio and video are published, 30 fps reach the viewer,
and the painted region changes while the voice is heard. Pictures the runtime had to repeat
because a render was late are counted and reported.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from bench.observer import RoomObserver, picture_change, speak_and_watch
from tests.livekit_server import LiveKitServer
from tests.liveportrait_fixtures import liveportrait_dir  # noqa: F401 - a fixture
from tests.room_fixtures import renderer_worker, watching_room

pytestmark = [
    pytest.mark.livekit,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed"),
]

WIDTH, HEIGHT = 256, 256
SENTENCE = "Hello there. I am the avatar, and my face moves while I talk to you."
FACE = (0.38, 0.5, 0.62, 0.7)
"""The mouth's part of the frame (vision/framing.py puts every portrait's face there)."""


@pytest.fixture(scope="module")
def agent_name(
    livekit_server: LiveKitServer,
    liveportrait_dir: Path,  # noqa: F811 - the fixture imported above
    private_cache: Path,
) -> Iterator[str]:
    settings = {
        "AVATAR_LIVEPORTRAIT_DIR": str(liveportrait_dir),
        "AVATAR_LIVEPORTRAIT_BACKEND": "torch",
        "AVATAR_LIVEPORTRAIT_DEVICE": "cpu",
    }
    with renderer_worker(
        livekit_server, "liveportrait", None, private_cache, settings, size=(WIDTH, HEIGHT)
    ) as name:
        yield name


@pytest.fixture
async def observer(livekit_server: LiveKitServer, agent_name: str) -> AsyncIterator[RoomObserver]:
    async with watching_room(livekit_server, agent_name, FACE) as watcher:
        yield watcher


def repeated_share(frames: list) -> float:
    """Share of frames whose face region is the same picture as the frame before."""
    same = sum(np.array_equal(a.luma, b.luma) for a, b in zip(frames, frames[1:], strict=False))
    return same / max(1, len(frames) - 1)


async def test_liveportrait_avatar_talks_in_a_real_room(
    observer: RoomObserver, record_property: pytest.RecordProperty
) -> None:
    turn = await speak_and_watch(observer, SENTENCE, greeting_timeout=60)
    speaking, idle = turn.speaking, turn.idle
    assert {(v.width, v.height) for v in observer.video} == {(WIDTH, HEIGHT)}
    assert observer.audio and observer.video
    fps = observer.fps(turn.start, turn.end)
    repeats = repeated_share(speaking)
    record_property("speaking_fps", round(fps, 1))
    record_property("repeated_share", round(repeats, 3))
    print(f"liveportrait room: {fps:.1f} fps delivered, {100 * repeats:.0f} % repeated pictures")
    assert fps >= 25, f"only {fps:.1f} fps while speaking"
    # The face region is repainted while the voice is heard (the lip retargeting moves the
    # keypoints the warp follows); idle, only blinks and the slow sway move it.
    talking = picture_change(speaking, idle)
    resting = picture_change(idle, idle)
    assert talking > resting, f"face change talking {talking:.2f}, quiet {resting:.2f}"
    assert np.mean([v.luma.mean() for v in idle]) > 30
