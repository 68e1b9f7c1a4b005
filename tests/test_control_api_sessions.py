"""Sessions through the control API against a real livekit-server.

The avatar here is the real runtime (`start_avatar`, testcard renderer) joined to the session's
room by the test itself, standing in for the agent worker that `POST /avatars` dispatches (the
dispatch is checked, and tests/test_control_api_e2e.py runs the real worker). That keeps these
tests quick while every hop the control API makes is real: room creation, dispatch, its own
participant, RPC to the avatar and attributes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from livekit import api, rtc
from livekit.agents.voice.avatar import QueueAudioOutput

from avatar_runtime import (
    EMOTIONS,
    BackgroundLibrary,
    RunningAvatar,
    RuntimeOptions,
    start_avatar,
)
from control_api.config import Settings
from tests.control_api_client import AUTH, assert_error, make_settings, png_bytes, start_client
from tests.livekit_server import LiveKitServer, make_token, pdeathsig_preexec

pytestmark = pytest.mark.livekit

AVATAR = "avatar-under-test"


def _settings(server: LiveKitServer, tmp_path: Path, **overrides: Any) -> Settings:
    return make_settings(
        tmp_path,
        livekit_url=server.url,
        public_livekit_url=server.url,
        livekit_api_key=server.api_key,
        livekit_api_secret=server.api_secret,
        **overrides,
    )


async def _close(client: TestClient) -> None:
    """Delete every session the app knows (it resumes those of earlier tests on the same
    server too), then stop it."""
    try:
        listed = await (await client.get("/avatars", headers=AUTH)).json()
        for session in listed["sessions"]:
            await client.delete(f"/avatars/{session['session_id']}", headers=AUTH)
    finally:
        await client.close()


@pytest.fixture
async def client(livekit_server: LiveKitServer, tmp_path: Path) -> AsyncIterator[TestClient]:
    c = await start_client(_settings(livekit_server, tmp_path))
    yield c
    await _close(c)


def _session_id() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


async def _create(client: TestClient, session_id: str | None = None, **extra: Any) -> dict:
    body = {"avatar_id": "default", **({"session_id": session_id} if session_id else {}), **extra}
    resp = await client.post("/avatars", json=body, headers=AUTH)
    assert resp.status == 201, await resp.text()
    return await resp.json()


@dataclass
class Avatar:
    running: RunningAvatar
    room: rtc.Room


@contextlib.asynccontextmanager
async def joined_avatar(
    server: LiveKitServer, session_id: str, backgrounds: Path | None = None
) -> AsyncIterator[Avatar]:
    """The real avatar runtime in the session's room, as the agent would run it; it shares
    the control API's background directory, as a deployment must."""
    room = rtc.Room()
    await room.connect(
        server.url,
        make_token(server, AVATAR, session_id, kind="agent", can_update_own_metadata=True),
    )
    audio = QueueAudioOutput(sample_rate=24000, wait_playback_start=True)
    running = await start_avatar(
        room,
        audio,
        renderer="testcard",
        source=None,
        options=RuntimeOptions(128, 128, 30, 24000),
        library=BackgroundLibrary(backgrounds) if backgrounds is not None else None,
    )
    try:
        yield Avatar(running, room)
    finally:
        await asyncio.wait_for(running.aclose(), 15)
        await asyncio.wait_for(room.disconnect(), 15)


async def _wait_for(predicate, timeout: float = 5.0, what: str = "condition") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _session(client: TestClient, session_id: str) -> dict:
    resp = await client.get(f"/avatars/{session_id}", headers=AUTH)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def _avatar_connected(client: TestClient, session_id: str) -> None:
    async def connected() -> bool:
        return (await _session(client, session_id))["avatar_connected"]

    await _wait_for(connected, 10, "the avatar to join")


@contextlib.asynccontextmanager
async def session_with_avatar(
    client: TestClient, server: LiveKitServer, backgrounds: Path | None = None
) -> AsyncIterator[tuple[str, Avatar]]:
    """A new session whose avatar has joined and is known to the control API."""
    session_id = _session_id()
    await _create(client, session_id)
    async with joined_avatar(server, session_id, backgrounds) as avatar:
        await _avatar_connected(client, session_id)
        yield session_id, avatar


