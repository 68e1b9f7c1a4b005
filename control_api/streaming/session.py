"""One streaming session as the control API holds it: its own worker process, the audio going
in, the frames coming out to every subscriber. Implements `frames.FrameSource`.

The worker (`python -m control_api.streaming.worker`, worker.py) is spawned like the render
service's and the jobs' workers (jobs/runner.py: `worker_env`, killed with the control API by
PR_SET_PDEATHSIG, in a process group of its own), in a temporary folder of the session's own,
removed when the session closes however the worker ended. It loads the source, then turns
audio into frames; each frame comes back with its JPEG and exactly its own window of audio.

Frames fan out to the subscribers (the WebSocket's sender, WebRTC peers), each with its own
bounded queue: a subscriber that falls behind loses its oldest frames (`dropped`), the others
and the worker never wait for it. The worker is never held up by a subscriber, so memory stays
bounded by the queues.

How a session ends: `finish` (the client's `stop`: the frames of all audio received so far are
rendered, then iteration ends), a worker that exits or breaks the protocol (`renderer_crashed`),
goes silent while it owes frames for `stream_render_timeout_s` (`render_timeout`, killed) or
reports a renderer error (its code), and `close` (the socket closed, expiry, shutdown), which
frees everything at once: the worker is killed and its folder removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode

from avatar_runtime.timeline import FrameTimeline

from ..config import Settings
from ..jobs.runner import crash_message, pdeathsig_preexec, worker_env
from ..render_service import protocol
from ..render_service.pool import EXIT_GRACE_S, HELLO_TIMEOUT_S, STREAM_LIMIT, widen_pipe
from .emo import Run
from .frames import AUDIO_RATE, StreamFrame
from .messages import InitRequest, StreamError

log = logging.getLogger("control_api.streaming")

WORKER_COMMAND = (sys.executable, "-m", "control_api.streaming.worker")
RECENT_FRAMES = 1024
"""Frames remembered (arrival time and latency) for the fps and latency reports."""

LOADING = "loading"
READY = "ready"
STREAMING = "streaming"
STOPPING = "stopping"
COMPLETED = "completed"
FAILED = "failed"
CLOSED = "closed"


class Subscription:
    """One consumer's bounded queue of frames (frames.FrameSubscription)."""

    def __init__(self, session: StreamSession, max_queue: int) -> None:
        self._session = session
        self._max = max(1, int(max_queue))
        self._queue: deque[StreamFrame] = deque()
        self._wakeup = asyncio.Event()
        self._ended = False
        self._closed = False
        self.dropped = 0

    def put(self, frame: StreamFrame) -> None:
        if self._closed or self._ended:
            return
        if len(self._queue) >= self._max:
            self._queue.popleft()  # the oldest goes: a live picture must not lag behind
            self.dropped += 1
            self._session.dropped += 1
        self._queue.append(frame)
        self._wakeup.set()

    def end(self) -> None:
        """No more frames: iteration ends once the queued ones are taken."""
        self._ended = True
        self._wakeup.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def __aiter__(self) -> AsyncIterator[StreamFrame]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[StreamFrame]:
        while True:
            if self._closed:
                return
            if self._queue:
                yield self._queue.popleft()
                continue
            if self._ended:
                return
            self._wakeup.clear()
            await self._wakeup.wait()

    def close(self) -> None:
        self._closed = True
        self._queue.clear()
        self._wakeup.set()
        self._session._unsubscribe(self)


