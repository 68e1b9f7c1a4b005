"""The avatar's controls in a real room: another participant changes emotion and background and
interrupts over LiveKit RPC, and reads the avatar's state from its participant attributes.

This is how the control API reaches a live avatar (it never imports the agent), so the
answers, the error codes and the attributes are pinned here, together with how soon a
background change reaches a viewer's screen.
"""

from __future__ import annotations

import asyncio
import io
import json
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.voice.avatar import QueueAudioOutput
from PIL import Image

from avatar_runtime import (
    EMOTIONS,
    AvatarControls,
    AvatarState,
    BackgroundLibrary,
    RunningAvatar,
    RuntimeOptions,
    start_avatar,
)
from avatar_runtime import controls as ctl
from bench.observer import RoomObserver
from renderers import VideoFormat
from renderers.testcard import TestcardRenderer
from tests.livekit_server import LiveKitServer, make_token
from tests.test_publisher import Recorder, speech

pytestmark = pytest.mark.livekit

RATE = 24000
SIZE = 256
AVATAR = "avatar"
# The bottom-left corner: the testcard's light grey bar (green 192) under its meter band.
CORNER = (0.0, 0.9, 0.08, 1.0)
CORNER_GREEN = 192
NEW_GREEN = 0x20  # of color:#102030
CODEC_TOLERANCE = 16
BUNDLED_BACKGROUNDS = ["clinic_room", "consultation_room", "hospital_room", "medical_office"]
"""The images avatar_runtime bundles, valid everywhere (tests/test_backgrounds_bundled.py)."""


@dataclass
class Live:
    avatar: RunningAvatar
    audio: QueueAudioOutput
    viewer: RoomObserver
    library: BackgroundLibrary

    async def call(self, method: str, payload: Any = "", identity: str = AVATAR) -> dict:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        reply = await self.viewer.room.local_participant.perform_rpc(
            destination_identity=identity, method=method, payload=text
        )
        return json.loads(reply)

    async def error(self, method: str, payload: Any = "", identity: str = AVATAR) -> rtc.RpcError:
        with pytest.raises(rtc.RpcError) as caught:
            await self.call(method, payload, identity)
        return caught.value

    def attributes(self, identity: str = AVATAR) -> dict[str, str]:
        participant = self.viewer.participant(identity)
        return dict(participant.attributes) if participant is not None else {}

    async def wait_attribute(self, key: str, value: str, timeout: float = 1.0) -> float:
        """Seconds until the viewer sees `key` == `value`."""
        started = time.perf_counter()
        await self.viewer.wait_for(
            lambda: self.attributes().get(key) == value, timeout, f"{key}={value}"
        )
        return time.perf_counter() - started


def corner_green(sample) -> float:  # noqa: ANN001 - bench.observer.VideoSample
    return float(sample.luma.mean())


def png(rgb: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), rgb).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def live(livekit_server: LiveKitServer, tmp_path) -> AsyncIterator[Live]:
    room_name = f"controls-{uuid.uuid4().hex[:8]}"
    room = rtc.Room()
    await room.connect(
        livekit_server.url,
        make_token(livekit_server, AVATAR, room_name, can_update_own_metadata=True),
    )
    library = BackgroundLibrary(tmp_path / "backgrounds")
    library.register("office", png((200, 180, 160)))
    audio = QueueAudioOutput(sample_rate=RATE, wait_playback_start=True)
    avatar = await start_avatar(
        room,
        audio,
        renderer="testcard",
        source=None,
        options=RuntimeOptions(SIZE, SIZE, 30, RATE),
        library=library,
    )
    viewer = RoomObserver(
        livekit_server.url,
        make_token(livekit_server, "viewer", room_name),
        decode_stamps=False,
        region=CORNER,
    )
    try:
        await viewer.connect()
        await viewer.wait_for(lambda: len(viewer.video) >= 10, 15, "the avatar's video")
        yield Live(avatar, audio, viewer, library)
    finally:
        await asyncio.wait_for(viewer.aclose(), 15)
        await asyncio.wait_for(avatar.aclose(), 15)
        await asyncio.wait_for(room.disconnect(), 15)


