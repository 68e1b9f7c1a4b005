"""`AvatarSession` from a user's own agent, in a real room: the user's AgentSession speaks
through it in-process and through a dispatched avatar worker (remote), a viewer sees and hears
the avatar, controls reach the picture, interrupting the user's session stops the avatar, the
LLM tools change the face, and `aclose` leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import Agent, AgentSession, llm
from livekit.agents.llm.utils import execute_function_call
from livekit.agents.metrics.base import AvatarMetrics
from livekit.agents.voice.room_io import RoomOptions
from PIL import Image

from avatar_runtime import EMOTIONS, AvatarCatalog, AvatarSession, BackgroundLibrary, ControlError
from avatar_runtime import controls as ctl
from avatar_runtime.piper_tts import PiperTTS
from avatar_runtime.remote import PUBLISH_ON_BEHALF
from bench.observer import RoomObserver
from tests.livekit_server import LiveKitServer, make_token
from tests.scripted_llm import ScriptedLLM, ToolCall
from tests.worker_process import running_worker

pytestmark = [pytest.mark.livekit, pytest.mark.usefixtures("private_cache")]

SIZE = 256
CORNER = (0.0, 0.9, 0.08, 1.0)
TOP_CORNER = (0.0, 0.0, 0.08, 0.08)
FACE = (0.3, 0.2, 0.7, 0.75)
"""Where the astronaut's face is in meshwarp's 256x256 picture: brows, eyes and mouth."""
SENTENCE = "This sentence is long enough for a viewer to hear the avatar speaking it clearly."
LONG_TEXT = " ".join([SENTENCE] * 4)
WORKER_NAME = f"avatar-session-test-{uuid.uuid4().hex[:6]}"


@dataclass
class Conversation:
    """The user's side: their room, their AgentSession, our AvatarSession, and a viewer."""

    room: rtc.Room
    session: AgentSession
    avatar: AvatarSession
    viewer: RoomObserver
    metrics: list[AvatarMetrics] = field(default_factory=list)

    def attribute(self, key: str) -> str | None:
        participant = self.viewer.participant(self.avatar.avatar_identity)
        return participant.attributes.get(key) if participant is not None else None

    async def wait_attribute(self, key: str, value: str, timeout: float = 3.0) -> None:
        await self.viewer.wait_for(lambda: self.attribute(key) == value, timeout, f"{key}={value}")

    async def heard_speaking(self, since: float, timeout: float = 60.0) -> None:
        await self.viewer.wait_for(
            lambda: any(
                end - start > 1.0 for start, end in self.viewer.speech_spans() if start >= since
            ),
            timeout,
            "the avatar to be heard speaking",
        )


async def converse(
    server: LiveKitServer,
    avatar: AvatarSession,
    *,
    llm_model: llm.LLM | None = None,
    region: tuple[float, float, float, float] = CORNER,
    decode_stamps: bool = True,
    tools: bool = False,
) -> Conversation:
    """Join a room as the user's agent would, start `avatar` and an AgentSession speaking
    through it, and a viewer watching the avatar."""
    name = f"avatar-session-{uuid.uuid4().hex[:8]}"
    room = rtc.Room()
    await room.connect(server.url, make_token(server, "agent", name, can_update_own_metadata=True))
    session = AgentSession(tts=PiperTTS(), llm=llm_model)
    conversation = Conversation(
        room,
        session,
        avatar,
        RoomObserver(
            server.url,
            make_token(server, "viewer", name),
            decode_stamps=decode_stamps,
            region=region,
        ),
    )
    avatar.on("metrics_collected", conversation.metrics.append)
    await avatar.start(session, room=room)
    await session.start(
        agent=Agent(instructions="You are a test agent.", tools=avatar.tools() if tools else []),
        room=room,
        room_options=RoomOptions(text_input=False, audio_input=False, audio_output=False),
    )
    await conversation.viewer.connect()
    await avatar.wait_for_join(timeout=60)
    await conversation.viewer.wait_for(
        lambda: len(conversation.viewer.video) >= 10, 30, "the avatar's video"
    )
    return conversation


