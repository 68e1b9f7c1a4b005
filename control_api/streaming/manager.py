"""The streaming sessions of one control API: the limit on how many run at once, the registry a
WebRTC peer finds a session in (`get`), the timers (idle expiry, hung workers) and the
statistics of `GET /api/v1/stream/sessions` and `/stats`.

`app[STREAMS]` (context.py) holds it; `lifecycle` is its aiohttp cleanup context (the timer
loop runs while the app does; on the way out every socket is closed and every worker killed)
and `on_shutdown` closes the sockets first, so that open streams do not hold the server's
shutdown up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from aiohttp import WSCloseCode, web

from .. import logcontext
from ..config import Settings
from .emo import plan_for
from .frames import FrameSource
from .messages import InitRequest, StreamError
from .session import COMPLETED, WORKER_COMMAND, StreamSession

log = logging.getLogger("control_api.streaming")

TICK_S = 1.0
"""The timers' period at most (shorter for short timeouts)."""
STATS_WINDOW_S = 2.0
"""The frames of the last this many seconds make the current fps."""
CRASH_CODES = frozenset({"renderer_crashed", "render_timeout"})


class Watched(Protocol):
    """A streaming socket, as the timers see it (routes.StreamSocket)."""

    id: str
    session: StreamSession | None

    def idle_s(self, now: float) -> float: ...

    def expire(self) -> None: ...

    async def shut_down(self) -> None: ...


