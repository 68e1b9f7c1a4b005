"""Cluster benchmark (`python -m bench --only cluster`): sessions created per second and time to
first frame with one livekit-server and one agent worker against two nodes sharing a Redis and
two workers, and the failover time when a worker is killed.

Everything is real and on loopback (tests/cluster_fixtures.py): livekit-server nodes, Redis,
`python -m agent dev` workers rendering meshwarp at SIZE, `python -m control_api` pointed at
the first node, and LiveKit viewers (in this process) that join each session with the token the
control API returned, through the *last* node, so that with two nodes every viewer is relayed
to its room's node.

* Burst: BURSTS sessions created at once through `POST /avatars`; per session the POST's
  latency and the time from sending it to the first video frame at its viewer (a new room, an
  agent dispatch, a job process, the avatar's first picture, VP8, the SFU and the viewer's
  decoder). Each burst runs ROUNDS times; the sessions are deleted and the workers given
  SETTLE_S between rounds.
* Failover (two workers): a session runs on a worker, which is killed with SIGKILL together
  with its job processes (its machine dies); from then on a new session is created every
  RETRY_S until one shows its first frame; the time from the kill to that frame is the
  failover time. The first session's fate is recorded too: when the control API reported its
  agent lost and when a new agent (on the survivor) joined it.

On one 2-core machine two workers have no more CPU than one: the two-node figures show what
the cluster costs (psrpc over Redis, the relay between nodes), not what it adds.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.observer import RoomObserver
from tests.cluster_fixtures import kill_tree, rooms_in_log, running_cluster, worker_cache_env
from tests.control_api_process import ControlApi, running_control_api
from tests.livekit_server import (
    LiveKitServer,
    ServerStartError,
    find_server_binary,
    start_local_server,
)
from tests.worker_process import Worker, running_worker

SIZE = 256
BURSTS = (1, 4)
ROUNDS = 3
SETTLE_S = 4.0
FIRST_FRAME_TIMEOUT_S = 60.0
RETRY_S = 0.5
LOST_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Topology:
    nodes: tuple[LiveKitServer, ...]
    api: ControlApi
    workers: tuple[Worker, ...]


@contextlib.contextmanager
def topology(count: int, work: Path) -> Iterator[Topology]:
    """`count` livekit-server nodes (with a Redis when more than one) and as many workers, each
    registered with its own node and using its own cache; the control API on node 0."""
    env = {
        "AVATAR_AGENT_NAME": f"bench-cluster-{uuid.uuid4().hex[:6]}",
        "AVATAR_RENDERER": "meshwarp",
        "AVATAR_WIDTH": str(SIZE),
        "AVATAR_HEIGHT": str(SIZE),
        "AVATAR_WORKER_SESSIONS": "4",
    }
    with contextlib.ExitStack() as stack:
        if count == 1:
            binary = find_server_binary()
            if binary is None:
                raise ServerStartError("no livekit-server: run `make setup`")
            nodes: tuple[LiveKitServer, ...] = (stack.enter_context(start_local_server(binary)),)
        else:
            nodes = stack.enter_context(running_cluster(count)).nodes
        workers = tuple(
            stack.enter_context(
                running_worker(
                    node, ["-m", "agent", "dev"], {**env, **worker_cache_env(work / f"w{i}")}
                )
            )
            for i, node in enumerate(nodes)
        )
        control = stack.enter_context(
            running_control_api(nodes[0], {**env, "AVATAR_API_RATE_LIMIT": "1000"})
        )
        yield Topology(nodes, control, workers)


@contextlib.asynccontextmanager
async def client(top: Topology) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=top.api.base_url, headers=top.api.headers()) as http:
        yield http


async def create(http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.post("/avatars", json={"avatar_id": "default"}) as response:
        body = await response.json()
        if response.status != 201:
            raise RuntimeError(f"POST /avatars answered {response.status}: {body}")
        return body


async def delete(http: aiohttp.ClientSession, session_ids: list[str]) -> None:
    for session_id in session_ids:
        with contextlib.suppress(aiohttp.ClientError):
            async with http.delete(f"/avatars/{session_id}"):
                pass


async def first_frame(viewer: RoomObserver, timeout: float = FIRST_FRAME_TIMEOUT_S) -> float:
    """When the viewer's first full-size frame arrived (perf_counter)."""
    await viewer.wait_for(
        lambda: any((v.width, v.height) == (SIZE, SIZE) for v in viewer.video),
        timeout,
        "the avatar's first frame",
    )
    return next(v.arrived for v in viewer.video if (v.width, v.height) == (SIZE, SIZE))


