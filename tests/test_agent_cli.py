"""The worker's command line: bad configuration fails at start with one clear line, and the
entry the LiveKit CLI drives (`lk agent dev` runs `python -m livekit.agents start FILE`) finds
and registers our worker."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.livekit_server import LiveKitServer, free_port
from tests.worker_process import REPO, running_worker


def _start_agent(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *(args or ("start",))],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _env(**overrides: str) -> dict[str, str]:
    import os

    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        # An address nobody listens on, so a config check that wrongly passed would still
        # fail here, but on the reachability line, which the assertions tell apart.
        "LIVEKIT_URL": f"ws://127.0.0.1:{free_port()}",
    }
    env.update(overrides)
    return env


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"AVATAR_RENDERER": "nonexistent"}, "AVATAR_RENDERER='nonexistent' is not a renderer"),
        ({"AVATAR_SOURCE": "/no/such/portrait.png"}, "AVATAR_SOURCE='/no/such/portrait.png' does"),
        ({"AVATAR_MODE": "sideways"}, "AVATAR_MODE='sideways' is not valid"),
        ({"AVATAR_FPS": "abc"}, "AVATAR_FPS='abc' must be a whole number"),
        ({}, "cannot reach LiveKit at ws://127.0.0.1:"),
        ({"AVATAR_RENDERERS": "oops"}, "AVATAR_RENDERERS entry 'oops' must be name=package."),
        ({"AVATAR_RENDER_TIMEOUT_S": "0"}, "AVATAR_RENDER_TIMEOUT_S=0 must be between 0.1"),
        (  # a renderer of one's own is registered, chosen and loaded: only LiveKit is missing
            {
                "AVATAR_RENDERERS": "faultcard=tests.fault_renderer:FaultcardRenderer",
                "AVATAR_RENDERER": "faultcard",
            },
            "cannot reach LiveKit at ws://127.0.0.1:",
        ),
    ],
    ids=[
        "unknown-renderer",
        "missing-source",
        "bad-mode",
        "bad-fps",
        "unreachable-livekit",
        "bad-extra-renderer",
        "bad-render-timeout",
        "extra-renderer",
    ],
)
def test_bad_configuration_fails_at_start_with_one_clear_line(
    overrides: dict[str, str], expected: str
) -> None:
    result = _start_agent(_env(**overrides))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("avatar-agent: error: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_a_remote_mode_agent_needs_no_renderer_of_its_own() -> None:
    # ditto without its checkpoints cannot load here: fatal where this process draws...
    drawn = _start_agent(_env(AVATAR_RENDERER="ditto", AVATAR_DITTO_DIR=""))
    assert drawn.returncode == 2 and "Ditto checkpoints" in drawn.stderr
    # ...but in the remote mode the avatar worker draws, so only LiveKit is missing
    remote = _start_agent(_env(AVATAR_RENDERER="ditto", AVATAR_DITTO_DIR="", AVATAR_MODE="remote"))
    assert remote.returncode == 2
    assert "cannot reach LiveKit at ws://127.0.0.1:" in remote.stderr, remote.stderr


def test_avatar_worker_checks_its_configuration_too() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent.avatar_worker", "start"],
        cwd=REPO,
        env=_env(AVATAR_RENDERER="nonexistent"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("avatar-worker: error: AVATAR_RENDERER=")


@pytest.mark.livekit
def test_livekit_cli_entry_discovers_and_registers_the_worker(
    livekit_server: LiveKitServer,
) -> None:
    # `lk agent dev` starts exactly this command (plus a reload address we do not need).
    args = [
        "-m", "livekit.agents", "start", "agent/worker.py", "--dev",
        "--url", livekit_server.url,
        "--api-key", livekit_server.api_key,
        "--api-secret", livekit_server.api_secret,
    ]  # fmt: skip
    with running_worker(livekit_server, args, {"AVATAR_AGENT_NAME": "lk-cli-entry"}) as worker:
        assert "lk-cli-entry" in worker.log_path.read_text()
