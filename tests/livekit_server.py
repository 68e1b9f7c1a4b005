"""A real livekit-server for the tests.

`tests/conftest.py` exposes it as the session fixture ``livekit_server``; this module
holds the machinery so that other fixtures and helpers can reuse it:

* :class:`LiveKitServer`: where the server is and how to authenticate to it;
* :func:`running_livekit_server`: starts the binary on free loopback ports (or falls
  back to an external server from ``LIVEKIT_URL``) and stops it afterwards;
* :func:`make_token`: an access token for a participant, optionally dispatching an agent;
* :func:`require_or_skip`: skip a test, except under CI where it fails instead.

The binary is looked up as ``scripts/setup.sh`` does: ``$LIVEKIT_SERVER_BIN``, then
``livekit-server`` on PATH, then ``$AVATAR_CACHE/bin/livekit-server``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import NoReturn

import pytest
from livekit import api

from control_api.jobs.runner import pdeathsig_preexec as _pdeathsig

# Development credentials, the same as in livekit.yaml (secrets must be >= 32 chars).
DEFAULT_API_KEY = "devkey"
DEFAULT_API_SECRET = "avatar-agents-local-dev-secret-0123456789"

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class LiveKitServer:
    url: str  # ws://127.0.0.1:PORT, for rtc.Room.connect and agent workers
    http_url: str  # http://127.0.0.1:PORT, for livekit.api.LiveKitAPI
    api_key: str
    api_secret: str
    # The server's log file when the tests started it (None for an external server).
    log_path: Path | None = field(default=None, compare=False)

    def env(self) -> dict[str, str]:
        """The variables livekit-agents workers and the demo read to find this server."""
        return {
            "LIVEKIT_URL": self.url,
            "LIVEKIT_API_KEY": self.api_key,
            "LIVEKIT_API_SECRET": self.api_secret,
        }


# --------------------------------------------------------------------------- CI policy


def in_ci() -> bool:
    """True when the environment variable CI is set to anything but an empty/false value."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def require_or_skip(reason: str) -> NoReturn:
    """Skip the current test (or fixture) because a requirement is missing.

    Under CI (env ``CI`` truthy) this fails instead: a CI run must never pass by silently
    skipping what it was meant to test.
    """
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this is a failure rather than a skip)", pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------------- finding things


def find_server_binary() -> str | None:
    """The livekit-server binary to use, or None when there is none."""
    explicit = os.environ.get("LIVEKIT_SERVER_BIN", "").strip()
    if explicit:
        # An explicit choice that does not work is an error, never a silent fallback.
        return explicit
    on_path = shutil.which("livekit-server")
    if on_path:
        return on_path
    cache = Path(os.environ.get("AVATAR_CACHE") or Path.home() / ".cache" / "avatar-agents")
    cached = cache / "bin" / "livekit-server"
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    return None


def free_port() -> int:
    """A free loopback TCP port (nothing listens on it until someone binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _free_ports() -> tuple[int, int, int]:
    """Free loopback ports: (signalling TCP, ICE TCP, ICE UDP), held together while chosen."""
    with contextlib.ExitStack() as stack:
        ports = []
        for kind in (socket.SOCK_STREAM, socket.SOCK_STREAM, socket.SOCK_DGRAM):
            sock = stack.enter_context(socket.socket(socket.AF_INET, kind))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports[0], ports[1], ports[2]


def _http_url(ws_url: str) -> str:
    if ws_url.startswith("wss://"):
        return "https://" + ws_url[len("wss://") :]
    if ws_url.startswith("ws://"):
        return "http://" + ws_url[len("ws://") :]
    return ws_url


def _answers_ok(http_url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(http_url.rstrip("/") + "/", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _config_yaml(
    port: int, tcp_port: int, udp_port: int, api_key: str, api_secret: str, extra: str = ""
) -> str:
    # Same shape as livekit.yaml at the repository root, on other ports; `extra` is more YAML
    # (a cluster node's `redis:` section, tests/cluster_fixtures.py).
    return f"""\
port: {port}
bind_addresses: ["127.0.0.1"]
rtc:
  tcp_port: {tcp_port}
  udp_port: {udp_port}
  node_ip: 127.0.0.1
  use_external_ip: false
  enable_loopback_candidate: true
  ips:
    includes: [127.0.0.0/8]
keys:
  {api_key}: {api_secret}
room:
  sync_streams: true
logging:
  level: info
{extra}"""


def pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGTERM when pytest dies, even by SIGKILL."""
    return _pdeathsig(signal.SIGTERM)


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    # The first SIGTERM asks for a graceful shutdown, which waits for participants still
    # connected to leave; a second one makes livekit-server close them and exit at once.
    for sig, wait_s in ((signal.SIGTERM, 1.0), (signal.SIGTERM, STOP_TIMEOUT_S)):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait(timeout=STOP_TIMEOUT_S)


# ------------------------------------------------------------------------ the server


class ServerStartError(RuntimeError):
    pass