async def one_session(
    http: aiohttp.ClientSession, top: Topology, viewers: list[RoomObserver], ids: list[str]
) -> dict[str, Any]:
    sent = time.perf_counter()
    session = await create(http)
    created = time.perf_counter()
    ids.append(session["session_id"])
    viewer = RoomObserver(top.nodes[-1].url, session["token"], decode_stamps=False)
    viewers.append(viewer)
    await viewer.connect()
    frame = await first_frame(viewer)
    return {
        "session_id": session["session_id"],
        "sent": sent,
        "create_ms": (created - sent) * 1000,
        "first_frame_ms": (frame - sent) * 1000,
        "first_frame_at": frame,
    }


async def burst(top: Topology, size: int) -> dict[str, Any]:
    viewers: list[RoomObserver] = []
    ids: list[str] = []
    async with client(top) as http:
        try:
            start = time.perf_counter()
            sessions = await asyncio.gather(
                *(one_session(http, top, viewers, ids) for _ in range(size))
            )
            created_all = max(s["sent"] + s["create_ms"] / 1000 for s in sessions)
            served_all = max(s["first_frame_at"] for s in sessions)
            per_worker = [len(rooms_in_log(w.log_path, ids)) for w in top.workers]
        finally:
            for viewer in viewers:
                with contextlib.suppress(Exception):
                    await viewer.aclose()
            await delete(http, ids)
    await asyncio.sleep(SETTLE_S)
    return {
        "size": size,
        "create_ms": [round(s["create_ms"], 1) for s in sessions],
        "first_frame_ms": [round(s["first_frame_ms"], 1) for s in sessions],
        "created_per_s": round(size / (created_all - start), 2),
        "served_per_s": round(size / (served_all - start), 2),
        "per_worker": per_worker,
    }


async def failover(top: Topology) -> dict[str, Any]:
    viewers: list[RoomObserver] = []
    created: list[str] = []
    async with client(top) as http:
        try:
            victim_session = await one_session(http, top, viewers, created)
            session_id = victim_session["session_id"]
            victim = next(
                i for i, w in enumerate(top.workers) if rooms_in_log(w.log_path, [session_id])
            )
            before = await _session(http, session_id)
            events = await http.ws_connect(f"/ws/{session_id}")
            lost_at: list[float] = []

            async def read() -> None:
                async for message in events:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        if message.json().get("type") == "agent_lost" and not lost_at:
                            lost_at.append(time.perf_counter())

            reader = asyncio.create_task(read())
            killed = time.perf_counter()
            kill_tree(top.workers[victim].pid)

            # New sessions until one shows a frame.
            attempts = 0
            recovered = None
            while recovered is None and time.perf_counter() - killed < FIRST_FRAME_TIMEOUT_S:
                attempts += 1
                session = await create(http)
                created.append(session["session_id"])
                viewer = RoomObserver(top.nodes[-1].url, session["token"], decode_stamps=False)
                viewers.append(viewer)
                await viewer.connect()
                with contextlib.suppress(TimeoutError, AssertionError):
                    recovered = await first_frame(viewer, timeout=RETRY_S * 20)
            new_worker = [
                i for i, w in enumerate(top.workers) if rooms_in_log(w.log_path, created[-1:])
            ]

            # The first session: reported lost, then a new agent.
            back = None
            deadline = time.perf_counter() + LOST_TIMEOUT_S
            while time.perf_counter() < deadline:
                now = await _session(http, session_id)
                if (
                    lost_at
                    and now.get("avatar_connected")
                    and now.get("avatar_identity") != before.get("avatar_identity")
                ):
                    back = time.perf_counter()
                    break
                await asyncio.sleep(0.1)
            reader.cancel()
            await events.close()
        finally:
            for viewer in viewers:
                with contextlib.suppress(Exception):
                    await viewer.aclose()
            await delete(http, created)

    def since_kill(at: float | None) -> float | None:
        return round((at - killed) * 1000, 1) if at is not None else None

    return {
        "new_session_first_frame_ms": since_kill(recovered),
        "new_session_attempts": attempts,
        "new_session_worker_is_survivor": bool(new_worker) and victim not in new_worker,
        "old_session_agent_lost_ms": since_kill(lost_at[0] if lost_at else None),
        "old_session_new_agent_ms": since_kill(back),
    }


async def _session(http: aiohttp.ClientSession, session_id: str) -> dict[str, Any]:
    async with http.get(f"/avatars/{session_id}") as response:
        return await response.json()