class StreamSession:
    """A live streaming session (frames.FrameSource) and its worker process."""

    def __init__(
        self,
        session_id: str,
        request: InitRequest,
        runs: Sequence[Run],
        settings: Settings,
        *,
        command: Sequence[str] = WORKER_COMMAND,
        on_closed: Callable[[StreamSession], None] | None = None,
    ) -> None:
        self.session_id = session_id
        self.renderer = request.renderer
        self.fps = float(request.fps)
        self.width = request.width
        self.height = request.height
        self.request = request
        self.runs = tuple(runs)
        self.settings = settings
        self.state = LOADING
        self.error: StreamError | None = None
        self.created = time.monotonic()
        self.last_activity = self.created
        self.frames = 0
        """Frames the worker has produced."""
        self.dropped = 0
        """Frames lost by subscribers that read too slowly, all of them together."""
        self.audio_samples = 0
        self.recent: deque[tuple[float, float]] = deque(maxlen=RECENT_FRAMES)
        """(arrival time, latency in seconds) of the latest frames."""
        self._command = tuple(command)
        self._on_closed = on_closed
        self._timeline = FrameTimeline(AUDIO_RATE, self.fps)
        self._arrivals: deque[tuple[int, float]] = deque()
        """(audio samples received up to the end of a chunk, when it arrived), for latency."""
        self._end_sent_at: float | None = None
        self._subscriptions: set[Subscription] = set()
        self._listeners: list[Callable[[StreamError | None], None]] = []
        self._process: asyncio.subprocess.Process | None = None
        self._tmp: Path | None = None
        self._reader: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._outstanding = 0
        """Messages sent to the worker that it has not acknowledged yet."""
        self._heard = time.monotonic()
        """When the worker last said anything (or was last given work while it owed none)."""
        self._done: asyncio.Future[int] | None = None
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None

    # --- frames.FrameSource -------------------------------------------------------------------

    def subscribe(self, max_queue: int = 60) -> Subscription:
        subscription = Subscription(self, max_queue)
        if self.closed or self.state in (COMPLETED, FAILED):
            subscription.end()
        else:
            self._subscriptions.add(subscription)
        return subscription

    @property
    def closed(self) -> bool:
        return self._closing

    def _unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    # --- state --------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    @property
    def audio_seconds(self) -> float:
        return self.audio_samples / AUDIO_RATE

    @property
    def busy(self) -> bool:
        """Loading, or owing the worker's answer to audio it was sent."""
        return self.state == LOADING or self._outstanding > 0

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def idle_s(self, now: float | None = None) -> float:
        """Seconds since the client's last message or the last frame; 0 while busy."""
        if self.busy:
            return 0.0
        return max(0.0, (now if now is not None else time.monotonic()) - self.last_activity)

    def hung(self, now: float) -> bool:
        """The worker owes frames and has said nothing for `stream_render_timeout_s`."""
        return (
            self._outstanding > 0
            and not self._closing
            and now - self._heard > self.settings.stream_render_timeout_s
        )

    def fps_since(self, since: float, now: float) -> tuple[float, float | None]:
        """(frames per second, mean latency in ms) of the frames produced after `since`."""
        latest = [latency for at, latency in self.recent if at > since]
        span = max(1e-3, now - since)
        mean = sum(latest) / len(latest) * 1000.0 if latest else None
        return len(latest) / span, mean

    def add_listener(self, listener: Callable[[StreamError | None], None]) -> None:
        """`listener(error)` is called once when the session ends: None when it completed (at
        once when it has ended already)."""
        if self._closing or self.state in (COMPLETED, FAILED):
            listener(self.error)
        else:
            self._listeners.append(listener)

    def describe(self, now: float | None = None) -> dict[str, Any]:
        now = now if now is not None else time.monotonic()
        fps, latency = self.fps_since(now - 2.0, now)
        return {
            "session_id": self.session_id,
            "renderer": self.renderer,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "state": self.state,
            "frames": self.frames,
            "dropped": self.dropped,
            "audio_seconds": round(self.audio_seconds, 3),
            "age_s": round(now - self.created, 3),
            "idle_s": round(self.idle_s(now), 3),
            "render_fps": round(fps, 2),
            "latency_ms": round(latency, 1) if latency is not None else None,
            "subscribers": self.subscribers,
            "pid": self.pid,
        }

    # --- starting -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker and load the source; StreamError when it cannot (the session is
        closed then)."""
        try:
            await self._spawn()
            await self._load()
        except StreamError as error:
            self.error = error
            await self.close()
            raise
        except BaseException:
            await self.close()
            raise
        self.state = READY
        self.touch()
        self._reader = asyncio.create_task(self._read_frames(), name=f"stream-{self.session_id}")

    async def _spawn(self) -> None:
        self._tmp = Path(
            await asyncio.to_thread(
                tempfile.mkdtemp, prefix=f"avatar-stream-{self.session_id[:12]}-"
            )
        )
        env = worker_env(os.environ)
        env["TMPDIR"] = str(self._tmp)  # whatever a library writes goes with the session too
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self._command,
                "--tmp",
                str(self._tmp),
                "--session",
                self.session_id,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=None,  # the control API's own log
                env=env,
                start_new_session=True,  # its own process group, killed as one
                preexec_fn=pdeathsig_preexec(),
                limit=STREAM_LIMIT,
            )
        except OSError as error:
            raise StreamError(
                "renderer_unavailable",
                f"the session's worker process could not start ({error.strerror or error})",
                fatal=True,
                close_code=WSCloseCode.INTERNAL_ERROR,
            ) from None
        for pipe in (self._process.stdin, self._process.stdout):
            widen_pipe(pipe)
        log.info("stream worker started (pid %s, %s)", self._process.pid, self.renderer)
        hello = await self._answer(HELLO_TIMEOUT_S, "starting", setting=None)
        if not hello.get("hello"):
            raise await self._crashed("the worker did not start properly")

    async def _load(self) -> None:
        request = self.request
        init = {
            "type": "init",
            "renderer": request.renderer,
            "width": request.width,
            "height": request.height,
            "fps": request.fps,
            "kind": request.kind,
            "suffix": request.suffix,
            "emo": [[run.start, run.emotion, run.intensity] for run in self.runs],
            # Ditto's knobs, for a renderer that has them (a diffusion renderer's steps).
            "options": {
                "crop_scale": request.crop_scale,
                "sampling_timesteps": request.sampling_timesteps,
                "max_size": request.max_size,
            },
        }
        await self._write(init, request.source, owed=False)
        answer = await self._answer(self.settings.stream_render_timeout_s, "loading the source")
        if answer.get("type") == "error":
            raise StreamError(
                str(answer.get("code") or "render_failed"),
                str(answer.get("message") or "the renderer could not load the source"),
            )
        if answer.get("type") != "ready":
            raise await self._crashed("the worker answered the init with something else")

    async def _answer(
        self, timeout_s: float, doing: str, setting: str | None = "AVATAR_STREAM_RENDER_TIMEOUT_S"
    ) -> dict[str, Any]:
        """The worker's next message, within `timeout_s` (render_timeout after), or
        renderer_crashed when it exits."""
        process = self._process
        assert process is not None and process.stdout is not None
        try:
            message, _ = await asyncio.wait_for(protocol.read(process.stdout), timeout_s)
        except TimeoutError:
            raise StreamError(
                "render_timeout",
                f"the renderer took longer than {timeout_s:g} s {doing}"
                + (f" ({setting})" if setting else "")
                + "; the session is closed",
                fatal=True,
                close_code=WSCloseCode.INTERNAL_ERROR,
            ) from None
        except (asyncio.IncompleteReadError, ConnectionError, protocol.ProtocolError):
            raise await self._crashed() from None
        self._heard = time.monotonic()
        return message

    async def _crashed(self, reason: str | None = None) -> StreamError:
        process = self._process
        if process is not None and process.returncode is None and reason is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), EXIT_GRACE_S)
        if reason is None:
            code = process.returncode if process is not None else None
            reason = crash_message(code) if code is not None else "it stopped answering"
        return StreamError(
            "renderer_crashed",
            f"the session's renderer stopped: {reason}; the session is closed, start a new one",
            fatal=True,
            close_code=WSCloseCode.INTERNAL_ERROR,
        )

    # --- audio in, frames out -----------------------------------------------------------------

    async def push_audio(self, pcm: bytes) -> None:
        """Send a chunk of PCM (int16 mono, 16 kHz) to the worker. Waits while the worker's
        input is full (the client is then slowed down by TCP)."""
        self._check_open()
        now = time.monotonic()
        self.audio_samples += len(pcm) // 2
        self._arrivals.append((self.audio_samples, now))
        self.state = STREAMING
        self.touch()
        await self._write({"type": "audio"}, pcm)

    async def finish(self) -> int:
        """Render the frames of all audio received so far, end the subscriptions (after their
        queued frames) and return the number of frames; StreamError when the session fails."""
        self._check_open()
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        self.state = STOPPING
        self._end_sent_at = time.monotonic()
        await self._write({"type": "end"})
        frames = await self._done
        self.state = COMPLETED
        for subscription in list(self._subscriptions):
            subscription.end()
        self._notify(None)
        return frames

    def _check_open(self) -> None:
        if self.error is not None:
            raise self.error
        if self._closing:
            raise StreamError("session_closed", "the session is closed", fatal=True)

    async def _write(
        self, message: dict[str, Any], payload: bytes = b"", *, owed: bool = True
    ) -> None:
        """Send `message` to the worker; `owed`: it will be acknowledged (ack), and the worker
        owes an answer until then (render_timeout)."""
        process = self._process
        assert process is not None and process.stdin is not None
        if owed:
            if self._outstanding == 0:
                self._heard = time.monotonic()  # it owed nothing until now: the clock starts
            self._outstanding += 1
        try:
            async with self._write_lock:
                process.stdin.write(protocol.pack(message, payload))
                await process.stdin.drain()
        except (ConnectionError, RuntimeError):
            # The worker is gone: the reader reports why (and ends the session).
            error = self.error or await self._crashed()
            raise error from None

    async def _read_frames(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        try:
            while True:
                message, payload = await protocol.read(process.stdout)
                self._heard = time.monotonic()
                kind = message.get("type")
                if kind == "frame":
                    self._frame(message, payload)
                elif kind == "ack":
                    self._outstanding = max(0, self._outstanding - int(message.get("count", 0)))
                elif kind == "done":
                    if self._done is not None and not self._done.done():
                        self._done.set_result(int(message.get("frames", self.frames)))
                elif kind == "error":
                    error = StreamError(
                        str(message.get("code") or "render_failed"),
                        str(message.get("message") or "the renderer failed"),
                        fatal=True,
                        close_code=WSCloseCode.INTERNAL_ERROR,
                    )
                    log.warning("stream renderer failed: %s", error.message)
                    await self.fail(error)
                    return
        except (asyncio.IncompleteReadError, ConnectionError, protocol.ProtocolError):
            if self._closing:
                return
            error = await self._crashed()
            log.error("stream worker (pid %s) crashed: %s", self.pid, error.message)
            await self.fail(error)

    def _frame(self, message: dict[str, Any], payload: bytes) -> None:
        now = time.monotonic()
        size = int(message.get("jpeg", 0))
        frame_id = int(message.get("id", self.frames))
        frame = StreamFrame(
            frame_id=frame_id,
            timestamp=frame_id / self.fps,
            jpeg=payload[:size],
            audio=payload[size:],
            width=self.width,
            height=self.height,
        )
        self.frames += 1
        self.last_activity = now
        self.recent.append((now, now - self._audio_arrival(frame_id, now)))
        for subscription in list(self._subscriptions):
            subscription.put(frame)

    def _audio_arrival(self, frame_id: int, now: float) -> float:
        """When the last audio of frame `frame_id`'s window arrived (when `stop` came for the
        silence that pads the last window)."""
        end = self._timeline.boundary(frame_id + 1)
        while self._arrivals and self._arrivals[0][0] < end:
            self._arrivals.popleft()  # chunks before this window's end: later frames need none
        if self._arrivals:
            return self._arrivals[0][1]
        return self._end_sent_at if self._end_sent_at is not None else now

    # --- ending -------------------------------------------------------------------------------

    async def fail(self, error: StreamError) -> None:
        """End the session with `error` (its listeners are told) and free it."""
        if self._closing or self.error is not None:
            return
        self.error = error
        self.state = FAILED
        if self._done is not None and not self._done.done():
            self._done.set_exception(error)
            self._done.exception()  # retrieved: the finisher may be gone
        for subscription in list(self._subscriptions):
            subscription.end()
        self._notify(error)
        await self.close()

    def _notify(self, error: StreamError | None) -> None:
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            try:
                listener(error)
            except Exception:
                log.exception("a stream session listener failed")

    async def close(self) -> None:
        """Free everything now: subscriptions end, the worker is killed, its folder removed.
        Done once, to the end, whoever calls it and even when the caller is cancelled."""
        if self._close_task is None:
            self._closing = True
            if self.state not in (COMPLETED, FAILED):
                self.state = CLOSED
            self._close_task = asyncio.create_task(self._close_now())
        if self._close_task is not asyncio.current_task():
            await asyncio.shield(self._close_task)

    async def _close_now(self) -> None:
        try:
            for subscription in list(self._subscriptions):
                subscription.end()
            if self._done is not None and not self._done.done():
                self._done.set_exception(self.error or StreamError("session_closed", "closed"))
                self._done.exception()
            reader = self._reader
            if reader is not None and reader is not asyncio.current_task():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
            await self._kill()
            if self._tmp is not None:
                await asyncio.to_thread(shutil.rmtree, self._tmp, True)
        finally:
            self._notify(self.error)
            if self._on_closed is not None:
                self._on_closed(self)

    async def _kill(self) -> None:
        """SIGKILL to the worker's process group (as the render pool and the job runner do:
        never Popen.kill, which can reap the process before asyncio's child watcher)."""
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(Exception):
                process.stdin.close()
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 10.0)
        log.info("stream worker (pid %s) ended", process.pid)


__all__ = ["WORKER_COMMAND", "StreamSession"]