# --- creating and deleting -------------------------------------------------------------------


async def test_create_makes_a_room_dispatches_the_agent_and_returns_a_join_token(
    client: TestClient, livekit_server: LiveKitServer
) -> None:
    session_id = _session_id()
    session = await _create(client, session_id)
    assert session["session_id"] == session["room"] == session_id
    assert session["livekit_url"] == livekit_server.url
    assert session["ws_url"] == f"/ws/{session_id}"
    claims = api.TokenVerifier(livekit_server.api_key, livekit_server.api_secret).verify(
        session["token"]
    )
    assert claims.video is not None and claims.video.room == session_id
    assert claims.identity == session["identity"]
    # The web page announces itself with an attribute (see control_api/tokens.py).
    assert claims.video.can_update_own_metadata is True
    # The session dispatched the agent itself; a join with this token must not add another.
    assert claims.room_config is None or not claims.room_config.agents

    async with api.LiveKitAPI(
        livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
    ) as lk:
        rooms = (await lk.room.list_rooms(api.ListRoomsRequest(names=[session_id]))).rooms
        assert len(rooms) == 1
        assert json.loads(rooms[0].metadata)["avatar_agents"]["avatar_id"] == "default"
        dispatches = await lk.agent_dispatch.list_dispatch(session_id)
        assert [d.agent_name for d in dispatches] == ["test-avatar-agent"]
        assert json.loads(dispatches[0].metadata) == {
            "avatar_id": "default",
            "session_id": session_id,
        }

    state = await _session(client, session_id)
    assert state["avatar_connected"] is False
    assert (state["emotion"], state["background"], state["speaking"]) == (
        "neutral",
        "original",
        False,
    )
    listed = await (await client.get("/avatars", headers=AUTH)).json()
    assert session_id in [s["session_id"] for s in listed["sessions"]]


async def test_create_validates_its_body(client: TestClient) -> None:
    async def post(body: Any) -> tuple[int, dict]:
        resp = await client.post("/avatars", json=body, headers=AUTH)
        return resp.status, await resp.json()

    status, body = await post({"avatar_id": "nobody-by-this-name"})
    assert status == 422
    error = assert_error(body, "invalid_avatar")
    assert "default" in error["valid"] and "default" in error["message"]
    assert (await post({}))[0] == 422
    assert (await post({"avatar_id": "default", "session_id": "has space"}))[0] == 422
    assert (await post({"avatar_id": "default", "colour": "red"}))[0] == 422


async def test_a_session_id_cannot_be_taken_twice(client: TestClient) -> None:
    session_id = _session_id()
    await _create(client, session_id)
    resp = await client.post(
        "/avatars", json={"avatar_id": "default", "session_id": session_id}, headers=AUTH
    )
    assert resp.status == 409
    assert_error(await resp.json(), "session_exists")


async def test_the_session_limit_is_enforced(livekit_server: LiveKitServer, tmp_path: Path) -> None:
    c = await start_client(_settings(livekit_server, tmp_path, max_sessions=2))
    try:
        first = await _create(c)
        await _create(c)
        resp = await c.post("/avatars", json={"avatar_id": "default"}, headers=AUTH)
        assert resp.status == 429
        assert "AVATAR_MAX_SESSIONS" in assert_error(await resp.json(), "session_limit")["message"]
        assert (await c.delete(f"/avatars/{first['session_id']}", headers=AUTH)).status == 200
        await _create(c)  # room again
    finally:
        await _close(c)


async def test_unknown_sessions_are_404_everywhere(client: TestClient) -> None:
    for method, path, body in (
        ("GET", "/avatars/no-such-session", None),
        ("DELETE", "/avatars/no-such-session", None),
        ("POST", "/avatars/no-such-session/emotion", {"emotion": "happy"}),
        ("POST", "/avatars/no-such-session/background", {"background_id": "blur"}),
        ("POST", "/avatars/no-such-session/say", {"text": "hi"}),
        ("POST", "/avatars/no-such-session/interrupt", None),
        ("GET", "/ws/no-such-session", None),
    ):
        resp = await client.request(method, path, json=body, headers=AUTH)
        assert resp.status == 404, (method, path)
        assert_error(await resp.json(), "session_not_found")


