"""The foundation's room test with the default renderer: a dispatched worker speaks through the
`meshwarp` avatar and a LiveKit subscriber sees the face talk and hears it.

meshwarp frames carry no stamp, so speech is found in the received audio and the picture is
watched around the mouth (the renderer frames every portrait the same way).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from bench.observer import RoomObserver, observer_token, picture_change, speak_and_watch
from tests.livekit_server import LiveKitServer
from tests.worker_process import running_worker

pytestmark = [pytest.mark.livekit, pytest.mark.slow]

MOUTH = (0.38, 0.52, 0.62, 0.68)  # where meshwarp puts the mouth, as fractions of the frame
SENTENCE = "Hello there. I am the avatar, and my face moves while I talk to you."


@pytest.fixture(scope="module")
def agent_name(livekit_server: LiveKitServer) -> Iterator[str]:
    name = f"e2e-meshwarp-{uuid.uuid4().hex[:6]}"
    env = {"AVATAR_AGENT_NAME": name, "AVATAR_RENDERER": "meshwarp"}
    with running_worker(livekit_server, ["-m", "agent", "dev"], env):
        yield name


@pytest.fixture
async def observer(livekit_server: LiveKitServer, agent_name: str) -> AsyncIterator[RoomObserver]:
    server = livekit_server
    room = f"meshwarp-{uuid.uuid4().hex[:8]}"
    watcher = RoomObserver(
        server.url,
        observer_token(server.api_key, server.api_secret, room, "viewer", agent_name),
        decode_stamps=False,
        region=MOUTH,
    )
    await watcher.connect()
    try:
        await watcher.wait_for(lambda: len(watcher.video) > 60, 60, "the avatar's video")
        yield watcher
    finally:
        await watcher.aclose()


async def test_meshwarp_avatar_talks_in_a_real_room(observer: RoomObserver) -> None:
    turn = await speak_and_watch(observer, SENTENCE, greeting_timeout=30)
    speaking, idle = turn.speaking, turn.idle
    assert {(v.width, v.height) for v in observer.video} == {(512, 512)}
    fps = observer.fps(turn.start, turn.end)
    assert fps >= 25, f"only {fps:.1f} fps while speaking"
    # The mouth moves while the voice is heard, much more than it does when quiet.
    talking = picture_change(speaking, idle)
    resting = picture_change(idle, idle)
    assert talking > 2 * resting + 1.0, f"mouth change talking {talking:.1f}, quiet {resting:.1f}"
    # And the picture is a face, not black or frozen: it varies within the idle stretch too.
    assert np.mean([v.luma.mean() for v in idle]) > 30
