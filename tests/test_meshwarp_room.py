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

from bench.observer import RoomObserver, observer_token, picture_change
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
    await observer.wait_for(lambda: _quiet_for(observer, 1.0), 30, "the greeting to end")
    said_from = len(observer.video)
    await observer.say(SENTENCE)
    await observer.wait_for(
        lambda: any(end - start > 2.0 for start, end in _spans_after(observer, said_from)),
        60,
        "the sentence to be heard",
    )
    await observer.wait_for(lambda: _quiet_for(observer, 1.0), 30, "the sentence to end")

    start, end = max(_spans_after(observer, said_from), key=lambda span: span[1] - span[0])
    speaking = [v for v in observer.video if start <= v.arrived <= end]
    idle = [v for v in observer.video if v.arrived > end + 0.6]
    assert {(v.width, v.height) for v in observer.video} == {(512, 512)}
    fps = observer.fps(start, end)
    assert fps >= 25, f"only {fps:.1f} fps while speaking"
    # The mouth moves while the voice is heard, much more than it does when quiet.
    talking = picture_change(speaking, idle)
    resting = picture_change(idle, idle)
    assert talking > 2 * resting + 1.0, f"mouth change talking {talking:.1f}, quiet {resting:.1f}"
    # And the picture is a face, not black or frozen: it varies within the idle stretch too.
    assert np.mean([v.luma.mean() for v in idle]) > 30


def _spans_after(observer: RoomObserver, video_index: int) -> list[tuple[float, float]]:
    since = observer.video[video_index].arrived if video_index < len(observer.video) else 0.0
    return [(s, e) for s, e in observer.speech_spans() if s >= since]


def _quiet_for(observer: RoomObserver, seconds: float) -> bool:
    if not observer.audio or observer.audio[-1].arrived - observer.audio[0].arrived < seconds:
        return False
    spans = observer.speech_spans()
    last_loud = spans[-1][1] if spans else 0.0
    return observer.audio[-1].arrived - last_loud >= seconds and bool(spans)