async def test_set_emotion_answers_the_new_state_and_publishes_it(live: Live) -> None:
    # The state is on the participant from the start.
    await live.wait_attribute(ctl.SPEAKING_ATTRIBUTE, "false")
    assert live.attributes()[ctl.EMOTION_ATTRIBUTE] == "neutral"
    assert live.attributes()[ctl.BACKGROUND_ATTRIBUTE] == "original"

    state = await live.call(ctl.SET_EMOTION, {"emotion": "happy", "intensity": 0.8})
    # The testcard has no emotion control: the state is kept, and said not to be shown.
    assert state == {
        "emotion": "happy",
        "intensity": 0.8,
        "background": "original",
        "speaking": False,
        "emotions": [],
        "emotion_shown": False,
        "renderer_error": None,
    }
    assert live.attributes()[ctl.EMOTIONS_ATTRIBUTE] == "[]"
    await live.wait_attribute(ctl.EMOTION_ATTRIBUTE, "happy")
    assert live.attributes()[ctl.INTENSITY_ATTRIBUTE] == "0.8"
    assert live.avatar.state.expression().emotion == "happy"

    # Intensity defaults to 0.7; get_state answers the same state without changing it.
    assert (await live.call(ctl.SET_EMOTION, {"emotion": "sad"}))["intensity"] == 0.7
    assert await live.call(ctl.GET_STATE) == {
        "emotion": "sad",
        "intensity": 0.7,
        "background": "original",
        "speaking": False,
        "emotions": [],
        "emotion_shown": False,
        "renderer_error": None,
    }
    await live.wait_attribute(ctl.INTENSITY_ATTRIBUTE, "0.7")


async def test_invalid_requests_answer_rpc_errors_that_list_what_is_valid(live: Live) -> None:
    error = await live.error(ctl.SET_EMOTION, {"emotion": "ecstatic"})
    assert error.code == ctl.INVALID_VALUE
    assert "ecstatic" in error.message
    assert all(emotion in error.message for emotion in EMOTIONS), error.message
    assert json.loads(error.data or "{}") == {"valid": list(EMOTIONS)}

    for payload in ({"emotion": "happy", "intensity": 1.5}, {"emotion": "happy", "intensity": -1}):
        assert (await live.error(ctl.SET_EMOTION, payload)).code == ctl.INVALID_VALUE

    bad_requests = [
        "{not json",
        "",
        '["happy"]',
        {"intensity": 0.5},
        {"emotion": 3},
        {"emotion": "happy", "intensity": "high"},
        {"emotion": "happy", "intensity": True},
        {"emotion": "happy", "intensty": 0.5},
    ]
    for payload in bad_requests:
        error = await live.error(ctl.SET_EMOTION, payload)
        assert error.code == ctl.BAD_REQUEST, (payload, error.message)
        assert "emotion" in error.message or "intensity" in error.message, error.message

    error = await live.error(ctl.SET_BACKGROUND, {"background_id": "beach"})
    assert error.code == ctl.INVALID_VALUE
    # The images bundled with the runtime are valid beside the one registered.
    valid = ["original", "blur", "color:#RRGGBB", *sorted([*BUNDLED_BACKGROUNDS, "office"])]
    assert all(spec in error.message for spec in valid), error.message
    assert json.loads(error.data or "{}")["valid"] == valid
    assert (await live.error(ctl.SET_BACKGROUND, "nope")).code == ctl.BAD_REQUEST
    assert (await live.error(ctl.SET_BACKGROUND, {"background": "blur"})).code == ctl.BAD_REQUEST

    # Nothing changed.
    assert await live.call(ctl.GET_STATE) == {
        "emotion": "neutral",
        "intensity": 0.0,
        "background": "original",
        "speaking": False,
        "emotions": [],
        "emotion_shown": False,
        "renderer_error": None,
    }

    # An image id registered after the avatar started is valid at once.
    live.library.register("garden", png((10, 200, 10)))
    assert (await live.call(ctl.SET_BACKGROUND, {"background_id": "garden"}))[
        "background"
    ] == "garden"


