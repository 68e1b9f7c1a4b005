"""One session from start to end with every part real: livekit-server, the agent worker (and,
in remote mode, the avatar worker) and `python -m control_api`, all as processes, driven over
loopback HTTP and WebSocket while a LiveKit participant watches and listens."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from livekit import api

from bench.observer import RoomObserver
from tests.control_api_process import ControlApi, running_control_api
from tests.livekit_server import LiveKitServer, log_tail
from tests.worker_process import running_worker

pytestmark = [pytest.mark.livekit, pytest.mark.slow]

SIZE = 256
# The testcard's bottom-left corner (light grey) shows the background once it is set.
CORNER = (0.0, 0.9, 0.08, 1.0)
NEW_BACKGROUND = "color:#102030"  # luma ~29, far from the testcard's ~190
DARK_LUMA = 100.0
SAY = "Hello there. This sentence is long enough to still be playing when we interrupt it."


@dataclass(frozen=True)
class Stack:
    api: ControlApi
    agent_log: str


@contextlib.contextmanager
def running_stack(server: LiveKitServer, mode: str) -> Iterator[Stack]:
    suffix = uuid.uuid4().hex[:8]
    env = {
        "AVATAR_AGENT_NAME": f"capi-agent-{suffix}",
        "AVATAR_WORKER_NAME": f"capi-avatar-{suffix}",
        "AVATAR_MODE": mode,
        "AVATAR_RENDERER": "testcard",
        "AVATAR_WIDTH": str(SIZE),
        "AVATAR_HEIGHT": str(SIZE),
    }
    with contextlib.ExitStack() as stack:
        agent = stack.enter_context(running_worker(server, ["-m", "agent", "dev"], env))
        if mode == "remote":
            stack.enter_context(running_worker(server, ["-m", "agent.avatar_worker", "dev"], env))
        control = stack.enter_context(running_control_api(server, env))
        yield Stack(control, str(agent.log_path))


class Events:
    """The session's WebSocket, read in the background."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.received: list[tuple[float, dict]] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.received.append((time.perf_counter(), message.json()))

    def of(self, kind: str, since: float = 0.0) -> list[tuple[float, dict]]:
        return [(t, e) for t, e in self.received if e["type"] == kind and t >= since]

    async def wait(self, kind: str, since: float, timeout: float, match=None) -> float:  # noqa: ANN001
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            for t, event in self.of(kind, since):
                if match is None or match(event):
                    return t
            await asyncio.sleep(0.02)
        kinds = [e["type"] for _, e in self.received]
        raise AssertionError(f"no {kind} event within {timeout} s; got {kinds}")

    async def close(self) -> None:
        await self.ws.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@pytest.fixture(params=["inprocess", "remote"])
async def stack(
    request: pytest.FixtureRequest, livekit_server: LiveKitServer
) -> AsyncIterator[Stack]:
    with running_stack(livekit_server, request.param) as running:
        yield running