class StreamManager:
    def __init__(
        self, settings: Settings, *, worker_command: Sequence[str] = WORKER_COMMAND
    ) -> None:
        self.settings = settings
        self.worker_command = tuple(worker_command)
        self._sessions: dict[str, StreamSession] = {}
        self._sockets: set[Watched] = set()
        self._starting = 0
        self._task: asyncio.Task[None] | None = None
        self.closing = False
        self.counts = {
            "started": 0,
            "refused": 0,
            "completed": 0,
            "expired": 0,
            "crashed": 0,
            "failed": 0,
            "disconnected": 0,
        }
        self._frames_done = 0
        self._dropped_done = 0
        self._expired: set[str] = set()

    # --- the registry -------------------------------------------------------------------------

    def get(self, session_id: str) -> FrameSource | None:
        """The live session `session_id` (for a WebRTC peer to watch), or None."""
        session = self._sessions.get(session_id)
        return session if session is not None and not session.closed else None

    def session(self, session_id: str) -> StreamSession | None:
        return self._sessions.get(session_id)

    @property
    def active(self) -> int:
        return len(self._sessions)

    async def open_session(self, session_id: str, request: InitRequest) -> StreamSession:
        """Start a session for `request`: its worker started and the source loaded.
        StreamError `too_many_sessions` (fatal) past `stream_max_sessions`, or why it could not
        start."""
        limit = self.settings.stream_max_sessions
        if self.closing:
            raise StreamError(
                "server_shutdown",
                "the service is shutting down",
                fatal=True,
                close_code=WSCloseCode.GOING_AWAY,
            )
        if len(self._sessions) + self._starting >= limit:
            self.counts["refused"] += 1
            raise StreamError(
                "too_many_sessions",
                f"all {limit} streaming sessions are in use (AVATAR_STREAM_MAX_SESSIONS={limit}); "
                "try again when one has ended, or ask the operator to raise the limit",
                fatal=True,
                close_code=WSCloseCode.TRY_AGAIN_LATER,
            )
        self._starting += 1
        try:
            shown = await asyncio.to_thread(_emotions_shown, request.renderer)
            session = StreamSession(
                session_id,
                request,
                plan_for(request.emo, shown),
                self.settings,
                command=self.worker_command,
                on_closed=self._closed,
            )
            try:
                await session.start()
            except StreamError as error:
                self.counts["crashed" if error.code in CRASH_CODES else "failed"] += 1
                raise
        finally:
            self._starting -= 1
        self._sessions[session_id] = session
        self.counts["started"] += 1
        log.info(
            "stream session started: %s %dx%d at %g fps (pid %s)",
            session.renderer,
            session.width,
            session.height,
            session.fps,
            session.pid,
        )
        return session

    def _closed(self, session: StreamSession) -> None:
        if self._sessions.get(session.session_id) is not session:
            return  # it never started
        del self._sessions[session.session_id]
        self._frames_done += session.frames
        self._dropped_done += session.dropped
        error = session.error
        if session.session_id in self._expired:
            self._expired.discard(session.session_id)
            self.counts["expired"] += 1
        elif session.state == COMPLETED:
            self.counts["completed"] += 1
        elif error is not None and error.code in CRASH_CODES:
            self.counts["crashed"] += 1
        elif error is not None:
            self.counts["failed"] += 1
        else:
            self.counts["disconnected"] += 1
        log.info(
            "stream session ended (%s): %d frames, %d dropped",
            error.code if error is not None else session.state,
            session.frames,
            session.dropped,
        )

    # --- sockets and timers -------------------------------------------------------------------

    def sockets(self) -> list[Watched]:
        """The open streaming sockets, initialized or not."""
        return list(self._sockets)

    def watch(self, socket: Watched) -> None:
        self._sockets.add(socket)

    def unwatch(self, socket: Watched) -> None:
        self._sockets.discard(socket)

    def mark_expired(self, session_id: str) -> None:
        """Count the session `session_id` as expired when it ends."""
        if session_id in self._sessions:
            self._expired.add(session_id)

    async def _timers(self) -> None:
        settings = self.settings
        tick = max(
            0.05,
            min(TICK_S, settings.stream_idle_timeout_s / 4, settings.stream_render_timeout_s / 4),
        )
        while True:
            await asyncio.sleep(tick)
            try:
                self.check(time.monotonic())
            except Exception:
                log.exception("stream timers failed")

    def check(self, now: float) -> None:
        """End the sessions whose worker hangs, expire the idle sockets."""
        for session in list(self._sessions.values()):
            if session.hung(now):
                with logcontext.bound(session_id=session.session_id):
                    self._hung(session)
        for socket in list(self._sockets):
            if socket.idle_s(now) > self.settings.stream_idle_timeout_s:
                with logcontext.bound(session_id=socket.id):
                    socket.expire()

    def _hung(self, session: StreamSession) -> None:
        timeout = self.settings.stream_render_timeout_s
        log.error("stream worker (pid %s) silent for %g s; killing it", session.pid, timeout)
        error = StreamError(
            "render_timeout",
            f"the renderer produced nothing for {timeout:g} s while frames were due "
            "(AVATAR_STREAM_RENDER_TIMEOUT_S); the session is closed, start a new one",
            fatal=True,
            close_code=WSCloseCode.INTERNAL_ERROR,
        )
        _spawn(session.fail(error), f"stream-timeout-{session.session_id}")

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._timers(), name="stream-timers")

    async def close(self) -> None:
        self.closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.shut_down_sockets()
        await asyncio.gather(
            *(session.close() for session in list(self._sessions.values())),
            return_exceptions=True,
        )

    async def shut_down_sockets(self) -> None:
        await asyncio.gather(
            *(socket.shut_down() for socket in list(self._sockets)), return_exceptions=True
        )

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """The app's cleanup context: the timers while it runs, everything freed after."""
        await self.start()
        yield
        await self.close()

    async def on_shutdown(self, app: web.Application) -> None:
        """Close the open streams (each told `server_shutdown`) before the server waits for
        its handlers."""
        self.closing = True
        await self.shut_down_sockets()

    # --- reports ------------------------------------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [session.describe(now) for session in self._sessions.values()]

    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        sessions = list(self._sessions.values())
        fps = sum(s.fps_since(now - STATS_WINDOW_S, now)[0] for s in sessions)
        return {
            "sessions_active": len(sessions),
            "sockets_open": len(self._sockets),
            "sessions_started": self.counts["started"],
            "sessions_completed": self.counts["completed"],
            "sessions_refused": self.counts["refused"],
            "sessions_expired": self.counts["expired"],
            "sessions_crashed": self.counts["crashed"],
            "sessions_failed": self.counts["failed"],
            "sessions_disconnected": self.counts["disconnected"],
            "max_sessions": self.settings.stream_max_sessions,
            "frames": self._frames_done + sum(s.frames for s in sessions),
            "dropped": self._dropped_done + sum(s.dropped for s in sessions),
            "fps": round(fps, 2),
        }


def _emotions_shown(renderer: str) -> tuple[str, ...]:
    """The emotions renderer `renderer` shows (imports its class: off the event loop)."""
    import renderers

    try:
        return tuple(renderers.renderer_class(renderer).capabilities.emotions)
    except renderers.RendererError as error:
        raise StreamError(error.code, error.message) from None
    except ImportError as error:
        raise StreamError(
            "renderer_unavailable", f"renderer '{renderer}' cannot run here: {error}"
        ) from None


_background: set[asyncio.Task[Any]] = set()


def _spawn(coroutine: Any, name: str) -> None:
    task = asyncio.create_task(coroutine, name=name)
    _background.add(task)
    task.add_done_callback(_background.discard)


__all__ = ["StreamManager"]