async def test_a_background_change_reaches_the_viewer_within_frames(live: Live) -> None:
    before = live.viewer.video[-5:]
    assert all(abs(corner_green(v) - CORNER_GREEN) < CODEC_TOLERANCE for v in before)

    calls, replies = [], []
    for spec, canonical, green in [
        ("color:#102030", "color:#102030", NEW_GREEN),
        ("original", "original", CORNER_GREEN),
        ("#102030", "color:#102030", NEW_GREEN),
        ("original", "original", CORNER_GREEN),
        ("color:#102030", "color:#102030", NEW_GREEN),
    ]:
        seen = len(live.viewer.video)
        called = time.perf_counter()
        state = await live.call(ctl.SET_BACKGROUND, {"background_id": spec})
        answered = time.perf_counter()
        assert state["background"] == canonical

        def changed(seen: int = seen, green: int = green) -> bool:
            return any(
                abs(corner_green(v) - green) < CODEC_TOLERANCE for v in live.viewer.video[seen:]
            )

        await live.viewer.wait_for(changed, 2.0, f"frames with background {spec}")
        first = next(
            v for v in live.viewer.video[seen:] if abs(corner_green(v) - green) < CODEC_TOLERANCE
        )
        calls.append((first.arrived - called) * 1000)
        replies.append((first.arrived - answered) * 1000)
        await live.wait_attribute(ctl.BACKGROUND_ATTRIBUTE, canonical)
        await asyncio.sleep(0.3)  # settle: the next change starts from a steady picture

    print(
        "\nbackground change to frame at the viewer, ms: from the RPC call "
        + ", ".join(f"{ms:.0f}" for ms in calls)
        + f" (median {statistics.median(calls):.0f}); from its answer "
        + ", ".join(f"{ms:.0f}" for ms in replies)
        + f" (median {statistics.median(replies):.0f})"
    )
    assert max(replies) < 500, replies

    # The whole corner is the new colour (the testcard has no person to keep).
    last = live.viewer.video[-1]
    assert np.abs(last.luma - NEW_GREEN).max() < CODEC_TOLERANCE


async def test_speaking_follows_playback_and_interrupt_stops_it(live: Live) -> None:
    await live.wait_attribute(ctl.SPEAKING_ATTRIBUTE, "false")
    pushed = time.perf_counter()
    for frame in speech(1.0):
        await live.audio.capture_frame(frame)
    live.audio.flush()
    await live.wait_attribute(ctl.SPEAKING_ATTRIBUTE, "true")
    assert (await live.call(ctl.GET_STATE))["speaking"] is True
    await live.wait_attribute(ctl.SPEAKING_ATTRIBUTE, "false", timeout=3.0)
    # False once the utterance has played, not when it was queued.
    assert time.perf_counter() - pushed >= 1.0 - 0.05

    # avatar.interrupt (start_avatar's default: the publisher's own clear) stops it at once
    # and tells the agent side the playback was interrupted.
    recorder = Recorder(live.audio)
    for frame in speech(3.0):
        await live.audio.capture_frame(frame)
    live.audio.flush()
    await live.wait_attribute(ctl.SPEAKING_ATTRIBUTE, "true")
    assert (await live.call(ctl.INTERRUPT))["speaking"] is False
    await recorder.wait_finished(1, timeout=2.0)
    assert recorder.finished[0][1].interrupted is True
    await live.wait_attribute(ctl.SPEAKING_ATTRIBUTE, "false")


