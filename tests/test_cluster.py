"""More than one of everything, on loopback: two livekit-server nodes sharing a Redis, two agent
workers (each registered with a different node, each with a cache of its own, as on two
machines), and one control API pointed at the first node. All real processes, meshwarp at a
small size.

* Sessions created through the control API spread over both workers (LiveKit dispatches by the
  load each worker reports), and a viewer gets the avatar's audio and video whichever node it
  connects to.
* The remote avatar mode across "machines": the agent on one node and worker, the avatar worker
  on the other, each preparing only what it needs in its own cache.
* A worker killed with SIGKILL (with its job processes, as when its machine dies): new sessions
  go to the survivor at once, and LiveKit does not dispatch the dead worker's jobs again: the
  control API notices the agent left (`agent_lost`) and dispatches the session a new agent,
  which the survivor runs.

The module shares one cluster and one pair of workers; the failover test kills one of them, so
it runs last.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.observer import PUBLISH_ON_BEHALF, RoomObserver, observer_token
from tests.cluster_fixtures import (
    Cluster,
    kill_tree,
    rooms_in_log,
    running_cluster,
    worker_cache_env,
)
from tests.control_api_process import ControlApi, running_control_api
from tests.livekit_server import log_tail
from tests.worker_process import Worker, running_worker

pytestmark = [pytest.mark.livekit, pytest.mark.slow]

SIZE = 192  # meshwarp, small: four sessions at once on two shared cores


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster(nodes=2) as running:
        yield running


@dataclass(frozen=True)
class Deployment:
    cluster: Cluster
    api: ControlApi
    workers: dict[str, Worker]  # "a" on node 0, "b" on node 1
    caches: dict[str, Path]


def _agent_env(name: str) -> dict[str, str]:
    return {
        "AVATAR_AGENT_NAME": name,
        "AVATAR_RENDERER": "meshwarp",
        "AVATAR_WIDTH": str(SIZE),
        "AVATAR_HEIGHT": str(SIZE),
        "AVATAR_WORKER_SESSIONS": "2",
    }


@pytest.fixture(scope="module")
def deployment(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    env = _agent_env(f"cluster-agent-{uuid.uuid4().hex[:6]}")
    root = tmp_path_factory.mktemp("cluster")
    caches = {"a": root / "machine-a", "b": root / "machine-b"}
    with contextlib.ExitStack() as stack:
        workers = {
            key: stack.enter_context(
                running_worker(node, ["-m", "agent", "dev"], {**env, **worker_cache_env(cache)})
            )
            for (key, cache), node in zip(caches.items(), cluster.nodes, strict=True)
        }
        control = stack.enter_context(running_control_api(cluster.nodes[0], env))
        yield Deployment(cluster, control, workers, caches)


@pytest.fixture
async def http(deployment: Deployment) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        base_url=deployment.api.base_url, headers=deployment.api.headers()
    ) as session:
        yield session


async def create_session(http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.post("/avatars", json={"avatar_id": "default"}) as response:
        body = await response.json()
        assert response.status == 201, body
        return body


async def wait_avatar(
    http: aiohttp.ClientSession, session_id: str, timeout: float, *, not_identity: str = ""
) -> dict[str, Any]:
    """The session once its avatar is connected (and, with `not_identity`, a different one)."""
    deadline = time.monotonic() + timeout
    while True:
        async with http.get(f"/avatars/{session_id}") as response:
            body = await response.json()
        if (
            response.status == 200
            and body["avatar_connected"]
            and body["avatar_identity"] != not_identity
        ):
            return body
        assert time.monotonic() < deadline, f"no avatar in {session_id} after {timeout} s: {body}"
        await asyncio.sleep(0.1)


def worker_of(deployment: Deployment, session_id: str) -> str:
    """Which worker ("a" or "b") runs the session's agent: the one whose log names its room."""
    found = [k for k, w in deployment.workers.items() if rooms_in_log(w.log_path, [session_id])]
    assert len(found) == 1, f"session {session_id} found in the logs of {found or 'no worker'}"
    return found[0]


async def watch(url: str, token: str) -> RoomObserver:
    viewer = RoomObserver(url, token, decode_stamps=False)
    await viewer.connect()
    return viewer


