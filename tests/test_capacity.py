"""The worker's load as LiveKit sees it: a share of its sessions, full at AVATAR_WORKER_SESSIONS."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from agent.capacity import FULL_LOAD, default_worker_sessions, session_load, worker_sessions
from agent.worker import server


def _server(jobs: int) -> SimpleNamespace:
    return SimpleNamespace(active_jobs=[object()] * jobs)


def test_load_grows_with_sessions_and_is_full_at_the_configured_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AVATAR_WORKER_SESSIONS", "4")
    loads = [session_load(_server(jobs)) for jobs in range(5)]  # type: ignore[arg-type]
    assert loads == pytest.approx([0.0, 0.175, 0.35, 0.525, 0.7])
    assert loads[3] < FULL_LOAD <= loads[4]


def test_default_capacity_follows_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AVATAR_WORKER_SESSIONS", raising=False)
    assert worker_sessions() == default_worker_sessions() >= 2


def test_the_worker_reports_sessions_not_cpu() -> None:
    assert server._load_fnc is session_load  # noqa: SLF001 - the AgentServer's own setting