async def test_a_room_that_is_not_a_session_is_not_one(
    client: TestClient, livekit_server: LiveKitServer
) -> None:
    name = _session_id()
    async with api.LiveKitAPI(
        livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
    ) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name=name))
        try:
            resp = await client.get(f"/avatars/{name}", headers=AUTH)
            assert resp.status == 404
            resp = await client.post(
                "/avatars", json={"avatar_id": "default", "session_id": name}, headers=AUTH
            )
            assert resp.status == 409
        finally:
            await lk.room.delete_room(api.DeleteRoomRequest(room=name))


async def test_delete_closes_the_room_and_everyone_leaves(
    client: TestClient, livekit_server: LiveKitServer
) -> None:
    # The room is closed under the real, live avatar (publishing audio and video in this
    # process): see also test_rooms_closed_under_live_avatars_never_kill_the_process.
    async with session_with_avatar(client, livekit_server) as (session_id, avatar):
        assert avatar.running.publisher.video_publication is not None
        resp = await client.delete(f"/avatars/{session_id}", headers=AUTH)
        assert await resp.json() == {"session_id": session_id, "deleted": True}
        await _wait_for(lambda: not avatar.room.isconnected(), 5, "the avatar to be disconnected")
    assert (await client.get(f"/avatars/{session_id}", headers=AUTH)).status == 404
    async with api.LiveKitAPI(
        livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
    ) as lk:
        assert not (await lk.room.list_rooms(api.ListRoomsRequest(names=[session_id]))).rooms


ROOM_CLOSE_ROUNDS = 20


