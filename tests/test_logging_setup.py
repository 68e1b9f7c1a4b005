"""Seed 004's structured logging (control_api/logging_setup.py): JSON lines in
`<logs>/control-api_YYYYMMDD_HHMMSS.json` with `latest.json` beside, each record with the
correlation id of its request (the X-Request-Id sent) and the id of the session it is about,
and human lines on the console, each switched by its setting. In-process with a test app, and
as `python -m control_api` over loopback HTTP."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from control_api import logcontext
from control_api.app import create_app
from control_api.logging_setup import (
    FILE_PREFIX,
    LATEST,
    RUNS_KEPT,
    LoggingSetup,
    configure_logging,
)
from tests.control_api_client import AUTH, make_settings
from tests.livekit_server import free_port
from tests.seed004_process import running_service

log = logging.getLogger("control_api.test_logging")


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    """configure_logging sets the root logger; give the rest of the run its own back."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def _lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSON log file, parsed: each must be one JSON object."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        assert isinstance(record, dict), line
        records.append(record)
    return records


def _setup(tmp_path: Path, **overrides: object) -> tuple[LoggingSetup, Path]:
    logs = tmp_path / "logs"
    settings = make_settings(tmp_path, log_dir=logs, **overrides)
    return configure_logging(settings), logs


def _flush(setup: LoggingSetup) -> None:
    for handler in setup.handlers:
        handler.flush()


async def test_a_requests_lines_carry_its_request_id(tmp_path: Path) -> None:
    setup, logs = _setup(tmp_path, enable_console_logging=False)
    assert setup.file is not None and setup.file.parent == logs
    assert re.fullmatch(FILE_PREFIX + r"\d{8}_\d{6}\.json", setup.file.name)

    async def noisy(request: web.Request) -> web.Response:
        log.info("handling %s", request.path)
        log.warning("something to look at")
        return web.json_response({"ok": True})

    app = create_app(make_settings(tmp_path, log_dir=logs))
    app.router.add_get("/test/noisy", noisy)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        resp = await client.get("/test/noisy", headers={**AUTH, "X-Request-Id": "req-seed004-1"})
        assert resp.status == 200 and resp.headers["X-Request-Id"] == "req-seed004-1"
        resp = await client.get("/test/noisy", headers=AUTH)  # a generated id
        generated = resp.headers["X-Request-Id"]
    finally:
        await client.close()
    log.info("after the requests")
    _flush(setup)

    records = _lines(setup.file)
    mine = [r for r in records if r["logger"] == log.name]
    assert [(r["message"], r["correlation_id"]) for r in mine] == [
        ("handling /test/noisy", "req-seed004-1"),
        ("something to look at", "req-seed004-1"),
        ("handling /test/noisy", generated),
        ("something to look at", generated),
        ("after the requests", None),
    ]
    first = mine[0]
    assert first["level"] == "INFO" and mine[1]["level"] == "WARNING"
    assert first["session_id"] is None
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", first["timestamp"])
    setup.close()


def test_a_bound_session_id_appears_and_unbinds(tmp_path: Path) -> None:
    setup, _ = _setup(tmp_path, enable_console_logging=False)
    with logcontext.bound(session_id="stream-abc", correlation_id="req-2"):
        log.info("frame %d sent", 3)
        with logcontext.bound(session_id="stream-def"):
            log.info("nested")
        try:
            raise ValueError("bad chunk")
        except ValueError:
            log.exception("chunk refused")
    log.info("outside")
    log.info("explicit", extra={"session_id": "given"})
    _flush(setup)
    records = {r["message"]: r for r in _lines(setup.file) if r["logger"] == log.name}
    assert records["frame 3 sent"]["session_id"] == "stream-abc"
    assert records["frame 3 sent"]["correlation_id"] == "req-2"
    assert records["nested"]["session_id"] == "stream-def"
    assert records["nested"]["correlation_id"] == "req-2"
    assert records["chunk refused"]["level"] == "ERROR"
    assert "ValueError: bad chunk" in records["chunk refused"]["exc_info"]
    assert records["outside"]["session_id"] is None
    assert records["outside"]["correlation_id"] is None
    assert records["explicit"]["session_id"] == "given"
    setup.close()


def test_latest_json_links_to_the_newest_file(tmp_path: Path) -> None:
    setup, logs = _setup(tmp_path, enable_console_logging=False)
    first = setup.file
    assert first is not None
    latest = logs / LATEST
    assert latest.is_symlink() and latest.resolve() == first.resolve()
    assert os.readlink(latest) == first.name  # relative: the folder may move
    second, _ = _setup(tmp_path, enable_console_logging=False)  # a restart
    assert second.file is not None and second.file != first and first.exists()
    assert latest.resolve() == second.file.resolve()
    log.info("only in the second")
    _flush(second)
    assert any(r["message"] == "only in the second" for r in _lines(latest))
    assert not any(r["message"] == "only in the second" for r in _lines(first))
    assert not first.stat().st_mode & 0o077  # the owner's only
    assert not logs.stat().st_mode & 0o077
    second.close()


