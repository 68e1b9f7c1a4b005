"""End to end through a real livekit-server: a dispatched worker speaks through the avatar, and
a participant using the LiveKit Python SDK sees and hears it.

The avatar runs in both modes: in-process (published by the agent participant) and as its own
participant (a separately dispatched avatar worker publishing on the agent's behalf).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from livekit import rtc

from avatar_runtime import controls
from bench.observer import PUBLISH_ON_BEHALF, RoomObserver, observer_token, picture_change
from tests.livekit_server import LiveKitServer
from tests.worker_process import running_worker

pytestmark = [pytest.mark.livekit, pytest.mark.slow]

WIDTH, HEIGHT = 448, 320  # not the default, to prove the configured size is what arrives
LONG_TEXT = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
    "How vexingly quick daft zebras jump. Sphinx of black quartz, judge my vow."
)


@dataclass(frozen=True)
class Deployment:
    server: LiveKitServer
    agent_name: str
    mode: str


def _deploy(server: LiveKitServer, mode: str) -> Iterator[Deployment]:
    suffix = uuid.uuid4().hex[:6]
    env = {
        "AVATAR_AGENT_NAME": f"e2e-agent-{suffix}",
        "AVATAR_WORKER_NAME": f"e2e-avatar-{suffix}",
        "AVATAR_MODE": mode,
        "AVATAR_RENDERER": "testcard",
        "AVATAR_WIDTH": str(WIDTH),
        "AVATAR_HEIGHT": str(HEIGHT),
    }
    with running_worker(server, ["-m", "agent", "dev"], env):
        if mode == "remote":
            with running_worker(server, ["-m", "agent.avatar_worker", "dev"], env):
                yield Deployment(server, env["AVATAR_AGENT_NAME"], mode)
        else:
            yield Deployment(server, env["AVATAR_AGENT_NAME"], mode)


@pytest.fixture(scope="module", params=["inprocess", "remote"])
def deployment(
    request: pytest.FixtureRequest, livekit_server: LiveKitServer
) -> Iterator[Deployment]:
    yield from _deploy(livekit_server, request.param)


@pytest.fixture
async def observer(deployment: Deployment) -> AsyncIterator[RoomObserver]:
    room = f"e2e-{uuid.uuid4().hex[:8]}"
    server = deployment.server
    watcher = RoomObserver(
        server.url,
        observer_token(server.api_key, server.api_secret, room, "viewer", deployment.agent_name),
    )
    await watcher.connect()
    try:
        await watcher.wait_for(
            lambda: len(watcher.video) > 15 and watcher.audio_publisher is not None,
            60,
            "the avatar's video and audio",
        )
        # Let the greeting ("Hi.") finish so each test starts from idle.
        await watcher.wait_for(lambda: watcher.idle_after_speech(), 30, "the greeting to end")
        yield watcher
    finally:
        await watcher.aclose()


async def test_avatar_video_and_audio_arrive_at_configured_size_and_rate(
    deployment: Deployment, observer: RoomObserver
) -> None:
    before = observer.last_segment()
    await observer.say(LONG_TEXT)
    segment = before + 1
    await observer.wait_for(
        lambda: len(observer.segment_frames(segment)) >= 5 * 30, 60, "5 s of speech frames"
    )
    speech = observer.segment_frames(segment)
    fps = observer.fps(speech[0].arrived, speech[-1].arrived)
    assert fps >= 25, f"only {fps:.1f} fps during speech"
    assert {(v.width, v.height) for v in observer.video} == {(WIDTH, HEIGHT)}
    assert observer.loud_audio(), "no speech energy in the received audio"

    # Who publishes: the agent itself in-process, or the avatar worker on its behalf.
    publisher = observer.participant(observer.video_publisher)
    assert publisher is not None and publisher.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    assert observer.audio_publisher == observer.video_publisher
    if deployment.mode == "remote":
        agent_identity = publisher.attributes.get(PUBLISH_ON_BEHALF)
        agent = observer.participant(agent_identity)
        assert agent is not None, "the avatar does not name the agent it publishes for"
        assert not agent.track_publications, "the agent should not publish media of its own"
    else:
        assert PUBLISH_ON_BEHALF not in publisher.attributes

    # The publisher is also who answers the avatar's controls and carries its state.
    state = await call_avatar(observer, controls.SET_EMOTION, {"emotion": "happy"})
    assert state["emotion"] == "happy" and state["intensity"] == 0.7
    await observer.wait_for(
        lambda: avatar_attribute(observer, controls.EMOTION_ATTRIBUTE) == "happy",
        2,
        "the emotion attribute",
    )


async def test_chat_text_speaks_moves_the_picture_and_stays_in_sync(
    observer: RoomObserver,
) -> None:
    idle_frames = observer.video[-10:]
    segment = observer.last_segment() + 1
    await observer.say("Hello there. This sentence is here to be spoken by the avatar.")
    await observer.wait_until_spoken(segment)
    speech = observer.segment_frames(segment)
    assert len(speech) > 60, f"only {len(speech)} speech frames for a 4 s sentence"

    # The received audio carries speech: energy well above the silence around it.
    loud = observer.loud_audio(-35.0)
    assert len(loud) * 10 >= 1000, "less than a second of loud audio arrived"

    # The picture follows the voice: speaking frames differ from the idle picture far more
    # than idle frames differ among themselves.
    speaking = picture_change(speech, idle_frames)
    idling = picture_change(idle_frames, idle_frames)
    assert speaking > 2 * idling + 1.0, f"picture change speaking {speaking:.1f}, idle {idling:.1f}"
    assert max(f.stamp.level for f in speech) > 100  # type: ignore[union-attr]

    offset = observer.av_offset_ms()
    assert abs(offset) <= 80, f"audio/video offset {offset:.0f} ms"


async def test_second_message_interrupts_and_the_next_turn_still_works(
    observer: RoomObserver,
) -> None:
    first = observer.last_segment() + 1
    await observer.say(LONG_TEXT)  # about 9 s of speech
    await observer.wait_for(
        lambda: len(observer.segment_frames(first)) >= 45, 60, "the long reply to start"
    )
    await observer.say("Stop.")
    await observer.wait_until_spoken(first + 1)
    interrupted = observer.segment_frames(first)
    assert len(interrupted) < 5 * 30, "the first reply was not cut short"
    # Numbered from before the turns: the cut reply is not followed by an utterance of its own
    # (remote, its stream's end or tail arriving after the clear once counted as one).
    assert observer.last_segment() == first + 1, "the interruption counted as an utterance"
    assert observer.segment_frames(first + 1), "'Stop.' was not spoken"

    await observer.say("The next turn works.")
    await observer.wait_until_spoken(first + 2)
    assert observer.last_segment() == first + 2
    assert len(observer.segment_frames(first + 2)) > 20


@pytest.fixture
def inprocess_only(deployment: Deployment) -> None:
    """Skips before `observer` joins a room (list it first): on two CPU cores a fourth room
    per mode is one too many while the earlier ones linger."""
    if deployment.mode != "inprocess":
        pytest.skip("in-process mode only")


async def test_interrupt_rpc_interrupts_the_agent_session(
    inprocess_only: None, observer: RoomObserver
) -> None:
    """In-process, `avatar.interrupt` is the AgentSession's interrupt: the reply is cut short
    and the next turn works. (Remote, it clears the avatar's playback: tests/test_controls.py.)"""
    first = observer.last_segment() + 1
    await observer.say(LONG_TEXT)
    await observer.wait_for(
        lambda: (
            len(observer.segment_frames(first)) >= 30
            and avatar_attribute(observer, controls.SPEAKING_ATTRIBUTE) == "true"
        ),
        60,
        "the long reply to start",
    )
    state = await call_avatar(observer, controls.INTERRUPT)
    assert state["speaking"] is False
    await observer.wait_for(lambda: observer.idle_after_speech(), 3, "the avatar to stop")
    assert len(observer.segment_frames(first)) < 4 * 30, "the reply was not cut short"
    await observer.wait_for(
        lambda: avatar_attribute(observer, controls.SPEAKING_ATTRIBUTE) == "false",
        2,
        "speaking to be false",
    )
    await observer.say("The next turn works.")
    await observer.wait_until_spoken(first + 1)


async def call_avatar(
    observer: RoomObserver, method: str, payload: dict[str, object] | None = None
) -> dict[str, object]:
    """Call one of the avatar's control RPCs on whoever publishes its video."""
    assert observer.video_publisher is not None
    reply = await observer.room.local_participant.perform_rpc(
        destination_identity=observer.video_publisher,
        method=method,
        payload=json.dumps(payload) if payload is not None else "",
    )
    return json.loads(reply)


def avatar_attribute(observer: RoomObserver, key: str) -> str | None:
    participant = observer.participant(observer.video_publisher)
    return participant.attributes.get(key) if participant is not None else None