@contextlib.contextmanager
def start_local_server(
    binary: str,
    *,
    api_key: str = DEFAULT_API_KEY,
    api_secret: str = DEFAULT_API_SECRET,
    keep_log: Callable[[], bool] = lambda: False,
    attempts: int = 3,
    extra_config: str = "",
) -> Iterator[LiveKitServer]:
    """Run ``binary`` on free loopback ports until the block ends, then stop it.

    Raises :class:`ServerStartError` (with the end of the server log) when it does not
    answer on HTTP within START_TIMEOUT_S; a port taken by someone else between choosing
    it and the server binding it is retried with new ports. The config and log live in
    a temporary directory, removed at the end unless ``keep_log()`` is true or the env
    variable AVATAR_KEEP_LIVEKIT_LOG is set.
    """
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise ServerStartError(f"livekit-server binary {binary!r} is not an executable file")

    workdir = Path(tempfile.mkdtemp(prefix="avatar-livekit-"))
    error = "not started"
    for attempt in range(1, attempts + 1):
        port, tcp_port, udp_port = _free_ports()
        config = workdir / f"livekit-{attempt}.yaml"
        config.write_text(_config_yaml(port, tcp_port, udp_port, api_key, api_secret, extra_config))
        log_path = workdir / f"livekit-{attempt}.log"
        http_url = f"http://127.0.0.1:{port}"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [binary, "--config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                preexec_fn=pdeathsig_preexec(),
            )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while proc.poll() is None and time.monotonic() < deadline:
                if _answers_ok(http_url, timeout=0.5):
                    break
                time.sleep(0.1)
            else:
                exit_code = proc.poll()
                stop_process(proc)
                tail = log_tail(log_path)
                state = (
                    f"exited with code {exit_code}"
                    if exit_code is not None
                    else f"did not answer on {http_url} within {START_TIMEOUT_S:.0f} s"
                )
                error = f"livekit-server ({binary}) {state}; log {log_path}:\n{tail}"
                if "address already in use" in tail.lower():
                    continue  # lost a race for a port: try again with new ones
                raise ServerStartError(error)

            yield LiveKitServer(
                url=f"ws://127.0.0.1:{port}",
                http_url=http_url,
                api_key=api_key,
                api_secret=api_secret,
                log_path=log_path,
            )
        finally:
            stop_process(proc)
        if keep_log() or os.environ.get("AVATAR_KEEP_LIVEKIT_LOG"):
            print(f"\nlivekit-server log kept: {log_path}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        return
    raise ServerStartError(error)


@contextlib.contextmanager
def running_livekit_server(keep_log: Callable[[], bool] = lambda: False) -> Iterator[LiveKitServer]:
    """The server for a test session: a local binary, else an external ``LIVEKIT_URL``.

    Calls :func:`require_or_skip` when there is neither, or when it does not work.
    """
    binary = find_server_binary()
    external = os.environ.get("LIVEKIT_URL", "").strip()
    if binary is None and external:
        server = LiveKitServer(
            url=external,
            http_url=_http_url(external),
            api_key=os.environ.get("LIVEKIT_API_KEY") or DEFAULT_API_KEY,
            api_secret=os.environ.get("LIVEKIT_API_SECRET") or DEFAULT_API_SECRET,
        )
        if not _answers_ok(server.http_url, timeout=5.0):
            require_or_skip(f"external LiveKit server LIVEKIT_URL={external} does not answer")
        yield server
        return
    if binary is None:
        require_or_skip(
            "no livekit-server: run `make setup` (builds one into the cache), set "
            "LIVEKIT_SERVER_BIN, or set LIVEKIT_URL/LIVEKIT_API_KEY/LIVEKIT_API_SECRET"
        )
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(start_local_server(binary, keep_log=keep_log))
        except ServerStartError as exc:
            require_or_skip(f"could not start livekit-server: {exc}")
        yield server


# --------------------------------------------------------------------------- tokens


def make_token(
    server: LiveKitServer,
    identity: str,
    room: str,
    *,
    agent_name: str | None = None,
    agent_metadata: str = "",
    name: str | None = None,
    metadata: str | None = None,
    attributes: dict[str, str] | None = None,
    kind: api.AccessToken.ParticipantKind | None = None,
    ttl: timedelta = timedelta(hours=1),
    **grants: object,
) -> str:
    """A JWT letting ``identity`` join ``room`` on ``server``.

    ``grants`` are extra :class:`livekit.api.VideoGrants` fields (``can_publish=False``,
    ``room_admin=True``, ...). With ``agent_name``, joining the room dispatches that
    agent (explicit dispatch through the token's room configuration).
    """
    video = api.VideoGrants(room_join=True, room=room, **grants)  # type: ignore[arg-type]
    token = (
        api.AccessToken(server.api_key, server.api_secret)
        .with_identity(identity)
        .with_grants(video)
        .with_ttl(ttl)
    )
    if name is not None:
        token = token.with_name(name)
    if metadata is not None:
        token = token.with_metadata(metadata)
    if attributes:
        token = token.with_attributes(attributes)
    if kind is not None:
        token = token.with_kind(kind)
    if agent_name is not None:
        token = token.with_room_config(
            api.RoomConfiguration(
                agents=[api.RoomAgentDispatch(agent_name=agent_name, metadata=agent_metadata)]
            )
        )
    return token.to_jwt()
