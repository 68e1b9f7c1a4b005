"""The control API as a real subprocess (`python -m control_api`), on a free loopback port."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.livekit_server import (
    LiveKitServer,
    free_port,
    log_tail,
    pdeathsig_preexec,
    stop_process,
)

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ControlApi:
    base_url: str  # http://127.0.0.1:PORT
    api_key: str
    log_path: Path
    pid: int

    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def running_control_api(
    server: LiveKitServer,
    extra_env: Mapping[str, str] | None = None,
    *,
    extra_args: Sequence[str] = (),
    ready_timeout: float = 30.0,
) -> Iterator[ControlApi]:
    """Start the control API against `server` with a fresh API key and its own background and
    avatar directories (unless `extra_env` names others); stop it when the block ends."""
    work = Path(tempfile.mkdtemp(prefix="control-api-"))
    # A key of the caller's (AVATAR_API_KEYS in extra_env), e.g. one for several instances.
    api_key = (extra_env or {}).get("AVATAR_API_KEYS") or secrets.token_urlsafe(16)
    port = free_port()
    env = {
        **os.environ,
        **server.env(),
        "AVATAR_API_KEYS": api_key,
        "AVATAR_BACKGROUNDS_DIR": str(work / "backgrounds"),
        "AVATAR_AVATARS_DIR": str(work / "avatars"),
        "AVATAR_LOG_DIR": str(work / "logs"),  # its JSON log files (logging_setup.py)
        **(extra_env or {}),
    }
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    log_path = work / "control-api.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "control_api", "--port", str(port), *extra_args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=pdeathsig_preexec(),
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while not _answers(base_url + "/api/v1/live"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"control API did not start (exit {proc.poll()}):\n" + log_tail(log_path, 40)
                )
            time.sleep(0.1)
        yield ControlApi(base_url, api_key, log_path, proc.pid)
    finally:
        stop_process(proc)