async def sees_and_hears(viewer: RoomObserver, since: float = 0.0) -> None:
    """The viewer receives the avatar's video (at the configured size) and audio."""
    await viewer.wait_for(
        lambda: (
            sum(v.arrived > since and (v.width, v.height) == (SIZE, SIZE) for v in viewer.video)
            >= 15
            and sum(a.arrived > since for a in viewer.audio) >= 20
        ),
        45,
        "the avatar's video and audio",
    )
    # (A new subscription may show a few tiny placeholder frames first: only the latest count.)
    assert {(v.width, v.height) for v in viewer.video[-10:]} == {(SIZE, SIZE)}


async def delete_sessions(http: aiohttp.ClientSession, session_ids: list[str]) -> None:
    for session_id in session_ids:
        with contextlib.suppress(aiohttp.ClientError):
            async with http.delete(f"/avatars/{session_id}"):
                pass


async def test_sessions_spread_over_both_workers_and_play_on_either_node(
    deployment: Deployment, http: aiohttp.ClientSession
) -> None:
    nodes = deployment.cluster.nodes
    sessions: list[dict[str, Any]] = []
    viewers: list[RoomObserver] = []
    try:
        for _ in range(2):
            session = await create_session(http)
            sessions.append(session)
            await wait_avatar(http, session["session_id"], 45)
            # LiveKit picks the worker with the most spare capacity, as last reported (every
            # 2.5 s at most): give the first session's load time to be seen.
            await asyncio.sleep(3.0)
        ids = [s["session_id"] for s in sessions]
        placed = {worker_of(deployment, session_id) for session_id in ids}
        assert placed == {"a", "b"}, f"both sessions went to worker {placed}"

        # The control API hands out node 0's URL; the same token works on node 1, where the
        # viewer is relayed to the room's node.
        assert sessions[0]["livekit_url"] == nodes[0].url
        for session, node in zip(sessions, (nodes[1], nodes[0]), strict=True):
            viewers.append(await watch(node.url, session["token"]))
        for viewer in viewers:
            await sees_and_hears(viewer)
    finally:
        for viewer in viewers:
            await viewer.aclose()
        await delete_sessions(http, [s["session_id"] for s in sessions])