def test_old_runs_are_removed(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for day in range(1, 31):
        (logs / f"{FILE_PREFIX}202601{day:02d}_120000.json").write_text("{}\n")
    (logs / f"{FILE_PREFIX}20260101_120000.json.1").write_text("{}\n")  # a roll-over
    setup, _ = _setup(tmp_path, enable_console_logging=False)
    kept = sorted(p.name for p in logs.glob(f"{FILE_PREFIX}*"))
    assert len(kept) == RUNS_KEPT and setup.file is not None and setup.file.name in kept
    assert f"{FILE_PREFIX}20260130_120000.json" in kept
    assert f"{FILE_PREFIX}20260101_120000.json.1" not in kept
    setup.close()


def test_file_logging_off_writes_no_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    setup, logs = _setup(tmp_path, enable_file_logging=False)
    assert setup.file is None and not logs.exists()
    with logcontext.bound(correlation_id="req-console", session_id="s-9"):
        log.warning("to the console")
    log.info("no ids")
    captured = capsys.readouterr().err
    # piped (not a terminal): one plain line a record, the ids after the message
    assert re.search(
        r"\d\d:\d\d:\d\d,\d{3} WARNING control_api\.test_logging: to the console "
        r"\[request=req-console session=s-9\]$",
        captured,
        re.MULTILINE,
    ), captured
    assert re.search(r"INFO control_api\.test_logging: no ids$", captured, re.MULTILINE)
    setup.close()


def test_console_off_says_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    setup, _ = _setup(tmp_path, enable_console_logging=False, enable_file_logging=False)
    log.error("nobody hears this")
    assert capsys.readouterr().err == ""
    setup.close()


def test_the_console_on_a_terminal_is_richs(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.logging import RichHandler

    monkeypatch.setenv("FORCE_COLOR", "1")  # Rich takes stderr for a terminal
    monkeypatch.setenv("COLUMNS", "200")
    setup, _ = _setup(tmp_path, enable_file_logging=False)
    assert [type(h) for h in setup.handlers] == [RichHandler]
    with logcontext.bound(correlation_id="req-rich"):
        log.info("rendered by rich")
    err = capsys.readouterr().err
    plain = re.sub(r"\x1b\[[0-9;]*m", "", err)
    assert "INFO" in plain and "rendered by rich" in plain and "request=req-rich" in plain
    setup.close()


def test_the_level_setting_filters(tmp_path: Path) -> None:
    setup, _ = _setup(tmp_path, enable_console_logging=False, log_level="WARNING")
    log.info("too quiet")
    log.warning("loud enough")
    _flush(setup)
    assert setup.file is not None
    messages = [r["message"] for r in _lines(setup.file)]
    assert "loud enough" in messages and "too quiet" not in messages
    setup.close()


# --- the service as started from the command line ------------------------------------------


@pytest.mark.slow
def test_the_service_logs_json_with_each_requests_id(tmp_path: Path) -> None:
    port = free_port()
    logs = tmp_path / "logs"
    env = {"AVATAR_PORT": str(port), "AVATAR_LOG_DIR": str(logs), "DITTO_LOG_LEVEL": "INFO"}
    with running_service(tmp_path / "on", env, port) as service:
        reply = service.get("/api/v1/models", {"X-Request-Id": "seed004-models-1"})
        assert reply.status == 200 and reply.headers["X-Request-Id"] == "seed004-models-1"
        assert service.get("/no/such/route", {"X-Request-Id": "seed004-404"}).status == 404
    records = _lines(logs / LATEST)
    access = [r for r in records if r["logger"] == "aiohttp.access"]
    by_id = {r["correlation_id"]: r for r in access}
    assert "GET /api/v1/models" in by_id["seed004-models-1"]["message"]
    assert by_id["seed004-models-1"]["response_status"] == 200
    assert by_id["seed004-404"]["response_status"] == 404
    # start-up lines belong to no request
    assert any(
        r["logger"] == "control_api" and r["message"].startswith("LiveKit ") for r in records
    )
    assert all(r["correlation_id"] is None for r in records if r["message"].startswith("LiveKit "))
    # the console (a file here, not a terminal): plain lines with the same ids
    console = service.output.read_text()
    assert re.search(
        r"INFO aiohttp\.access: .*GET /api/v1/models.*\[request=seed004-models-1\]", console
    )

    # DITTO_ENABLE_CONSOLE_LOGGING=false: nothing on the console; the file still has it all
    quiet_logs = tmp_path / "quiet-logs"
    env = {
        "AVATAR_PORT": str(port),
        "AVATAR_LOG_DIR": str(quiet_logs),
        "DITTO_ENABLE_CONSOLE_LOGGING": "false",
    }
    with running_service(tmp_path / "quiet", env, port) as service:
        assert service.get("/api/v1/live", {"X-Request-Id": "seed004-quiet"}).status == 200
    assert " INFO " not in service.output.read_text()
    assert any(r.get("correlation_id") == "seed004-quiet" for r in _lines(quiet_logs / LATEST))
