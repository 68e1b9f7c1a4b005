"""Seed 004's structured logging: human lines on the console and JSON lines in a file, each
record carrying the correlation id of the request it belongs to and the id of the streaming
session it is about (logcontext.py).

- Console (`enable_console_logging`, AVATAR_LOG_CONSOLE): Rich's handler on a terminal (colour,
  aligned columns, readable tracebacks); piped (systemd, docker, a test's log file) the
  standard one-line `time LEVEL logger: message [request=... session=...]`, which neither
  wraps nor pads.
- File (`enable_file_logging`, AVATAR_LOG_FILE): python-json-logger's formatter, one JSON object
  a line, into `<logs dir>/control-api_YYYYMMDD_HHMMSS.json` (a new file per start; at
  FILE_MAX_BYTES it rolls over to `.1`, `.2`, ...); `latest.json` beside it links to the newest.
  Fields: timestamp (UTC, ISO 8601), level, logger, message, correlation_id, session_id, and
  what a record carries besides (the access log's remote_address, response_status, ...).
  `jq 'select(.correlation_id == "ID")' latest.json` follows one request.

The level is `log_level` (AVATAR_LOG_LEVEL). Job and render worker processes log to stderr,
which their supervisors keep; the job supervisor's own lines carry the job's id.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from pythonjsonlogger.json import JsonFormatter

from .logcontext import CORRELATION_ID, SESSION_ID, bound

if TYPE_CHECKING:
    from aiohttp.web_request import BaseRequest
    from aiohttp.web_response import StreamResponse

    from .config import Settings

REQUEST_ID = web.RequestKey("request_id", str)
"""A request's correlation id (its X-Request-Id), set by app.request_id_middleware."""
FILE_PREFIX = "control-api_"
LATEST = "latest.json"
FILE_MAX_BYTES = 50 * 1024 * 1024
FILE_BACKUPS = 3
RUNS_KEPT = 20
"""Log files of this many starts are kept; older ones are removed at start-up."""
CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(levelname)s %(name)s %(message)s"


class ContextFilter(logging.Filter):
    """Adds `correlation_id` and `session_id` to every record, from logcontext's context
    variables (None when unset); ids given with `extra=` are kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "correlation_id", None) is None:
            record.correlation_id = CORRELATION_ID.get()
        if getattr(record, "session_id", None) is None:
            record.session_id = SESSION_ID.get()
        return True


class ConsoleFormatter(logging.Formatter):
    """The standard formatter, with the record's ids after the message when it has any."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        ids = [
            f"{label}={value}"
            for label, value in (
                ("request", getattr(record, "correlation_id", None)),
                ("session", getattr(record, "session_id", None)),
            )
            if value
        ]
        return f"{text} [{' '.join(ids)}]" if ids else text


def json_formatter() -> JsonFormatter:
    return JsonFormatter(
        JSON_FIELDS,
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp=True,
        json_ensure_ascii=False,
    )


class ContextAccessLogger(web.AccessLogger):
    """aiohttp's access log, its line carrying the request's correlation id: it is written
    after the response, once the middleware's binding has ended."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        with bound(correlation_id=request.get(REQUEST_ID)):
            super().log(request, response, time)


@dataclass
class LoggingSetup:
    """What `configure_logging` installed."""

    handlers: list[logging.Handler] = field(default_factory=list)
    file: Path | None = None
    """The JSON log file of this run; None with file logging off."""

    def close(self) -> None:
        """Take the handlers off the root logger and close them."""
        root = logging.getLogger()
        for handler in self.handlers:
            root.removeHandler(handler)
            handler.close()
        self.handlers.clear()


_current: LoggingSetup | None = None


def configure_logging(settings: Settings) -> LoggingSetup:
    """Set the root logger up as `settings` say: its level, the console, the JSON file. A
    second call replaces what the first installed (and nothing else)."""
    global _current
    if _current is not None:
        _current.close()
    root = logging.getLogger()
    root.setLevel(settings.log_level)
    context = ContextFilter()
    setup = LoggingSetup()
    if settings.enable_console_logging:
        setup.handlers.append(_console_handler())
    problem = None
    if settings.enable_file_logging:
        try:
            handler, setup.file = _file_handler(settings.logs_dir)
            setup.handlers.append(handler)
        except OSError as error:  # an unwritable folder: still log to the console
            problem = f"no JSON log file in {settings.logs_dir}: {error}"
    if not setup.handlers:
        # Nothing at all, not even logging's last-resort lines on stderr.
        setup.handlers.append(logging.NullHandler())
    for handler in setup.handlers:
        handler.addFilter(context)
        root.addHandler(handler)
    _current = setup
    if problem is not None:
        logging.getLogger("control_api").warning("%s", problem)
    if setup.file is not None:
        logging.getLogger("control_api").info("logging to %s", setup.file)
    return setup


def _console_handler() -> logging.Handler:
    from rich.console import Console  # only when the console is on

    console = Console(stderr=True)
    if console.is_terminal:
        from rich.logging import RichHandler

        rich = RichHandler(
            console=console,
            show_path=False,
            markup=False,
            rich_tracebacks=True,
            log_time_format="[%X]",
        )
        rich.setFormatter(ConsoleFormatter("%(name)s: %(message)s"))
        return rich
    plain = logging.StreamHandler()  # stderr
    plain.setFormatter(ConsoleFormatter(CONSOLE_FORMAT))
    return plain


def _file_handler(directory: Path) -> tuple[logging.Handler, Path]:
    """The JSON file handler of this run. Its folder is created private and the files are
    the owner's only (0600): log lines name files, ids and, on a first run, the generated
    API key."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    path = directory / f"{FILE_PREFIX}{stamp}.json"
    suffix = 1
    while path.exists():  # two starts in one second
        suffix += 1
        path = directory / f"{FILE_PREFIX}{stamp}_{suffix}.json"
    path.touch(mode=0o600)
    handler = RotatingFileHandler(
        path, maxBytes=FILE_MAX_BYTES, backupCount=FILE_BACKUPS, encoding="utf-8"
    )
    handler.setFormatter(json_formatter())
    _link_latest(directory, path)
    _prune(directory, keep=path)
    return handler, path


def _link_latest(directory: Path, path: Path) -> None:
    """`latest.json` -> this run's file (relative, so the folder may move), swapped in
    atomically; skipped where symlinks cannot be made."""
    temporary = directory / f".{LATEST}.{os.getpid()}"
    try:
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(path.name)
        os.replace(temporary, directory / LATEST)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        logging.getLogger("control_api").debug("no %s link: %s", LATEST, error)


def _prune(directory: Path, keep: Path) -> None:
    """Remove the log files of all but the newest RUNS_KEPT starts."""
    runs = sorted(p for p in directory.glob(f"{FILE_PREFIX}*.json") if p != keep)
    for old in runs[: max(0, len(runs) - (RUNS_KEPT - 1))]:
        for part in (old, *directory.glob(f"{old.name}.*")):
            try:
                part.unlink()
            except OSError:
                pass


__all__ = [
    "REQUEST_ID",
    "ContextAccessLogger",
    "ContextFilter",
    "LoggingSetup",
    "configure_logging",
]