async def test_interrupt_without_handler_failing_handler_and_unregister(
    live: Live, livekit_server: LiveKitServer, tmp_path
) -> None:
    room = rtc.Room()
    room_name = live.viewer.room.name
    await room.connect(
        livekit_server.url,
        make_token(livekit_server, "bare", room_name, can_update_own_metadata=True),
    )
    library = BackgroundLibrary(tmp_path / "many")
    ids = [f"background-number-{n:02d}-with-a-long-name" for n in range(12)]
    for background_id in ids:
        library.register(background_id, png((50, 60, 70)))
    try:
        plain = AvatarControls(room, AvatarState(), library)
        plain.register()
        await live.viewer.wait_for(
            lambda: live.attributes("bare").get(ctl.SPEAKING_ATTRIBUTE) == "false", 5, "bare"
        )
        error = await live.error(ctl.INTERRUPT, identity="bare")
        assert error.code == ctl.NOT_SUPPORTED and "interrupt" in error.message

        # A long list of images: the message stays within what LiveKit carries, data has all.
        error = await live.error(ctl.SET_BACKGROUND, {"background_id": "x" * 500}, "bare")
        assert error.code == ctl.INVALID_VALUE
        assert len(error.message.encode()) <= 256 and "more)" in error.message, error.message
        assert json.loads(error.data or "{}")["valid"][3:] == sorted([*ids, *BUNDLED_BACKGROUNDS])

        plain.unregister()
        error = await live.error(ctl.GET_STATE, identity="bare")
        assert error.code == rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD

        def refuse() -> None:
            raise RuntimeError("AgentSession isn't running")

        refusing = AvatarControls(room, AvatarState(), library, refuse)
        refusing.register()
        error = await live.error(ctl.INTERRUPT, identity="bare")
        assert error.code == ctl.CANNOT_INTERRUPT and "isn't running" in error.message
        # Undeclared, every emotion is shown.
        assert (await live.call(ctl.SET_EMOTION, {"emotion": "sad"}, "bare"))["emotion_shown"]
        refusing.unregister()

        # A renderer that shows some emotions refuses the others, listing what it shows.
        partial = AvatarControls(room, AvatarState(), library, shown_emotions=("neutral", "happy"))
        partial.register()
        state = await live.call(ctl.SET_EMOTION, {"emotion": "happy"}, "bare")
        assert state["emotions"] == ["neutral", "happy"] and state["emotion_shown"] is True
        error = await live.error(ctl.SET_EMOTION, {"emotion": "angry"}, "bare")
        assert error.code == ctl.INVALID_VALUE and "cannot show 'angry'" in error.message
        assert json.loads(error.data or "{}")["valid"] == ["neutral", "happy"]
        await live.viewer.wait_for(
            lambda: live.attributes("bare").get(ctl.EMOTIONS_ATTRIBUTE) == '["neutral","happy"]',
            5,
            "emotions",
        )
        partial.unregister()
    finally:
        await asyncio.wait_for(room.disconnect(), 15)


class SpeakingSwitch:
    """Stands in for AvatarPublisher's `speaking` and its listeners, so a test can stop and
    restart speech faster than one attribute write takes."""

    def __init__(self) -> None:
        self.speaking = False
        self._listeners: list = []

    def add_speaking_listener(self, listener) -> None:  # noqa: ANN001
        self._listeners.append(listener)

    def remove_speaking_listener(self, listener) -> None:  # noqa: ANN001
        self._listeners.remove(listener)

    def set(self, speaking: bool) -> None:
        self.speaking = speaking
        for listener in list(self._listeners):
            listener(speaking)