async def close(conversation: Conversation) -> None:
    await asyncio.wait_for(conversation.viewer.aclose(), 15)
    await asyncio.wait_for(conversation.avatar.aclose(), 15)
    await asyncio.wait_for(conversation.session.aclose(), 15)
    await asyncio.wait_for(conversation.room.disconnect(), 15)


async def assert_surprise_shows(avatar: AvatarSession, viewer: RoomObserver) -> None:
    """Surprise at full intensity changes a meshwarp face (brows, eyes, mouth) well past how
    much the idle face moves by itself. The viewer must watch the FACE region."""
    await avatar.set_emotion("neutral", 0.0)
    await asyncio.sleep(1.0)
    neutral_from = time.perf_counter()
    await asyncio.sleep(1.0)
    neutral = [v for v in viewer.video if v.arrived >= neutral_from]
    idle_change = float(np.mean([np.abs(v.luma - neutral[0].luma).mean() for v in neutral]))
    await avatar.set_emotion("surprised", 1.0)
    await asyncio.sleep(0.8)  # eased in over 300 ms
    surprised = [v for v in viewer.video if v.arrived >= time.perf_counter() - 0.3]
    base = np.mean([v.luma for v in neutral], axis=0)
    change = float(np.mean([np.abs(v.luma - base).mean() for v in surprised]))
    assert change > max(3.0, 2.5 * idle_change), (change, idle_change)


def mean_luma(samples: list, since: float) -> float:  # noqa: ANN001 - VideoSample
    return float(np.mean([s.luma.mean() for s in samples if s.arrived >= since]))


# ------------------------------------------------------------------------------- in-process


@pytest.fixture
async def testcard(livekit_server: LiveKitServer) -> AsyncIterator[Conversation]:
    conversation = await converse(
        livekit_server, AvatarSession(renderer="testcard", width=SIZE, height=SIZE)
    )
    try:
        yield conversation
    finally:
        await close(conversation)


async def test_inprocess_avatar_speaks_the_agent_sessions_words(testcard: Conversation) -> None:
    viewer = testcard.viewer
    # In-process the avatar is the agent participant itself, publishing audio and video.
    assert testcard.avatar.avatar_identity == testcard.room.local_participant.identity
    assert viewer.video_publisher == viewer.audio_publisher == "agent"
    assert (viewer.video[-1].width, viewer.video[-1].height) == (SIZE, SIZE)

    since = time.perf_counter()
    handle = testcard.session.say(SENTENCE)
    await testcard.heard_speaking(since)
    await asyncio.wait_for(handle.wait_for_playout(), 30)
    assert len(viewer.speech_frames()) > 30

    # livekit-agents' avatar metrics: the join, and the playback latency of the reply.
    await viewer.wait_for(
        lambda: any(m.playback_latency is not None for m in testcard.metrics), 5, "metrics"
    )
    joined = [m for m in testcard.metrics if m.avatar_joined_time is not None]
    assert joined and joined[0].metadata is not None
    assert joined[0].metadata.model_provider == "avatar-agents"


async def test_interrupting_the_agent_session_stops_the_avatar_within_a_frame(
    testcard: Conversation,
) -> None:
    viewer = testcard.viewer
    testcard.session.say(LONG_TEXT)
    await viewer.wait_for(lambda: len(viewer.speech_frames()) >= 30, 60, "the reply to start")
    await testcard.wait_attribute(ctl.SPEAKING_ATTRIBUTE, "true")

    interrupted_at = time.perf_counter()
    await testcard.session.interrupt()  # the user's own session, as their code would
    await viewer.wait_for(lambda: viewer.idle_after_speech(), 3, "the avatar to stop")
    late = [v for v in viewer.speech_frames() if v.arrived > interrupted_at]
    # One frame of the avatar's, plus what was already on its way over loopback.
    assert len(late) <= 3, f"{len(late)} speech frames arrived after the interruption"
    await testcard.wait_attribute(ctl.SPEAKING_ATTRIBUTE, "false")
    assert testcard.avatar.state.speaking is False


