"""Who a log line is about: the request's correlation id and the streaming session's id.

Context variables, set by the request middleware (`correlation_id`) and by a streaming session
for the work it does (`session_id`); the log formatters (logging_setup.py) add both to every
record made while they are set, in any module, without passing them around.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

CORRELATION_ID: ContextVar[str | None] = ContextVar("correlation_id", default=None)
SESSION_ID: ContextVar[str | None] = ContextVar("session_id", default=None)


@contextlib.contextmanager
def bound(*, correlation_id: str | None = None, session_id: str | None = None) -> Iterator[None]:
    """Set the given ids for the code inside (and the tasks it starts), restore them after."""
    tokens = []
    if correlation_id is not None:
        tokens.append((CORRELATION_ID, CORRELATION_ID.set(correlation_id)))
    if session_id is not None:
        tokens.append((SESSION_ID, SESSION_ID.set(session_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


__all__ = ["CORRELATION_ID", "SESSION_ID", "bound"]