async def test_a_session_from_creation_to_deletion(
    stack: Stack, livekit_server: LiveKitServer
) -> None:
    base = stack.api.base_url
    async with aiohttp.ClientSession(headers=stack.api.headers()) as http:

        async def call(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
            async with http.request(method, base + path, json=body) as resp:
                return resp.status, await resp.json()

        status, session = await call("POST", "/avatars", {"avatar_id": "default"})
        assert status == 201, session
        session_id = session["session_id"]
        ws_url = base.replace("http", "ws", 1) + session["ws_url"]
        events = Events(await http.ws_connect(ws_url))
        viewer = RoomObserver(
            session["livekit_url"], session["token"], decode_stamps=False, region=CORNER
        )
        try:
            await viewer.connect()
            # A subscriber sees the avatar's video.
            await viewer.wait_for(lambda: len(viewer.video) >= 15, 45, "the avatar's video")
            assert viewer.video[-1].width == SIZE
            # The avatar may have joined before the WebSocket opened (a prewarmed job process
            # joins fast): then the state the socket starts with says so instead of an event.
            joined = [e for _, e in events.of("state") if e["session"]["avatar_connected"]]
            if not joined:
                await events.wait("avatar_connected", 0, 10)

            # The greeting plays first; wait for the avatar to be quiet.
            async def quiet() -> bool:
                return not (await call("GET", f"/avatars/{session_id}"))[1]["speaking"]

            deadline = time.monotonic() + 30
            while not await quiet():
                assert time.monotonic() < deadline, "the greeting never ended"
                await asyncio.sleep(0.1)

            # Emotion: answered, reported on the socket, and shown by GET.
            sent = time.perf_counter()
            status, state = await call(
                "POST", f"/avatars/{session_id}/emotion", {"emotion": "happy", "intensity": 0.9}
            )
            assert status == 200 and (state["emotion"], state["intensity"]) == ("happy", 0.9)
            await events.wait(
                "state_changed", sent, 3, lambda e: e["changes"].get("emotion") == "happy"
            )
            assert (await call("GET", f"/avatars/{session_id}"))[1]["emotion"] == "happy"

            # Background: the published picture changes.
            status, state = await call(
                "POST", f"/avatars/{session_id}/background", {"background_id": NEW_BACKGROUND}
            )
            answered = time.perf_counter()
            assert status == 200 and state["background"] == NEW_BACKGROUND
            await viewer.wait_for(
                lambda: viewer.video[-1].luma.mean() < DARK_LUMA, 3, "the new background"
            )
            shown = next(
                v.arrived
                for v in viewer.video
                if v.arrived >= answered and v.luma.mean() < DARK_LUMA
            )
            assert shown - answered < 1.0
            await events.wait(
                "state_changed", answered - 1, 3, lambda e: "background" in e["changes"]
            )

            # Say: accepted, the avatar speaks, and the viewer hears it.
            said = time.perf_counter()
            status, answer = await call("POST", f"/avatars/{session_id}/say", {"text": SAY})
            assert status == 202 and answer["text"] == SAY and answer["speech_id"]
            started = await events.wait("speaking_started", said, 15)
            await viewer.wait_for(
                lambda: any(a.arrived > said for a in viewer.loud_audio()), 15, "speech audio"
            )

            # Interrupt: the avatar stops speaking at once.
            await asyncio.sleep(max(0.0, started + 0.5 - time.perf_counter()))
            interrupted = time.perf_counter()
            status, state = await call("POST", f"/avatars/{session_id}/interrupt")
            assert status == 200, state
            stopped = await events.wait("speaking_stopped", interrupted, 3)
            assert stopped - interrupted < 1.5
            await asyncio.sleep(0.5)
            late_loud = [a for a in viewer.loud_audio() if a.arrived > stopped + 0.3]
            assert not late_loud, f"{len(late_loud)} loud audio frames after the interruption"

            # Delete: the room closes, the agent leaves, the socket says so.
            deleted = time.perf_counter()
            status, answer = await call("DELETE", f"/avatars/{session_id}")
            assert status == 200 and answer == {"session_id": session_id, "deleted": True}
            await events.wait("session_ended", deleted, 5)
            await viewer.wait_for(lambda: not viewer.room.isconnected(), 5, "the room to close")
            assert (await call("GET", f"/avatars/{session_id}"))[0] == 404
            async with api.LiveKitAPI(
                livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
            ) as lk:
                rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=[session_id]))
                assert not rooms.rooms
            await _wait_for_job_end(stack.agent_log, session_id)
        finally:
            await events.close()
            await viewer.aclose()


async def _wait_for_job_end(log_path: str, room: str, timeout: float = 15.0) -> None:
    """The agent's job for `room` has shut down (its process logs the end of the job)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = open(log_path, errors="replace").read()
        if _job_ended(text, room):
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the agent's job did not end:\n" + log_tail(Path(log_path), 30))


def _job_ended(log: str, room: str) -> bool:
    return any(
        room in line and ("process exiting" in line or "shutting down" in line)
        for line in log.splitlines()
    )


async def test_a_session_created_before_any_worker_gets_its_agent_once_one_starts(
    livekit_server: LiveKitServer,
) -> None:
    # livekit-server drops a dispatch that finds no worker and never retries it; the control
    # API notices that no agent joined and dispatches again.
    suffix = uuid.uuid4().hex[:8]
    env = {"AVATAR_AGENT_NAME": f"late-agent-{suffix}", "AVATAR_RENDERER": "testcard"}
    with running_control_api(livekit_server, env) as control:
        async with aiohttp.ClientSession(headers=control.headers()) as http:
            async with http.post(control.base_url + "/avatars", json={"avatar_id": "default"}) as r:
                assert r.status == 201
                session_id = (await r.json())["session_id"]
            await asyncio.sleep(1.0)  # the first dispatch has found no worker by now
            with running_worker(livekit_server, ["-m", "agent", "dev"], env):
                deadline = time.monotonic() + 30
                while True:
                    async with http.get(f"{control.base_url}/avatars/{session_id}") as r:
                        if (await r.json())["avatar_connected"]:
                            break
                    assert time.monotonic() < deadline, "the agent never joined:\n" + log_tail(
                        control.log_path, 20
                    )
                    await asyncio.sleep(0.2)
            assert "dispatching it again" in control.log_path.read_text()
            async with http.delete(f"{control.base_url}/avatars/{session_id}") as r:
                assert r.status == 200
