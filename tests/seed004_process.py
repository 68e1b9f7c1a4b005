"""`python -m control_api` as a process with its environment as a test sets it (seed 004's
DITTO_* names, logging), without LiveKit or warm render workers: for the tests of what start-up
does with the environment (test_env_aliases.py, test_logging_setup.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.livekit_server import free_port, log_tail, pdeathsig_preexec, stop_process

REPO = Path(__file__).resolve().parent.parent
API_KEY = "seed004-test-key-0123456789"
# Variables of ours that would shadow the DITTO_* names under test.
OURS = (
    "AVATAR_HOST",
    "AVATAR_PORT",
    "AVATAR_GPU_ID",
    "AVATAR_STREAM_MAX_SESSIONS",
    "AVATAR_CORS_ORIGINS",
    "AVATAR_LOG_LEVEL",
    "LOG_LEVEL",
    "AVATAR_LOG_CONSOLE",
    "AVATAR_LOG_FILE",
    "AVATAR_LOG_DIR",
    "AVATAR_LIVEPORTRAIT_BACKEND",
    "AVATAR_WAV2LIP_BACKEND",
    "CUDA_VISIBLE_DEVICES",
)


@dataclass(frozen=True)
class Service:
    base_url: str
    output: Path
    """Its stdout and stderr together."""
    pid: int

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Reply:
        request = urllib.request.Request(
            self.base_url + path, headers={"X-API-Key": API_KEY, **(headers or {})}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return Reply(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as error:
            return Reply(error.code, dict(error.headers), error.read())


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def service_env(work: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """The test run's environment without our names above, plus a private cache, an unreachable
    LiveKit, no render warm-up and `extra`."""
    from renderers.vision import models_dir

    env = {k: v for k, v in os.environ.items() if k not in OURS and not k.startswith("DITTO_")}
    env.update(
        {
            "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
            "AVATAR_CACHE": str(work / "cache"),
            "AVATAR_MODELS_DIR": str(models_dir()),
            "AVATAR_API_KEYS": API_KEY,
            "LIVEKIT_URL": f"ws://127.0.0.1:{free_port()}",
            "AVATAR_RENDER_SERVICE_WARMUP": "false",
            **extra,
        }
    )
    return env


@contextmanager
def running_service(
    work: Path, extra_env: Mapping[str, str], port: int, args: Sequence[str] = ()
) -> Iterator[Service]:
    """Start the service with `extra_env` (which decides the port it binds: `port` is where it
    is looked for) and stop it when the block ends."""
    work.mkdir(parents=True, exist_ok=True)
    output = work / "output.log"
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "control_api", *args],
            cwd=REPO,
            env=service_env(work, extra_env),
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=pdeathsig_preexec(),
        )
    service = Service(f"http://127.0.0.1:{port}", output, proc.pid)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if service.get("/api/v1/live").status == 200:
                    break
            except (urllib.error.URLError, OSError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"control API did not start (exit {proc.poll()}):\n" + log_tail(output, 40)
                )
            time.sleep(0.1)
        yield service
    finally:
        stop_process(proc)
