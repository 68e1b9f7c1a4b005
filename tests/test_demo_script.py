"""`make demo` as a newcomer runs it: `scripts/demo.sh` (what the target runs after setup) with
no project variables set and an empty cache, until the page it prints loads and the API
answers with the key in that URL; then Ctrl+C stops it, and nothing it started is left.

Only what setup provides is reused, through the variables demo.sh and setup.sh honour: the
venv (VENV), the livekit-server binary (LIVEKIT_SERVER_BIN) and the face models
(AVATAR_MODELS_DIR). The ports are free ones (PORT, LIVEKIT_PORT, LIVEKIT_RTC_*_PORT), so a
running demo or another test run never collides with this one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urldefrag

import pytest

from tests.livekit_server import find_server_binary, require_or_skip

pytestmark = [pytest.mark.slow, pytest.mark.livekit, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parent.parent
READY = re.compile(r"\[demo\] ready: open (\S+) and press Join")
STARTED = re.compile(r"\[demo\] started (\S+) \(pid (\d+),")
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0

# What a newcomer's shell does not have: the project's own settings and those of the
# providers (the demo must take the keyless path).
_UNSET_PREFIXES = ("AVATAR_", "LIVEKIT_")
_UNSET_NAMES = {
    "PORT",
    "VENV",
    "VENV_PY",
    "PYTHONPATH",
    "OPENAI_API_KEY",
    "DEEPGRAM_API_KEY",
    "CARTESIA_API_KEY",
}


def _free_ports() -> tuple[int, int, int, int]:
    """(control API, signalling, ICE/TCP, ICE/UDP), all held while chosen so they differ."""
    with contextlib.ExitStack() as stack:
        ports = []
        kinds = (socket.SOCK_STREAM,) * 3 + (socket.SOCK_DGRAM,)
        for kind in kinds:
            sock = stack.enter_context(socket.socket(socket.AF_INET, kind))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports[0], ports[1], ports[2], ports[3]


def _newcomer_env(cache: Path, tmp: Path) -> dict[str, str]:
    from renderers.vision.models import MODEL_NAMES, models_dir

    binary = find_server_binary()
    if binary is None:
        require_or_skip("no livekit-server binary (run `make setup`)")
    models = models_dir()
    missing = [name for name in MODEL_NAMES if not (models / f"{name}.tflite").is_file()]
    if missing:
        require_or_skip(f"face models missing from {models} (run `make setup`)")
    if (REPO / ".env").exists():
        pytest.skip(".env in the checkout configures the demo; this test is the no-config path")

    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_UNSET_PREFIXES) and name not in _UNSET_NAMES
    }
    api_port, lk_port, tcp_port, udp_port = _free_ports()
    env.update(
        AVATAR_CACHE=str(cache),
        VENV=sys.prefix,
        LIVEKIT_SERVER_BIN=binary,
        AVATAR_MODELS_DIR=str(models),
        PORT=str(api_port),
        LIVEKIT_PORT=str(lk_port),
        LIVEKIT_RTC_TCP_PORT=str(tcp_port),
        LIVEKIT_RTC_UDP_PORT=str(udp_port),
        TMPDIR=str(tmp),  # the demo's logs land in the test's directory
    )
    return env


def _get(url: str, key: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _session_members(session_ids: set[int]) -> list[str]:
    """Processes still alive in one of these sessions (each child of the demo leads one)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _ppid, _pgrp, session = text.rsplit(")", 1)[1].split()[:4]
        if int(session) in session_ids and state != "Z":
            found.append(text.split(" ", 1)[0] + " " + text[text.index("(") : text.rindex(")") + 1])
    return found


def _kill_groups(groups: set[int]) -> None:
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


@contextlib.contextmanager
def _demo(env: dict[str, str], output: Path) -> Iterator[subprocess.Popen[bytes]]:
    with output.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", "scripts/demo.sh"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group of its own, as a terminal's job is
        )
    try:
        yield proc
    finally:
        # Whatever happened, leave nothing behind: the script's group and its children's.
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_TIMEOUT_S)
        children = {int(pid) for _, pid in STARTED.findall(output.read_text(errors="replace"))}
        if _session_members({proc.pid, *children}):
            _kill_groups({proc.pid, *children})
        if proc.poll() is None:
            proc.wait(timeout=5)


def test_demo_starts_with_no_configuration_and_stops_cleanly(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    env = _newcomer_env(cache, tmp_path)
    output = tmp_path / "demo.out"

    def log() -> str:
        return output.read_text(errors="replace")

    with _demo(env, output) as proc:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while (ready := READY.search(log())) is None:
            assert proc.poll() is None, f"demo.sh exited {proc.returncode}:\n{log()}"
            assert time.monotonic() < deadline, f"no page URL after {READY_TIMEOUT_S} s:\n{log()}"
            time.sleep(0.2)
        assert "agent worker registered" in log(), log()

        page, fragment = urldefrag(ready.group(1))
        assert page == f"http://127.0.0.1:{env['PORT']}/", log()
        assert fragment.startswith("api_key="), log()
        key = fragment.removeprefix("api_key=")
        # The key the control API generated into the (empty) cache: the one it accepts.
        assert key == (cache / "control-api-key").read_text().strip()

        status, body = _get(page)
        if status == 503 and b"client_not_built" in body:
            require_or_skip("the web client is not built (run `make setup` or `make client`)")
        assert status == 200 and b"<title>Avatar Agents</title>" in body, body[:300]
        script = re.search(rb'<script[^>]*src="([^"]+)"', body)
        assert script is not None
        assert _get(page + script.group(1).decode().lstrip("/"))[0] == 200

        status, body = _get(page + "health")
        health = json.loads(body)
        assert status == 200 and health["status"] == "ok", health
        livekit_url = f"ws://127.0.0.1:{env['LIVEKIT_PORT']}"
        assert health["livekit"] == {"url": livekit_url, "reachable": True}, health

        assert _get(page + "avatars")[0] == 401
        status, body = _get(page + "avatars", key)
        assert status == 200 and json.loads(body) == {"sessions": []}, body

        children = {name: int(pid) for name, pid in STARTED.findall(log())}
        assert set(children) == {"livekit", "agent", "control_api"}, log()

        # Ctrl+C: SIGINT to the terminal's foreground process group, i.e. the script's.
        stopped_at = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        returncode = proc.wait(timeout=STOP_TIMEOUT_S)
        stop_s = time.monotonic() - stopped_at

    assert returncode == 130, log()
    assert "[demo] stopping..." in log()
    assert "did not stop in 10 s" not in log(), log()
    assert stop_s < 15, f"stopping took {stop_s:.1f} s"
    # Each child led a session of its own (setsid): nothing of any of them, nor of the
    # script's own, is still running.
    assert _session_members({proc.pid, *children.values()}) == []