async def test_aclose_stops_the_avatar_and_leaves_nothing_running(
    livekit_server: LiveKitServer,
) -> None:
    conversation = await converse(
        livekit_server, AvatarSession(renderer="testcard", width=SIZE, height=SIZE)
    )
    room, viewer = conversation.room, conversation.viewer
    try:
        await conversation.avatar.aclose()
        await conversation.avatar.aclose()  # twice is fine
        await viewer.wait_for(
            lambda: not viewer.participant("agent").track_publications,  # type: ignore[union-attr]
            5,
            "the avatar's tracks to be unpublished",
        )
        ours = [
            task
            for task in asyncio.all_tasks()
            if "avatar_runtime" in task.get_coro().cr_code.co_filename  # type: ignore[union-attr]
        ]
        assert ours == []
        with pytest.raises(rtc.RpcError) as refused:
            await viewer.room.local_participant.perform_rpc(
                destination_identity="agent", method=ctl.GET_STATE, payload=""
            )
        assert refused.value.code == rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD
        # The agent itself is still in its room: closing the avatar did not remove it.
        assert room.isconnected() and "agent" in viewer.room.remote_participants
    finally:
        await close(conversation)


@pytest.fixture
async def meshwarp(livekit_server: LiveKitServer, tmp_path: Path) -> AsyncIterator[Conversation]:
    backgrounds = BackgroundLibrary(tmp_path / "backgrounds")
    avatars = tmp_path / "avatars"
    avatars.mkdir()
    # Seed 002 names its avatar "doctor_avatar_1": a portrait registered under that id.
    from renderers.bundled import DEFAULT_PORTRAIT

    Image.open(DEFAULT_PORTRAIT).save(avatars / "doctor_avatar_1.png")
    conversation = await converse(
        livekit_server,
        AvatarSession(
            avatar_id="doctor_avatar_1",
            avatar_name="Heallink Health Assistant",
            width=SIZE,
            height=SIZE,
            backgrounds=backgrounds,
            avatars=AvatarCatalog(avatars),
        ),
        region=FACE,
        decode_stamps=False,
    )
    try:
        yield conversation
    finally:
        await close(conversation)


async def test_seed_002_snippet_runs_and_its_controls_reach_the_picture(
    meshwarp: Conversation,
) -> None:
    avatar, viewer = meshwarp.avatar, meshwarp.viewer
    assert viewer.participant("agent").name == "Heallink Health Assistant"  # type: ignore[union-attr]

    # Seed 002's calls, as written there.
    await avatar._set_emotion("concerned", 0.7)
    await avatar._set_emotion("reassuring", 0.8)
    await avatar._set_emotion("happy", 0.6)
    state = await avatar.set_background("medical_office")
    assert state.background == "medical_office"
    state = await avatar.set_background("clinic_room")
    assert (state.emotion, state.intensity, state.background) == ("happy", 0.6, "clinic_room")
    await meshwarp.wait_attribute(ctl.EMOTION_ATTRIBUTE, "happy")
    await meshwarp.wait_attribute(ctl.BACKGROUND_ATTRIBUTE, "clinic_room")

    # An emotion reaches the face: surprise moves brows, eyes and mouth well past idle motion.
    await avatar.set_background("original")
    await assert_surprise_shows(avatar, viewer)

    # A background reaches the corner of the picture (the top one: the suit fills the bottom).
    viewer.region = TOP_CORNER
    await avatar.set_background("color:#102030")
    await asyncio.sleep(0.5)
    corner = [v for v in viewer.video if v.arrived >= time.perf_counter() - 0.2]
    assert abs(float(np.mean([v.luma.mean() for v in corner])) - 0x20) < 16


async def test_bad_values_are_refused_with_the_valid_ones(meshwarp: Conversation) -> None:
    avatar = meshwarp.avatar
    with pytest.raises(ControlError) as refused:
        await avatar.set_emotion("ecstatic")
    assert refused.value.code == ctl.INVALID_VALUE
    assert refused.value.valid == list(EMOTIONS)
    with pytest.raises(ControlError) as refused:
        await avatar.set_emotion("happy", 1.5)
    assert "between 0 and 1" in refused.value.message
    with pytest.raises(ControlError) as refused:
        await avatar.set_background("moon_base")
    assert refused.value.valid is not None and "blur" in refused.value.valid
    assert avatar.state.emotion == "neutral"  # nothing was applied