async def measure(count: int, work: Path, *, with_failover: bool) -> dict[str, Any]:
    with topology(count, work / f"nodes-{count}") as top:
        results: dict[str, Any] = {"nodes": count, "workers": count, "bursts": []}
        for size in BURSTS:
            for _ in range(ROUNDS):
                results["bursts"].append(await burst(top, size))
                print(f"bench cluster: {count} node(s), burst {size}: {results['bursts'][-1]}")
        if with_failover:
            results["failover"] = await failover(top)
            print(f"bench cluster: failover {results['failover']}")
        return results


async def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        one = await measure(1, Path(tmp), with_failover=False)
        two = await measure(2, Path(tmp), with_failover=True)
    return {"size": SIZE, "rounds": ROUNDS, "one": one, "two": two}


def _summary(run: dict[str, Any], size: int) -> dict[str, Any]:
    bursts = [b for b in run["bursts"] if b["size"] == size]
    ttff = [ms for b in bursts for ms in b["first_frame_ms"]]
    create_ms = [ms for b in bursts for ms in b["create_ms"]]
    spread = [b["per_worker"] for b in bursts]
    return {
        "created_per_s": round(statistics.median(b["created_per_s"] for b in bursts), 2),
        "served_per_s": round(statistics.median(b["served_per_s"] for b in bursts), 2),
        "create_p50": round(statistics.median(create_ms), 1),
        "ttff_p50": round(statistics.median(ttff), 1),
        "ttff_max": round(max(ttff), 1),
        "spread": " / ".join("+".join(str(n) for n in s) for s in spread),
    }


def section(results: dict[str, Any]) -> str:
    machine = results["machine"]
    rows = []
    for key, label in (("one", "1 node, 1 worker"), ("two", "2 nodes + Redis, 2 workers")):
        for size in BURSTS:
            s = _summary(results[key], size)
            rows.append(
                f"| {label} | {size} | {s['created_per_s']} | {s['create_p50']} | "
                f"{s['served_per_s']} | {s['ttff_p50']} | {s['ttff_max']} | {s['spread']} |"
            )
    fail = results["two"].get("failover", {})
    lines = [
        "## Cluster: one node and worker against two, and a worker killed",
        "",
        f"Measured {results['started']} on {machine['cpu_count']} CPUs, all on this machine and "
        "on loopback (`python -m bench --only cluster`): livekit-server nodes (two share a "
        "Redis), `python -m agent dev` workers rendering meshwarp at "
        f"{results['size']}x{results['size']} (each registered with its own node, with its own "
        "cache), `python -m control_api` on the first node, and one LiveKit viewer per session "
        "joining through the last node with the token the control API returned. A burst is that "
        f"many `POST /avatars` at once; each burst ran {results['rounds']} times.",
        "",
        "| topology | burst | created/s | POST p50 ms | first frames/s | first frame p50 ms | "
        "first frame max ms | sessions per worker, each round |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "First frame: from sending `POST /avatars` to the viewer's first decoded frame (the room, "
        "the dispatch, a job process, the first picture, VP8, the SFU, the relay between nodes "
        "and decoding). First frames/s: the burst's sessions over the time until the last one "
        "showed its first frame. Two workers on the same two cores have no more CPU than one, "
        "so these rows show the cluster's overhead, not its capacity: on separate machines each "
        "worker brings its own cores (see docs/deploy.md for sizing). A burst's sessions are "
        "all dispatched before any worker reports its new load (every 2.5 s at most), so LiveKit "
        "spreads them at random, weighted by the spare capacity last reported; sessions a few "
        "seconds apart alternate between the workers (tests/test_cluster.py). Within a worker, "
        "`dev` keeps one prewarmed job process: the other sessions of a burst wait for a "
        "process to start, hence the spread of first frames.",
        "",
        "Failover (one sample): a session's worker killed with SIGKILL with its job processes. "
        f"A new session showed its first frame {fail.get('new_session_first_frame_ms')} ms after "
        f"the kill ({fail.get('new_session_attempts')} attempt(s); on the surviving worker: "
        f"{fail.get('new_session_worker_is_survivor')}). LiveKit does not dispatch the dead "
        "worker's job again; the session it ran was reported `agent_lost` by the control API "
        f"{fail.get('old_session_agent_lost_ms')} ms after the kill (livekit-server waits about "
        "20 s for a participant whose connection dropped to come back) and had a new agent, on "
        f"the survivor, {fail.get('old_session_new_agent_ms')} ms after it.",
        "",
    ]
    return "\n".join(lines)