@pytest.fixture
def remote_deployment(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """The agent on node 0 with cache A, the avatar worker it dispatches on node 1 with cache B."""
    suffix = uuid.uuid4().hex[:6]
    env = {
        **_agent_env(f"cluster-remote-agent-{suffix}"),
        "AVATAR_MODE": "remote",
        "AVATAR_WORKER_NAME": f"cluster-avatar-{suffix}",
    }
    agent_cache, avatar_cache = tmp_path / "agent-machine", tmp_path / "avatar-machine"
    with (
        running_worker(
            cluster.nodes[0], ["-m", "agent", "dev"], {**env, **worker_cache_env(agent_cache)}
        ),
        running_worker(
            cluster.nodes[1],
            ["-m", "agent.avatar_worker", "dev"],
            {**env, **worker_cache_env(avatar_cache)},
        ),
    ):
        yield env["AVATAR_AGENT_NAME"], agent_cache, avatar_cache


async def test_remote_avatar_runs_on_another_worker_and_node(
    cluster: Cluster, remote_deployment: tuple[str, Path, Path]
) -> None:
    agent_name, agent_cache, avatar_cache = remote_deployment
    node = cluster.nodes[1]
    room = f"cluster-remote-{uuid.uuid4().hex[:8]}"
    viewer = await watch(
        node.url, observer_token(node.api_key, node.api_secret, room, "viewer", agent_name)
    )
    try:
        await sees_and_hears(viewer)
        publisher = viewer.participant(viewer.video_publisher)
        assert publisher is not None
        agent_identity = publisher.attributes.get(PUBLISH_ON_BEHALF)
        agent = viewer.participant(agent_identity)
        assert agent is not None, "the avatar does not publish on an agent's behalf"
        assert not agent.track_publications, "the agent should not publish media of its own"
    finally:
        await viewer.aclose()
    # The avatar worker prepared the portrait for meshwarp in its own cache. (The agent's
    # cache has it too: its preflight, agent/cli.py, loads the renderer in remote mode as well.)
    assert list((avatar_cache / "avatars" / "meshwarp").glob("*.npz")), "nothing prepared"
    assert agent_cache != avatar_cache


async def test_a_killed_worker_s_sessions_and_new_ones_go_to_the_survivor(
    deployment: Deployment, http: aiohttp.ClientSession
) -> None:
    session = await create_session(http)
    session_id = session["session_id"]
    created: list[str] = [session_id]
    viewer: RoomObserver | None = None
    events: aiohttp.ClientWebSocketResponse | None = None
    try:
        before = await wait_avatar(http, session_id, 45)
        victim = worker_of(deployment, session_id)
        survivor = "b" if victim == "a" else "a"
        viewer = await watch(session["livekit_url"], session["token"])
        await sees_and_hears(viewer)
        events = await http.ws_connect(session["ws_url"])
        received: list[tuple[float, dict[str, Any]]] = []

        async def read() -> None:
            assert events is not None
            async for message in events:
                if message.type == aiohttp.WSMsgType.TEXT:
                    received.append((time.monotonic(), message.json()))

        reader = asyncio.create_task(read())

        killed_at = time.monotonic()
        assert kill_tree(deployment.workers[victim].pid), "the worker was not running"

        # A new session right away: the dead worker's connection is gone, so LiveKit offers
        # the job only to the survivor.
        fresh = await create_session(http)
        created.append(fresh["session_id"])
        await wait_avatar(http, fresh["session_id"], 30)
        new_ok = time.monotonic() - killed_at
        assert worker_of(deployment, fresh["session_id"]) == survivor

        # The old session: LiveKit neither tells anyone at once nor dispatches its job again.
        # Once the server gives up on the dead agent's connection, the control API reports
        # `agent_lost` and dispatches a new agent, which the survivor runs.
        async def event(kind: str, timeout: float) -> float:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for at, body in received:
                    if body.get("type") == kind and at >= killed_at:
                        return at
                await asyncio.sleep(0.1)
            kinds = [body.get("type") for _, body in received]
            raise AssertionError(f"no {kind} within {timeout} s; events {kinds}")

        lost = await event("agent_lost", 45) - killed_at
        after = await wait_avatar(http, session_id, 45, not_identity=before["avatar_identity"])
        back = time.monotonic() - killed_at
        took_over = rooms_in_log(deployment.workers[survivor].log_path, [session_id])
        assert took_over, "the survivor did not take the session over"
        assert after["avatar_identity"] != before["avatar_identity"]
        await sees_and_hears(viewer, since=killed_at + lost)
        print(
            f"\nworker killed: new session served after {new_ok:.1f} s, old session's agent "
            f"reported lost after {lost:.1f} s and back after {back:.1f} s"
        )
        assert new_ok < 15

        # Now the survivor dies too: nothing can take the session over, so after the new
        # dispatch finds no agent the control API ends it, rather than list it as live.
        second_kill = time.monotonic()
        assert kill_tree(deployment.workers[survivor].pid)
        killed_at = second_kill  # `event` looks from here on
        await event("agent_lost", 45)
        await event("session_ended", 60)
        ended = time.monotonic() - second_kill
        # `session_ended` goes out as the control API leaves the room, just before it deletes
        # it: a GET in between may still find the room for a moment, but must never keep the
        # session alive (joining a room deleted meanwhile makes an empty one of that name).
        deadline = time.monotonic() + 10
        while True:
            async with http.get(f"/avatars/{session_id}") as response:
                if response.status == 404:
                    break
            assert time.monotonic() < deadline, "the ended session is still listed"
            await asyncio.sleep(0.2)
        errors = [body.get("code") for _, body in received if body.get("type") == "error"]
        assert "agent_unavailable" in errors, errors
        print(f"no worker left: the session ended {ended:.1f} s after the last one was killed")
        reader.cancel()
    except BaseException:
        for key, worker in deployment.workers.items():
            print(f"--- worker {key}:\n{log_tail(worker.log_path, 30)}")
        print(f"--- control API:\n{log_tail(deployment.api.log_path, 30)}")
        raise
    finally:
        if events is not None:
            await events.close()
        if viewer is not None:
            await viewer.aclose()
        await delete_sessions(http, created)