async def test_rooms_closed_under_live_avatars_never_kill_the_process(
    livekit_server: LiveKitServer,
) -> None:
    """The server closes the room under a live, speaking in-process avatar, round after round,
    as soon as the avatar is announced (tests/room_close_child.py). livekit-rtc segfaults when
    that happens while a video track is still being published; before start_avatar waited for
    its tracks this child died by SIGSEGV within 0-10 rounds, four runs out of four."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-X",
        "faulthandler",
        "-m",
        "tests.room_close_child",
        livekit_server.url,
        livekit_server.http_url,
        livekit_server.api_key,
        livekit_server.api_secret,
        str(ROOM_CLOSE_ROUNDS),
        cwd=Path(__file__).resolve().parents[1],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=pdeathsig_preexec(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    rounds = out.decode().count(" ok")
    tail = err.decode(errors="replace")[-3000:]
    assert proc.returncode is not None and proc.returncode >= 0, (
        f"killed by {signal.Signals(-(proc.returncode or 0)).name} after {rounds} rounds:\n{tail}"
    )
    assert proc.returncode == 0, tail
    assert rounds == ROOM_CLOSE_ROUNDS


async def test_sessions_survive_a_restart_of_the_control_api(
    livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    settings = _settings(livekit_server, tmp_path)
    first = await start_client(settings)
    session_id = _session_id()
    try:
        await _create(first, session_id)
    finally:
        await first.close()  # the process goes away; the room stays
    second = await start_client(settings)
    try:
        listed = await (await second.get("/avatars", headers=AUTH)).json()
        assert session_id in [s["session_id"] for s in listed["sessions"]]
        async with joined_avatar(livekit_server, session_id):
            await _avatar_connected(second, session_id)
            resp = await second.post(
                f"/avatars/{session_id}/emotion", json={"emotion": "sad"}, headers=AUTH
            )
            assert resp.status == 200 and (await resp.json())["emotion"] == "sad"
    finally:
        await _close(second)


# --- controls --------------------------------------------------------------------------------


async def test_controls_before_the_avatar_joins_say_so(client: TestClient) -> None:
    session_id = _session_id()
    await _create(client, session_id)
    resp = await client.post(
        f"/avatars/{session_id}/emotion", json={"emotion": "happy"}, headers=AUTH
    )
    assert resp.status == 409
    assert "retry" in assert_error(await resp.json(), "avatar_not_connected")["message"]


async def test_a_viewer_with_avatar_attributes_is_not_taken_for_the_avatar(
    client: TestClient, livekit_server: LiveKitServer
) -> None:
    session_id = _session_id()
    session = await _create(client, session_id)
    viewer = rtc.Room()
    await viewer.connect(livekit_server.url, session["token"])
    try:
        await viewer.local_participant.set_attributes({"avatar.emotion": "angry"})
        await asyncio.sleep(1.0)  # the control API's participant has seen the change
        state = await _session(client, session_id)
        assert state["avatar_connected"] is False
        assert state["emotion"] == "neutral"
        async with joined_avatar(livekit_server, session_id):
            await _avatar_connected(client, session_id)
            assert (await _session(client, session_id))["emotion"] == "neutral"
    finally:
        await viewer.disconnect()


async def test_emotion_and_background_change_the_live_avatar(
    client: TestClient, livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    upload = aiohttp.FormData()
    upload.add_field("id", "clinic_room")
    upload.add_field("file", png_bytes((20, 160, 90)), filename="c.png", content_type="image/png")
    assert (await client.post("/backgrounds", data=upload, headers=AUTH)).status == 201

    backgrounds = tmp_path / "backgrounds"
    async with session_with_avatar(client, livekit_server, backgrounds) as (session_id, avatar):
        state = await _session(client, session_id)
        assert state["avatar_identity"] == AVATAR
        assert {"identity": AVATAR, "name": "", "kind": "agent"} in state["participants"]

        resp = await client.post(
            f"/avatars/{session_id}/emotion",
            json={"emotion": "happy", "intensity": 0.8},
            headers=AUTH,
        )
        assert resp.status == 200
        answer = await resp.json()
        assert (answer["emotion"], answer["intensity"]) == ("happy", 0.8)
        assert avatar.running.state.expression().emotion == "happy"  # the runtime has it
        # This avatar's renderer (testcard) shows no emotion, and the API says so.
        assert (answer["emotions"], answer["emotion_shown"]) == ([], False)

        resp = await client.post(
            f"/avatars/{session_id}/background", json={"background_id": "clinic_room"}, headers=AUTH
        )
        assert resp.status == 200 and (await resp.json())["background"] == "clinic_room"
        assert avatar.running.state.background == "clinic_room"
        resp = await client.post(
            f"/avatars/{session_id}/background",
            json={"background_id": "color:#10A0FF"},
            headers=AUTH,
        )
        assert (await resp.json())["background"] == "color:#10a0ff"

        async def shows_new_state() -> bool:
            state = await _session(client, session_id)
            return (
                state["emotion"] == "happy"
                and state["background"] == "color:#10a0ff"
                and state["emotions"] == []
                and state["emotion_shown"] is False
            )

        await _wait_for(shows_new_state, 3, "GET to show the new state")


async def test_a_read_right_after_a_control_shows_its_result(
    client: TestClient, livekit_server: LiveKitServer
) -> None:
    """GET answers from what the control's RPC answered, not only from the avatar's attributes,
    which reach the control API a moment later (a stale read was seen once for 4.9 s)."""
    async with session_with_avatar(client, livekit_server) as (session_id, _avatar):
        stale = []
        for i, emotion in enumerate(["happy", "sad", "concerned", "surprised"] * 4):
            intensity = round(0.3 + 0.04 * i, 2)
            background = f"color:#{i:02x}{i:02x}{i:02x}"
            answered = await client.post(
                f"/avatars/{session_id}/emotion",
                json={"emotion": emotion, "intensity": intensity},
                headers=AUTH,
            )
            assert answered.status == 200, await answered.text()
            assert (
                await client.post(
                    f"/avatars/{session_id}/background",
                    json={"background_id": background},
                    headers=AUTH,
                )
            ).status == 200
            read = await _session(client, session_id)
            if (read["emotion"], read["intensity"], read["background"]) != (
                emotion,
                intensity,
                background,
            ):
                stale.append((i, read["emotion"], read["intensity"], read["background"]))
        assert not stale, f"reads older than the control they followed: {stale}"


async def test_invalid_controls_are_422_and_list_what_is_valid(
    client: TestClient, livekit_server: LiveKitServer
) -> None:
    async with session_with_avatar(client, livekit_server) as (session_id, avatar):

        async def post(path: str, body: Any) -> tuple[int, dict]:
            resp = await client.post(f"/avatars/{session_id}/{path}", json=body, headers=AUTH)
            return resp.status, await resp.json()

        status, body = await post("emotion", {"emotion": "ecstatic"})
        assert status == 422
        error = assert_error(body, "invalid_emotion")
        assert error["valid"] == list(EMOTIONS)
        assert all(e in error["message"] for e in EMOTIONS)
        for intensity in (1.5, -0.1, "high", True):
            status, body = await post("emotion", {"emotion": "happy", "intensity": intensity})
            assert status == 422, intensity
            assert_error(body, "invalid_intensity")
        status, body = await post("background", {"background_id": "beach"})
        assert status == 422
        assert assert_error(body, "invalid_background")["valid"][:3] == [
            "original",
            "blur",
            "color:#RRGGBB",
        ]
        status, body = await post("say", {"text": "   "})
        assert status == 422
        status, body = await post("say", {"text": "x" * 1001})
        assert status == 422 and "1000" in body["error"]["message"]
        assert avatar.running.state.expression().emotion == "neutral"  # nothing changed


async def test_say_before_the_agent_is_ready_says_so(
    client: TestClient, livekit_server: LiveKitServer
) -> None:
    # The stand-in avatar answers the avatar's methods but, having no agent session, never
    # says it is ready for agent.say.
    async with session_with_avatar(client, livekit_server) as (session_id, _):
        resp = await client.post(f"/avatars/{session_id}/say", json={"text": "hi"}, headers=AUTH)
        assert resp.status == 409
        assert "retry" in assert_error(await resp.json(), "agent_not_ready")["message"]


# --- events ----------------------------------------------------------------------------------


async def _next_event(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 5) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        message = await ws.receive_json(timeout=max(0.05, deadline - time.monotonic()))
        if message["type"] == kind:
            return message


async def test_websocket_reports_state_changes_participants_and_the_end(
    client: TestClient, livekit_server: LiveKitServer
) -> None:
    session_id = _session_id()
    await _create(client, session_id)
    ws = await client.ws_connect(f"/ws/{session_id}?access_token={AUTH['X-API-Key']}")
    try:
        first = await ws.receive_json(timeout=5)
        assert first["type"] == "state" and first["session"]["session_id"] == session_id

        await ws.send_json({"type": "ping"})
        assert (await _next_event(ws, "pong"))["type"] == "pong"
        await ws.send_str("hello?")
        assert (await _next_event(ws, "error"))["code"] == "invalid_message"

        async with joined_avatar(livekit_server, session_id):
            joined = await _next_event(ws, "participant_joined")
            assert joined["identity"] == AVATAR
            assert (await _next_event(ws, "avatar_connected"))["identity"] == AVATAR
            resp = await client.post(
                f"/avatars/{session_id}/emotion", json={"emotion": "surprised"}, headers=AUTH
            )
            assert resp.status == 200
            # The avatar's first state may come as a change too when its attributes reach the
            # control API after its join (it announces itself once its tracks are up).
            changed = await _next_event(ws, "state_changed")
            while changed["changes"].get("emotion") != "surprised":
                changed = await _next_event(ws, "state_changed")
            assert changed["changes"]["emotion"] == "surprised"
            assert changed["session"]["emotion"] == "surprised"

            # Closed under the live avatar.
            await client.delete(f"/avatars/{session_id}", headers=AUTH)
            ended = await _next_event(ws, "session_ended")
            assert ended["session_id"] == session_id
            closing = await ws.receive(timeout=5)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    finally:
        await ws.close()
