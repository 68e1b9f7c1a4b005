"""One attempt of one job, in its own process: `python -m control_api.jobs.worker`.

The supervisor (runner.py) writes the job's spec as JSON on stdin and reads JSON lines back on
stdout, one event each:

    {"event": "progress", "progress": 0.4, "message": "..."}
    {"event": "log", "message": "..."}
    {"event": "result", "output": {...}}               the job completed
    {"event": "error", "code": "...", "error": "...", "retry": false}  it failed

A failure's `code` is stable (errors.py), `error` is the user-facing message (never a class
name or a traceback) and `retry` is derived from the code (errors.retryable); the supervisor
decides by the code. An unforeseen exception is `internal_error` (retried) with a fixed
message; its traceback goes to stderr only.

Anything else the process prints, from Python or from native libraries, goes to stderr, which
the supervisor keeps as the attempt's log file: stdout is reserved for events.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import IO, Any


class EventWriter:
    """Writes events as JSON lines; thread-safe, since progress can come from any thread."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}, default=str)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def progress(self, value: float, message: str = "") -> None:
        self.emit("progress", progress=round(min(1.0, max(0.0, value)), 4), message=message)

    def log(self, message: str) -> None:
        self.emit("log", message=message)


def claim_stdout() -> IO[str]:
    """Keep the real stdout for events and point fd 1 at stderr for everything else."""
    events = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return events


def emit_error(events: EventWriter, code: str, message: str, retry: bool) -> None:
    events.emit("error", code=code, error=message, retry=retry)


def main() -> int:
    events = EventWriter(claim_stdout())
    try:
        spec = json.load(sys.stdin)
    except ValueError:
        emit_error(events, "invalid_job_spec", "the job worker got no valid job spec", False)
        return 2
    try:
        # Imported after the spec is read so that a broken install still reports an event.
        from .errors import INTERNAL_ERROR, INTERNAL_ERROR_MESSAGE, JobError
        from .handlers import run_job
    except Exception:
        import traceback

        traceback.print_exc()
        emit_error(events, "internal_error", "Internal error while processing the job", True)
        return 1

    try:
        output = run_job(spec, events)
    except JobError as error:
        emit_error(events, error.code, error.message, error.retryable)
        return 0
    except Exception:  # anything unforeseen is worth another attempt
        import traceback

        traceback.print_exc()  # to stderr: the attempt's log file, never the job's error
        emit_error(events, INTERNAL_ERROR, INTERNAL_ERROR_MESSAGE, True)
        return 1
    events.emit("result", output=output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
