"""Agent workers as real subprocesses, the way a user runs them (`python -m agent dev`)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.livekit_server import LiveKitServer, log_tail, pdeathsig_preexec, stop_process

REPO = Path(__file__).resolve().parent.parent
READY_LINE = "registered worker"
TEST_GREETING = "Hi."
"""What the test workers greet with: short, so each test gets to its own speech soon."""


def worker_env(server: LiveKitServer, extra: Mapping[str, str]) -> dict[str, str]:
    env = {**os.environ, **server.env(), **extra}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("AVATAR_GREETING", TEST_GREETING)
    env.pop("OPENAI_API_KEY", None)  # tests run the keyless path: piper, no STT or LLM
    env.pop("DEEPGRAM_API_KEY", None)
    env.pop("CARTESIA_API_KEY", None)
    return env


@dataclass(frozen=True)
class Worker:
    pid: int
    log_path: Path


@contextmanager
def running_worker(
    server: LiveKitServer,
    args: Sequence[str],
    extra_env: Mapping[str, str],
    *,
    ready_timeout: float = 60.0,
) -> Iterator[Worker]:
    """Start `python <args>` and wait until it has registered with the server. The worker
    is stopped (SIGTERM, then harder) when the block ends."""
    log_dir = Path(tempfile.mkdtemp(prefix="avatar-worker-"))
    log_path = log_dir / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            env=worker_env(server, extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=pdeathsig_preexec(),
        )
    try:
        deadline = time.monotonic() + ready_timeout
        while READY_LINE not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"worker {' '.join(args)} did not register (exit {proc.poll()}):\n"
                    + log_tail(log_path, 40)
                )
            time.sleep(0.1)
        yield Worker(proc.pid, log_path)
    finally:
        stop_process(proc)