async def test_llm_tools_change_the_face_as_a_model_calls_them(meshwarp: Conversation) -> None:
    tools = meshwarp.avatar.tools()
    schemas = {tool.info.name: tool.info.raw_schema for tool in tools}  # type: ignore[union-attr]
    assert set(schemas) == {"set_emotion", "set_background"}
    assert schemas["set_emotion"]["parameters"]["properties"]["emotion"]["enum"] == list(EMOTIONS)
    assert (
        "medical_office"
        in schemas["set_background"]["parameters"]["properties"]["background_id"]["enum"]
    )

    context = llm.ToolContext(tools)

    async def call(name: str, arguments: dict[str, object]) -> llm.FunctionCallOutput:
        result = await execute_function_call(
            llm.FunctionToolCall(name=name, arguments=json.dumps(arguments), call_id="c1"),
            context,
        )
        assert result.fnc_call_out is not None
        return result.fnc_call_out

    out = await call("set_emotion", {"emotion": "concerned", "intensity": 0.6})
    assert not out.is_error and "concerned" in out.output
    assert meshwarp.avatar.state.emotion == "concerned"
    await meshwarp.wait_attribute(ctl.EMOTION_ATTRIBUTE, "concerned")

    out = await call("set_background", {"background_id": "hospital_room"})
    assert not out.is_error and meshwarp.avatar.state.background == "hospital_room"

    out = await call("set_emotion", {"emotion": "joyful"})
    assert out.is_error and "unknown emotion 'joyful'" in out.output
    assert "reassuring" in out.output  # the valid ones, for the model to pick from
    out = await call("set_background", {"background_id": 7})
    assert out.is_error and "must be a string" in out.output
    assert meshwarp.avatar.state.emotion == "concerned"


async def test_a_scripted_model_changes_its_own_expression_while_it_answers(
    livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    model = ScriptedLLM(
        [
            [ToolCall("set_emotion", {"emotion": "concerned", "intensity": 0.8})],
            "I am sorry to hear that. Tell me more about the headache.",
        ]
    )
    conversation = await converse(
        livekit_server,
        AvatarSession(
            renderer="testcard",
            width=SIZE,
            height=SIZE,
            backgrounds=BackgroundLibrary(tmp_path / "backgrounds"),
        ),
        llm_model=model,
        tools=True,
    )
    try:
        since = time.perf_counter()
        handle = conversation.session.generate_reply(user_input="I have had a headache all day.")
        await conversation.wait_attribute(ctl.EMOTION_ATTRIBUTE, "concerned", timeout=30)
        await conversation.heard_speaking(since)
        await asyncio.wait_for(handle.wait_for_playout(), 60)
        assert conversation.avatar.state.intensity == 0.8
        # The model was told what its face does now.
        outputs = [
            item
            for item in model.calls[-1].items
            if item.type == "function_call_output" and item.name == "set_emotion"
        ]
        assert outputs and "concerned" in outputs[0].output
    finally:
        await close(conversation)


def test_configuration_mistakes_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="not a renderer"):
        AvatarSession(renderer="nope")
    with pytest.raises(ValueError, match="mode="):
        AvatarSession(mode="cloud")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="even"):
        AvatarSession(width=511)
    with pytest.raises(ValueError, match="emotion="):
        AvatarSession(emotion="ecstatic")
    with pytest.raises(ValueError, match="unknown background"):
        AvatarSession(background="moon_base")
    with pytest.raises(ValueError, match="catalog id, not a path"):
        AvatarSession(mode="remote", avatar=Path("/tmp/portrait.png"))
    with pytest.raises(RuntimeError, match="start"):
        AvatarSession().avatar_identity  # noqa: B018


# ----------------------------------------------------------------------------------- remote


@pytest.fixture(scope="module")
def avatar_worker(livekit_server: LiveKitServer, private_cache: Path) -> Iterator[None]:
    """The project's avatar worker as its own process, as on a GPU machine."""
    with running_worker(
        livekit_server,
        ["-m", "agent.avatar_worker", "dev"],
        {"AVATAR_WORKER_NAME": WORKER_NAME, "AVATAR_RENDERER": "meshwarp"},
    ):
        yield


