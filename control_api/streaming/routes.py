"""`WS /api/v1/stream/ws` (seed 004's Ditto protocol), `GET /api/v1/stream/sessions` and
`GET /api/v1/stream/stats`. docs/streaming.md is the protocol as a client sees it.

One `StreamSocket` per WebSocket: it greets the client (`status`), reads its messages in order
(`init`, `audio_chunk`, `stop`, `webrtc_offer`), and sends the session's frames from its own
subscription (bounded: a client that reads too slowly loses frames, counted in `progress`),
a `progress` every second while frames come, and `complete` after `stop` once the frames of
all the audio received were sent; then it closes. A bad message is answered with an `error`
and the socket goes on where it can; one it cannot go on after (too large, too many sessions,
a crashed or hung renderer, expiry) closes it after the `error`. Every log line made for a
socket carries its session id (logcontext).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from renderers.errors import CodedError

from .. import context, logcontext
from ..config import Settings
from ..context import SETTINGS, STREAMS
from ..errors import ApiError
from .manager import StreamManager
from .messages import (
    StreamError,
    parse_audio,
    parse_init,
    parse_message,
    parse_offer,
    unknown_type,
)
from .session import StreamSession, Subscription

log = logging.getLogger("control_api.streaming")

HEARTBEAT_S = 20.0
"""WebSocket pings; a client that answers none for half of this is gone."""
CLOSE_TIMEOUT_S = 5.0
SEND_TIMEOUT_S = 5.0
"""The longest an `error` or `complete` waits to go out before the socket is closed anyway."""
PROGRESS_INTERVAL_S = 1.0
PARSE_IN_THREAD_CHARS = 256 * 1024
FRAME_SLACK_BYTES = 1024 * 1024
"""aiohttp refuses (closes with 1009, no words) only past the limit plus this much: a message
between the two is told why in an `error` first."""
CONNECTED = "Connected. Send an init message with the source image or video."
INITIALIZED = "Session initialized. Ready for audio chunks."


class StreamSocket:
    """One client's WebSocket and its session (manager.Watched)."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        manager: StreamManager,
        settings: Settings,
        transport: asyncio.Transport | None = None,
        app: web.Application | None = None,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.app = app
        self.manager = manager
        self.settings = settings
        self.id = str(uuid.uuid4())
        self.session: StreamSession | None = None
        self.subscription: Subscription | None = None
        self.last_message = time.monotonic()
        self.closing = False
        self._initializing = False
        self._send_lock = asyncio.Lock()
        self._sender: asyncio.Task[None] | None = None
        self._progress: asyncio.Task[None] | None = None
        self._finisher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._progress_at = time.monotonic()
        self._progress_frames = 0

    # --- manager.Watched ----------------------------------------------------------------------

    def idle_s(self, now: float) -> float:
        if self.closing or self._initializing or self._finisher is not None:
            return 0.0
        if self.session is not None:
            return self.session.idle_s(now)
        return max(0.0, now - self.last_message)

    def expire(self) -> None:
        if self.closing:
            return
        timeout = self.settings.stream_idle_timeout_s
        self.manager.mark_expired(self.id)
        log.info("stream socket idle for %g s: expired", timeout)
        self._spawn(
            self.fail(
                StreamError(
                    "session_expired",
                    f"nothing was sent or rendered for {timeout:g} s "
                    "(AVATAR_STREAM_IDLE_TIMEOUT_S); the session is closed, open a new socket "
                    "to start again",
                    fatal=True,
                    close_code=WSCloseCode.OK,
                )
            )
        )

    async def shut_down(self) -> None:
        await self.fail(
            StreamError(
                "server_shutdown",
                "the service is shutting down; reconnect when it is back",
                fatal=True,
                close_code=WSCloseCode.GOING_AWAY,
            )
        )

    # --- sending ------------------------------------------------------------------------------

    async def send(self, payload: dict[str, Any] | str) -> bool:
        """Send one message; False when the socket is gone."""
        if self.ws.closed:
            return False
        text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
        async with self._send_lock:
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return False
        return True

    async def fail(self, error: StreamError) -> None:
        """Tell the client `error`, close the socket with its close code, end the session."""
        if self.closing:
            return
        self.closing = True
        log.info("stream socket closing: %s (%s)", error.code, error.message)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.send(error.message_json()), SEND_TIMEOUT_S)
        if self.session is not None:
            await self.session.close()
        await self._close(error.close_code, error.code)

    async def _close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(
                self.ws.close(code=code, message=reason.encode()[:120]), CLOSE_TIMEOUT_S
            )
        except TimeoutError:
            # A client that reads nothing more cannot be told: drop the connection.
            if self.transport is not None:
                self.transport.abort()
        except (ConnectionError, RuntimeError):
            pass

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the conversation ---------------------------------------------------------------------

    async def run(self) -> None:
        await self.send({"type": "status", "message": CONNECTED, "session_id": self.id})
        limit = self.settings.stream_max_message_bytes
        async for message in self.ws:
            self.last_message = time.monotonic()
            if self.session is not None:
                self.session.touch()
            if message.type == WSMsgType.ERROR:
                break
            data = message.data
            if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            if len(data) > limit:
                await self.fail(
                    StreamError(
                        "message_too_large",
                        f"a message is at most {limit} bytes (an init with a source of up to "
                        "AVATAR_MAX_UPLOAD_BYTES as base64); send smaller audio chunks or a "
                        "smaller source",
                        fatal=True,
                        close_code=WSCloseCode.MESSAGE_TOO_BIG,
                    )
                )
                break
            if self.closing:
                continue
            if self._finisher is not None:
                continue  # stopping: the session takes nothing more
            try:
                if message.type == WSMsgType.BINARY:
                    raise StreamError(
                        "invalid_message", "messages are JSON text; this socket takes no binary"
                    )
                await self._handle(data)
            except StreamError as error:
                if error.fatal:
                    await self.fail(error)
                    break
                log.info("stream message refused: %s (%s)", error.code, error.message)
                await self.send(error.message_json())
            if self.closing:
                break

    async def _handle(self, text: str) -> None:
        if len(text) > PARSE_IN_THREAD_CHARS:  # a source inline: megabytes of JSON
            message = await asyncio.to_thread(parse_message, text)
        else:
            message = parse_message(text)
        kind = message["type"]
        if kind == "init":
            await self._init(message, big=len(text) > PARSE_IN_THREAD_CHARS)
        elif kind == "audio_chunk":
            await self._audio(message)
        elif kind == "stop":
            await self._stop()
        elif kind == "webrtc_offer":
            self._offer(message)
        elif kind == "ping":
            await self.send({"type": "pong"})
        else:
            raise unknown_type(kind)

    async def _init(self, message: dict[str, Any], *, big: bool) -> None:
        if self.session is not None:
            raise StreamError(
                "already_initialized",
                "this socket already has a session; send audio_chunk or stop, or open another "
                "socket for another session",
            )
        if big:
            request = await asyncio.to_thread(parse_init, message, self.settings)
        else:
            request = parse_init(message, self.settings)
        self._initializing = True  # loading the source is no idleness (render_timeout bounds it)
        try:
            session = await self.manager.open_session(self.id, request)
        finally:
            self._initializing = False
            self.last_message = time.monotonic()
        self.session = session
        session.add_listener(self._session_ended)
        self.subscription = session.subscribe(self.settings.stream_send_queue)
        self._progress_at = time.monotonic()
        status: dict[str, Any] = {
            "type": "status",
            "message": INITIALIZED,
            "session_id": self.id,
            "renderer": session.renderer,
            "width": session.width,
            "height": session.height,
            "fps": session.fps,
        }
        if request.ignored:
            status["ignored_config"] = list(request.ignored)
        await self.send(status)
        self._sender = asyncio.create_task(self._send_frames(self.subscription))
        self._progress = asyncio.create_task(self._send_progress())

    async def _audio(self, message: dict[str, Any]) -> None:
        session = self.session
        if session is None:
            raise StreamError(
                "not_initialized", "send init (with the source) before the first audio_chunk"
            )
        pcm = parse_audio(message, self.settings)
        limit = self.settings.stream_max_audio_s
        if session.audio_seconds + len(pcm) / 2 / 16000 > limit:
            raise StreamError(
                "audio_limit_exceeded",
                f"a session takes at most {limit:g} s of audio (AVATAR_STREAM_MAX_AUDIO_S); this "
                f"chunk was not used. Send stop, and start a new session for more",
            )
        await session.push_audio(pcm)

    async def _stop(self) -> None:
        if self.session is None:
            await self.send({"type": "complete", "total_frames": 0, "duration_seconds": 0.0})
            self.closing = True
            await self._close(WSCloseCode.OK, "complete")
            return
        self._finisher = asyncio.create_task(self._finish(self.session))

    async def _finish(self, session: StreamSession) -> None:
        try:
            total = await session.finish()
        except StreamError:
            return  # the session failed: its listener tells the client
        if self._sender is not None:
            await self._sender  # the frames still queued go out first
        if self._progress is not None:
            self._progress.cancel()
        await self._report_progress(final=True)
        dropped = self.subscription.dropped if self.subscription is not None else 0
        await self.send(
            {
                "type": "complete",
                "total_frames": total,
                "duration_seconds": round(total / session.fps, 3),
                "audio_seconds": round(session.audio_seconds, 3),
                "dropped": dropped,
            }
        )
        log.info("stream complete: %d frames, %d dropped by this client", total, dropped)
        self.closing = True
        await session.close()  # the worker is gone before the client sees the socket close
        await self._close(WSCloseCode.OK, "complete")

    def _session_ended(self, error: StreamError | None) -> None:
        if error is not None and not self.closing:
            self._spawn(self.fail(error))

    async def _send_frames(self, subscription: Subscription) -> None:
        async for frame in subscription:
            data = base64.b64encode(frame.jpeg).decode("ascii")
            text = (
                f'{{"type":"frame","data":"{data}","frame_id":{frame.frame_id},'
                f'"timestamp":{json.dumps(round(frame.timestamp, 6))}}}'
            )
            if not await self.send(text):
                return

    async def _send_progress(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            await self._report_progress()

    async def _report_progress(self, *, final: bool = False) -> None:
        session = self.session
        if session is None or (session.frames == self._progress_frames and not final):
            return
        now = time.monotonic()
        fps, latency = session.fps_since(self._progress_at, now)
        self._progress_at, self._progress_frames = now, session.frames
        await self.send(
            {
                "type": "progress",
                "processed": session.frames,
                "fps": round(fps, 2),
                "latency_ms": round(latency, 1) if latency is not None else None,
                "dropped": self.subscription.dropped if self.subscription is not None else 0,
            }
        )

    def _offer(self, message: dict[str, Any]) -> None:
        session = self.session
        if session is None:
            raise StreamError("not_initialized", "send init before a webrtc_offer")
        sdp = parse_offer(message)
        self._spawn(self._answer(session, sdp))

    async def _answer(self, session: StreamSession, sdp: str) -> None:
        try:
            from .webrtc import (  # type: ignore[import-not-found,attr-defined,unused-ignore]
                answer_offer,
            )
        except ImportError as error:
            log.info("webrtc unavailable: %s", error)
            await self.send(
                StreamError(
                    "webrtc_unavailable",
                    "WebRTC is not available on this service (aiortc is not installed); "
                    "use the frames on this socket",
                ).message_json()
            )
            return
        # The app's registry of peers (its limits, its ICE servers) when it has one.
        peers_key = getattr(context, "WEBRTC_PEERS", None)
        peers = self.app.get(peers_key) if self.app is not None and peers_key is not None else None
        try:
            answer = await answer_offer(session, sdp, **({"peers": peers} if peers else {}))
        except CodedError as error:
            await self.send({"type": "error", "code": error.code, "message": error.message})
            return
        except Exception:
            log.exception("webrtc offer failed")
            await self.send(
                StreamError(
                    "webrtc_failed", "the WebRTC offer could not be answered"
                ).message_json()
            )
            return
        await self.send({"type": "webrtc_answer", "sdp": answer})

    async def cleanup(self) -> None:
        """Free everything the socket holds: tasks, the subscription, the session's worker."""
        self.closing = True
        for task in (self._sender, self._progress, self._finisher, *self._tasks):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        for task in (self._sender, self._progress, self._finisher, *list(self._tasks)):
            if task is not None and task is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.subscription is not None:
            self.subscription.close()
        if self.session is not None:
            await self.session.close()


async def stream_ws(request: web.Request) -> web.WebSocketResponse:
    """`WS /api/v1/stream/ws`: seed 004's streaming protocol (docs/streaming.md)."""
    settings = request.app[SETTINGS]
    manager = request.app[STREAMS]
    if manager.closing:
        raise ApiError(503, "server_shutdown", "the service is shutting down")
    ws = web.WebSocketResponse(
        heartbeat=HEARTBEAT_S,
        timeout=CLOSE_TIMEOUT_S,
        max_msg_size=settings.stream_max_message_bytes + FRAME_SLACK_BYTES,
    )
    await ws.prepare(request)
    socket = StreamSocket(ws, manager, settings, request.transport, request.app)
    with logcontext.bound(session_id=socket.id):
        manager.watch(socket)
        try:
            await socket.run()
        except Exception:
            log.exception("stream socket failed")
            await socket.fail(
                StreamError(
                    "internal_error",
                    "the service failed on this session; see its log",
                    fatal=True,
                    close_code=WSCloseCode.INTERNAL_ERROR,
                )
            )
        finally:
            manager.unwatch(socket)
            await asyncio.shield(socket.cleanup())
    return ws


async def stream_sessions(request: web.Request) -> web.Response:
    manager = request.app[STREAMS]
    return web.json_response(
        {"sessions": manager.describe(), "max_sessions": manager.settings.stream_max_sessions}
    )


async def stream_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STREAMS].stats())


__all__ = ["StreamSocket", "stream_sessions", "stream_stats", "stream_ws"]
