"""A LiveKit cluster on loopback for the tests and the cluster benchmark: one Redis and several
livekit-server nodes that share it.

livekit-server runs multi-node as soon as its config names a Redis (`redis.address`): every
node registers itself there, a room lives on one node, and a participant (or agent worker) on
any other node is relayed to it over Redis (psrpc), so nodes need no ports of each other. Each
node still needs its own signalling port and ICE ports (`port`, `rtc.tcp_port`,
`rtc.udp_port`) and advertises `rtc.node_ip` to its clients: 127.0.0.1 here.

Redis is Debian's `redis-server` (scripts/setup.sh installs it): `$REDIS_SERVER_BIN`, else
`redis-server` on PATH, else /usr/sbin or /usr/bin. It runs with no persistence (no RDB, no
AOF) in a temporary directory. A missing one skips the tests, and fails them under CI, like a
missing livekit-server (tests/livekit_server.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.livekit_server import (
    LiveKitServer,
    ServerStartError,
    find_server_binary,
    free_port,
    log_tail,
    pdeathsig_preexec,
    require_or_skip,
    start_local_server,
    stop_process,
)

REDIS_START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Redis:
    host: str
    port: int
    log_path: Path

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Cluster:
    redis: Redis
    nodes: tuple[LiveKitServer, ...]


def find_redis_binary() -> str | None:
    explicit = os.environ.get("REDIS_SERVER_BIN", "").strip()
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    for candidate in ("/usr/sbin/redis-server", "/usr/bin/redis-server"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def redis_ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a Redis answers PING on host:port (RESP, no client library needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def start_redis(binary: str) -> Iterator[Redis]:
    """Run `binary` on a free loopback port, without persistence, until the block ends."""
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise ServerStartError(f"redis-server binary {binary!r} is not an executable file")
    workdir = Path(tempfile.mkdtemp(prefix="avatar-redis-"))
    port = free_port()
    log_path = workdir / "redis.log"
    args = [
        binary,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        "--protected-mode", "yes",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            preexec_fn=pdeathsig_preexec(),
        )
    try:
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while not redis_ping("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServerStartError(
                    f"redis-server did not answer on 127.0.0.1:{port} (exit {proc.poll()}):\n"
                    + log_tail(log_path)
                )
            time.sleep(0.05)
        yield Redis("127.0.0.1", port, log_path)
    finally:
        stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def node_config(redis: Redis) -> str:
    """What a livekit-server node adds to the single-server config to join the cluster."""
    return f"redis:\n  address: {redis.address}\n"


@contextlib.contextmanager
def running_cluster(nodes: int = 2) -> Iterator[Cluster]:
    """Redis and `nodes` livekit-server nodes on free loopback ports; skips (fails under CI)
    when either binary is missing or does not start."""
    redis_bin = find_redis_binary()
    if redis_bin is None:
        require_or_skip(
            "no redis-server: run `make setup` (installs Debian's redis-server) or set "
            "REDIS_SERVER_BIN"
        )
    lk_bin = find_server_binary()
    if lk_bin is None:
        require_or_skip("no livekit-server: run `make setup` or set LIVEKIT_SERVER_BIN")
    with contextlib.ExitStack() as stack:
        try:
            redis = stack.enter_context(start_redis(redis_bin))
            servers = tuple(
                stack.enter_context(start_local_server(lk_bin, extra_config=node_config(redis)))
                for _ in range(nodes)
            )
        except ServerStartError as exc:
            require_or_skip(f"could not start the cluster: {exc}")
        yield Cluster(redis, servers)


# ----------------------------------------------------------------------- the workers


def worker_cache_env(cache: Path) -> dict[str, str]:
    """A worker "machine" of its own: its own AVATAR_CACHE (what meshwarp prepares from a
    portrait lands under it), sharing only the face models setup downloaded once."""
    from renderers.vision import models_dir  # imported here: MediaPipe's path, no models loaded

    cache.mkdir(parents=True, exist_ok=True)
    return {
        "AVATAR_CACHE": str(cache),
        "AVATAR_AVATARS_DIR": str(cache / "avatars"),
        "AVATAR_BACKGROUNDS_DIR": str(cache / "backgrounds"),
        "AVATAR_MODELS_DIR": str(models_dir()),
    }


def rooms_in_log(log_path: Path, rooms: Sequence[str]) -> set[str]:
    """Which of `rooms` an agent worker serves, by its log: each job that stays logs
    "room <name>: <providers>, avatar ..." (agent/worker.py); a duplicate dispatch that leaves
    at once logs "room <name> already has its agent" instead, and is not counted."""
    text = log_path.read_text(errors="replace")
    return {room for room in rooms if f"room {room}: " in text}


def kill_tree(pid: int) -> list[int]:
    """SIGKILL a worker and every process it started (its job processes), all at once, as
    when its machine dies. Returns the pids killed."""
    try:
        parent = psutil.Process(pid)
        procs = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    killed = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
            killed.append(proc.pid)
    psutil.wait_procs(procs, timeout=5)
    return killed