def remote_avatar(server: LiveKitServer, renderer: str = "testcard") -> AvatarSession:
    """A remote-mode AvatarSession for the avatar worker above, outside a job (so it dispatches
    through a LiveKit API of its own). The worker is configured for meshwarp: the testcard is
    what the agent asks for."""
    return AvatarSession(
        mode="remote",
        renderer=renderer,
        width=SIZE,
        height=SIZE,
        avatar_worker_name=WORKER_NAME,
        livekit_url=server.url,
        api_key=server.api_key,
        api_secret=server.api_secret,
    )


@pytest.fixture
async def remote(livekit_server: LiveKitServer, avatar_worker: None) -> AsyncIterator[Conversation]:
    conversation = await converse(
        livekit_server,
        remote_avatar(livekit_server),
    )
    try:
        yield conversation
    finally:
        await close(conversation)


async def test_remote_avatar_joins_on_the_agents_behalf_and_speaks(remote: Conversation) -> None:
    viewer, avatar = remote.viewer, remote.avatar
    assert avatar.avatar_identity == "agent-avatar"
    publisher = viewer.participant(avatar.avatar_identity)
    assert publisher is not None and publisher.attributes[PUBLISH_ON_BEHALF] == "agent"
    assert viewer.video_publisher == viewer.audio_publisher == "agent-avatar"
    assert (viewer.video[-1].width, viewer.video[-1].height) == (SIZE, SIZE)
    assert viewer.video[-1].stamp is not None  # the renderer the agent asked for

    since = time.perf_counter()
    handle = remote.session.say(SENTENCE)
    await remote.heard_speaking(since)
    await asyncio.wait_for(handle.wait_for_playout(), 30)
    assert len(viewer.speech_frames()) > 30
    assert any(m.avatar_joined_time is not None for m in remote.metrics)


async def test_remote_controls_answer_as_in_process_and_reach_the_picture(
    remote: Conversation,
) -> None:
    avatar, viewer = remote.avatar, remote.viewer
    state = await avatar.set_emotion("happy", 0.5)
    assert (state.emotion, state.intensity) == ("happy", 0.5)
    await remote.wait_attribute(ctl.EMOTION_ATTRIBUTE, "happy")
    assert avatar.state.emotion == "happy"  # read from the avatar's attributes

    with pytest.raises(ControlError) as refused:
        await avatar.set_emotion("ecstatic")
    assert refused.value.code == ctl.INVALID_VALUE and refused.value.valid == list(EMOTIONS)

    await avatar.set_background("color:#102030")
    await asyncio.sleep(0.5)
    corner = [v for v in viewer.video if v.arrived >= time.perf_counter() - 0.2]
    assert abs(mean_luma(corner, 0.0) - 0x20) < 16
    await avatar.set_background("original")  # the testcard's stamps are read from its picture

    remote.session.say(LONG_TEXT)
    await viewer.wait_for(lambda: len(viewer.speech_frames()) >= 30, 60, "the reply to start")
    interrupted_at = time.perf_counter()
    await avatar.interrupt()
    await viewer.wait_for(lambda: viewer.idle_after_speech(), 3, "the avatar to stop")
    late = [v for v in viewer.speech_frames() if v.arrived > interrupted_at + 0.3]
    assert not late, f"{len(late)} speech frames arrived long after the interruption"


async def test_remote_emotion_reaches_the_face_and_aclose_removes_the_avatar(
    livekit_server: LiveKitServer, avatar_worker: None
) -> None:
    conversation = await converse(
        livekit_server,
        remote_avatar(livekit_server, renderer="meshwarp"),
        region=FACE,
        decode_stamps=False,
    )
    try:
        await assert_surprise_shows(conversation.avatar, conversation.viewer)
        await conversation.avatar.aclose()
        await conversation.viewer.wait_for(
            lambda: "agent-avatar" not in conversation.viewer.room.remote_participants,
            10,
            "the avatar to leave",
        )
        assert "agent" in conversation.viewer.room.remote_participants
    finally:
        await close(conversation)