async def test_speech_stopped_and_restarted_within_one_write_still_shows_the_stop(
    live: Live, livekit_server: LiveKitServer
) -> None:
    room = rtc.Room()
    await room.connect(
        livekit_server.url,
        make_token(livekit_server, "quick", live.viewer.room.name, can_update_own_metadata=True),
    )
    seen: list[str] = []

    def record(changed: dict[str, str], participant: rtc.Participant) -> None:
        if participant.identity == "quick" and ctl.SPEAKING_ATTRIBUTE in changed:
            seen.append(changed[ctl.SPEAKING_ATTRIBUTE])

    live.viewer.room.on("participant_attributes_changed", record)
    switch = SpeakingSwitch()
    controls = AvatarControls(room, AvatarState(), None, publisher=switch)  # type: ignore[arg-type]
    try:
        controls.register()
        switch.set(True)
        await live.viewer.wait_for(
            lambda: live.attributes("quick").get(ctl.SPEAKING_ATTRIBUTE) == "true", 5, "speaking"
        )
        before = len(seen)
        switch.set(False)  # an interruption...
        switch.set(True)  # ...and the next answer, before anything was written
        await live.viewer.wait_for(lambda: len(seen) >= before + 2, 5, "the stop and the start")
        await asyncio.sleep(0.3)
        assert seen[before:] == ["false", "true"]
    finally:
        controls.unregister()
        await asyncio.wait_for(room.disconnect(), 15)


class BreakableTestcard(TestcardRenderer):
    """The testcard, raising while `broken` is set."""

    def __init__(self, video: VideoFormat) -> None:
        super().__init__(video)
        self.broken = False

    def render(self, requests):  # noqa: ANN001, ANN201 - as the base
        if self.broken:
            raise RuntimeError("the model ran out of memory")
        return super().render(requests)


async def test_a_failing_renderer_is_in_the_state_and_its_attribute_until_it_recovers(
    livekit_server: LiveKitServer,
) -> None:
    room_name = f"controls-{uuid.uuid4().hex[:8]}"
    room = rtc.Room()
    await room.connect(
        livekit_server.url,
        make_token(livekit_server, AVATAR, room_name, can_update_own_metadata=True),
    )
    renderer = BreakableTestcard(VideoFormat(128, 128, 30))
    options = replace(
        RuntimeOptions(128, 128, 30, RATE), render_retry_s=0.2, render_retry_max_s=0.2
    )
    avatar = await start_avatar(
        room, QueueAudioOutput(sample_rate=RATE), renderer=renderer, source=None, options=options
    )
    viewer = RoomObserver(livekit_server.url, make_token(livekit_server, "viewer", room_name))
    try:
        await viewer.connect()
        await viewer.wait_for(lambda: len(viewer.video) >= 10, 15, "the avatar's video")
        live = Live(avatar, QueueAudioOutput(), viewer, BackgroundLibrary())
        await live.wait_attribute(ctl.SPEAKING_ATTRIBUTE, "false")
        assert ctl.state_from_attributes(live.attributes())["renderer_error"] is None

        renderer.broken = True
        await viewer.wait_for(
            lambda: ctl.RENDERER_ERROR_ATTRIBUTE in live.attributes(), 3, "the error attribute"
        )
        error = ctl.state_from_attributes(live.attributes())["renderer_error"]
        assert error["code"] == "render_failed"
        assert error["message"] == "renderer testcard failed: the model ran out of memory"
        assert error["since"].endswith("Z")
        assert (await live.call(ctl.GET_STATE))["renderer_error"] == error
        frames = len(viewer.video)
        await asyncio.sleep(1.0)
        # The video goes on (its rate with another session beside it: tests/test_faults.py).
        assert len(viewer.video) - frames >= 15, "the video stopped while the renderer failed"

        renderer.broken = False
        await viewer.wait_for(
            lambda: ctl.RENDERER_ERROR_ATTRIBUTE not in live.attributes(), 3, "the error to clear"
        )
        assert (await live.call(ctl.GET_STATE))["renderer_error"] is None
    finally:
        await asyncio.wait_for(viewer.aclose(), 15)
        await asyncio.wait_for(avatar.aclose(), 15)
        await asyncio.wait_for(room.disconnect(), 15)
