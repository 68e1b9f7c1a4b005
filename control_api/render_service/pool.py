"""The render workers as the control API holds them: started (and warmed) with the app, one
request each at a time, a bounded queue in front of them, replaced when one dies.

Each worker is `python -m control_api.render_service.worker`, a long-lived process (unlike a
job's worker, one per attempt: a still must not pay for starting Python and loading a
renderer). It is spawned like the job workers (jobs/runner.py: `worker_env`, killed with the
control API by PR_SET_PDEATHSIG) and warmed with seed 001's own warm-up input, a grey 512x512
PNG with emotion neutral, which loads the default renderer at 512x512 and draws a still of the
bundled portrait.

A request takes an idle worker, preferring one that has analysed its portrait lately (each
worker keeps its own LRU), or waits, FIFO, if fewer than `render_service_queue` are waiting
already (else `503 render_busy`, with Retry-After). Its whole wait and render is held to
`render_service_timeout_s` (`503 render_timeout`; a worker still rendering is replaced). A
worker that exits mid-request (a crash, a kill, out of memory) fails that request only, with
`503 renderer_crashed` (retryable), and is started and warmed again in the background; the
other requests wait for it or another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import sys
import tempfile
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not on Windows
    fcntl = None  # type: ignore[assignment]

from ..config import Settings
from ..errors import ApiError
from ..jobs.runner import crash_message, pdeathsig_preexec, worker_env
from . import protocol
from .worker import portrait_prefix

log = logging.getLogger("control_api.render_service")

WORKER_COMMAND = (sys.executable, "-m", "control_api.render_service.worker")
HELLO_TIMEOUT_S = 60.0
"""A worker's start (Python, numpy, the renderers package) before it says hello."""
WARMUP_SIZE = 512
RESPAWN_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
AFFINITY = 64
"""Portrait hashes remembered per worker, to send a portrait back to the worker that has it."""
RETRY_AFTER_S = 1
EXIT_GRACE_S = 1.0
"""How long a worker whose output ended has to exit before it is killed."""
CLOSE_WAIT_S = 1.0
"""How long a worker has to stop by itself (its input closed) when the app stops."""
STREAM_LIMIT = 16 * 1024 * 1024
"""The answer's bytes the reader buffers before it pauses the pipe: a batch of large PNGs is
read in one go instead of 64 KiB at a time."""
PIPE_BYTES = 1024 * 1024
"""The pipes' kernel buffers (Linux, F_SETPIPE_SZ; 64 KiB by default): a 512x512 PNG, about
0.5 MB as base64, passes in one write."""


def warmup_image() -> bytes:
    """Seed 001's warm-up input: a 512x512 PNG filled with #888."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (WARMUP_SIZE, WARMUP_SIZE), (0x88, 0x88, 0x88)).save(out, "PNG")
    return out.getvalue()


@dataclass(frozen=True)
class RenderJob:
    renderer: str
    width: int
    height: int
    emotions: tuple[str, ...]
    intensity: float
    format: str
    image: bytes
    digest: str
    """SHA-256 of `image`, hex: the key of the workers' portrait caches."""


@dataclass(frozen=True)
class RenderReply:
    answer: dict[str, Any]
    """The worker's answer: `results` (per emotion: emotion, analysed, warmup, timings),
    `analysed`, `warmup`, `workerMs`."""
    images: list[bytes]
    """Each result's picture, base64."""
    queue_ms: float


class WorkerCrashed(Exception):
    """The worker process ended (or broke the protocol) while it had a request."""


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    recent: OrderedDict[str, None] = field(default_factory=OrderedDict)
    alive: bool = False
    requests: int = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def remember(self, digest: str) -> None:
        self.recent[digest] = None
        self.recent.move_to_end(digest)
        while len(self.recent) > AFFINITY:
            self.recent.popitem(last=False)

    async def spawn(self, command: tuple[str, ...]) -> None:
        self.recent.clear()
        self.process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # the control API's own log
            env=worker_env(os.environ),
            start_new_session=True,  # a Ctrl+C in a terminal is the control API's to handle
            preexec_fn=pdeathsig_preexec(),
            limit=STREAM_LIMIT,
        )
        for pipe in (self.process.stdin, self.process.stdout):
            widen_pipe(pipe)
        try:
            hello, _ = await asyncio.wait_for(self._read(), HELLO_TIMEOUT_S)
        except (TimeoutError, WorkerCrashed):
            await self.kill(grace_s=EXIT_GRACE_S)
            raise WorkerCrashed(self.exit_reason()) from None
        if not hello.get("hello"):
            await self.kill()
            raise WorkerCrashed("the render worker did not start properly")
        self.alive = True

    async def exchange(
        self, message: dict[str, Any], payload: bytes
    ) -> tuple[dict[str, Any], bytes]:
        process = self.process
        assert process is not None and process.stdin is not None
        try:
            process.stdin.write(protocol.pack(message, payload))
            await process.stdin.drain()
        except (ConnectionError, RuntimeError) as error:
            raise WorkerCrashed(str(error)) from None
        self.requests += 1
        return await self._read()

    async def _read(self) -> tuple[dict[str, Any], bytes]:
        process = self.process
        assert process is not None and process.stdout is not None
        try:
            return await protocol.read(process.stdout)
        except (asyncio.IncompleteReadError, ConnectionError, protocol.ProtocolError) as error:
            raise WorkerCrashed(str(error)) from None

    async def kill(self, grace_s: float = 0.0) -> None:
        """Stop the worker: after `grace_s` for it to exit by itself (one whose output ended is
        exiting: its own exit status is the better report), SIGKILL to its process group (as
        the job runner does; never Popen.kill, whose poll can reap the process before
        asyncio's child watcher does and lose its exit status)."""
        self.alive = False
        process = self.process
        if process is None or process.returncode is not None:
            return
        if grace_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), grace_s)
            if process.returncode is not None:
                return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 10.0)

    def exit_reason(self) -> str:
        code = self.process.returncode if self.process is not None else None
        return crash_message(code) if code is not None else "the render worker stopped answering"


class RenderPool:
    def __init__(
        self,
        settings: Settings,
        *,
        command: tuple[str, ...] = WORKER_COMMAND,
        on_analysed: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.settings = settings
        self._command = (*command, "--cache", str(settings.render_service_cache))
        self._on_analysed = on_analysed
        self._workers = [_Worker(i) for i in range(settings.render_service_workers)]
        self._idle: list[_Worker] = []
        self._waiters: deque[asyncio.Future[_Worker]] = deque()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._closing = False
        self._warm = not settings.render_service_warmup
        """Warm-up finished (or is not asked for)."""
        self._spawn_failures = 0
        self.error: dict[str, str] | None = None
        """Why the last warm-up or start failed: {code, message}; None when it did not."""
        self.crashes = 0

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the workers now when warm-up is asked for (in the background: the app serves
        at once and reports `ready: false` until they are warm), else at the first render."""
        if self.settings.render_service_warmup:
            self._ensure_started()

    def _ensure_started(self) -> None:
        if self._started or self._closing:
            return
        self._started = True
        for worker in self._workers:
            self._spawn_soon(worker)

    def _spawn_soon(self, worker: _Worker, delay: float = 0.0) -> None:
        task = asyncio.create_task(
            self._bring_up(worker, delay), name=f"render-worker-{worker.index}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _bring_up(self, worker: _Worker, delay: float) -> None:
        """Start `worker`, warm it, and put it to work; on failure try again after a back-off."""
        if delay:
            await asyncio.sleep(delay)
        if self._closing:
            return
        try:
            await worker.spawn(self._command)
        except (WorkerCrashed, OSError) as error:
            self._spawn_failures += 1
            self.error = {"code": "render_unavailable", "message": f"render worker: {error}"}
            wait = self._backoff()
            log.error(
                "render worker %d did not start (%s); again in %g s", worker.index, error, wait
            )
            self._fail_waiters_if_down()
            self._spawn_soon(worker, wait)
            return
        if self.error is not None and self.error["code"] == "render_unavailable":
            self.error = None
        log.info("render worker %d started (pid %s)", worker.index, worker.pid)
        if self.settings.render_service_warmup and not await self._warm_up(worker):
            return  # it died warming up: it is being replaced, after a back-off
        self._spawn_failures = 0
        self._release(worker)

    def _backoff(self) -> float:
        """The wait before starting a worker again after `_spawn_failures` failures in a row."""
        return RESPAWN_BACKOFF_S[min(max(self._spawn_failures, 1), len(RESPAWN_BACKOFF_S)) - 1]

    async def _warm_up(self, worker: _Worker) -> bool:
        """Render seed 001's warm-up input on `worker`; False when the worker died doing it."""
        started = time.perf_counter()
        job = RenderJob(
            renderer=self.settings.render_service_renderer,
            width=WARMUP_SIZE,
            height=WARMUP_SIZE,
            emotions=("neutral",),
            intensity=0.7,
            format="png",
            image=warmup_image(),
            digest="",
        )
        try:
            answer, _ = await asyncio.wait_for(
                worker.exchange(_message(job), job.image), self.settings.render_service_timeout_s
            )
        except (TimeoutError, WorkerCrashed) as error:
            reason = "timed out" if isinstance(error, TimeoutError) else worker.exit_reason()
            self.error = {"code": "warmup_failed", "message": f"render warm-up: {reason}"}
            self._spawn_failures += 1
            log.error("render worker %d: warm-up failed (%s)", worker.index, reason)
            await self._replace(worker, self._backoff())
            self._fail_waiters_if_down()
            return False
        if not answer.get("ok"):
            # The worker runs, but the renderer cannot: requests get the renderer's own error.
            self.error = {"code": str(answer.get("code")), "message": str(answer.get("message"))}
            log.error("render worker %d: warm-up failed: %s", worker.index, self.error["message"])
            return True
        self.error = None
        self._warm = True
        log.info(
            "render worker %d warm (%s, %.0f ms)",
            worker.index,
            self.settings.render_service_renderer,
            (time.perf_counter() - started) * 1000,
        )
        return True

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for worker in self._workers:
            process = worker.process
            if process is not None and process.stdin is not None:
                with contextlib.suppress(Exception):
                    process.stdin.close()  # the worker's end of input: it stops by itself
        for worker in self._workers:
            process = worker.process
            if process is not None and process.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), CLOSE_WAIT_S)
            await worker.kill()

    # --- state --------------------------------------------------------------------------------

    @property
    def live_workers(self) -> int:
        return sum(1 for w in self._workers if w.alive)

    @property
    def ready(self) -> bool:
        """Warm-up has finished and worked, and a worker is up (or none was started yet, when
        warm-up is off: they start at the first render)."""
        if not self._warm or self.error is not None:
            return False
        return self.live_workers > 0 or not self._started

    def status(self) -> dict[str, Any]:
        state = "ready" if self.ready else ("failed" if self.error else "warming")
        if self._started and self.live_workers == 0 and self._warm:
            state = "restarting"
        report: dict[str, Any] = {
            "ready": self.ready,
            "state": state,
            "renderer": self.settings.render_service_renderer,
            "renderers": list(self.settings.render_service_allowed),
            "workers": len(self._workers),
            "workersUp": self.live_workers,
            "busy": self.live_workers - len(self._idle) if self._started else 0,
            "queued": len(self._waiters),
            "crashes": self.crashes,
        }
        if self.error is not None:
            report["error"] = dict(self.error)
        return report

    # --- rendering ----------------------------------------------------------------------------

    async def render(self, job: RenderJob) -> RenderReply:
        """Render `job` on a worker; ApiError for every way it cannot be done."""
        self._ensure_started()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.render_service_timeout_s
        queued = time.perf_counter()
        worker = await self._acquire(job.digest, deadline)
        queue_ms = (time.perf_counter() - queued) * 1000.0
        # Shielded: a client that goes away must not leave a worker half-way through a frame.
        task = asyncio.create_task(self._run(worker, job, deadline))
        task.add_done_callback(_retrieve)
        answer, images = await asyncio.shield(task)
        return RenderReply(answer, images, queue_ms)

    async def _run(
        self, worker: _Worker, job: RenderJob, deadline: float
    ) -> tuple[dict[str, Any], list[bytes]]:
        left = deadline - asyncio.get_running_loop().time()
        try:
            answer, payload = await asyncio.wait_for(
                worker.exchange(_message(job), job.image), max(0.001, left)
            )
        except TimeoutError:
            log.warning("render worker %d: a render ran over its time; replacing it", worker.index)
            await self._replace(worker)
            raise _timeout(self.settings.render_service_timeout_s) from None
        except WorkerCrashed:
            await worker.kill(grace_s=EXIT_GRACE_S)
            reason = worker.exit_reason()
            log.error("render worker %d crashed mid-request: %s", worker.index, reason)
            await self._replace(worker)
            raise ApiError(
                503,
                "renderer_crashed",
                f"the render worker stopped while rendering this request ({reason}); it is being "
                "replaced: try again",
                headers={"Retry-After": str(RETRY_AFTER_S)},
                retryable=True,
            ) from None
        worker.remember(job.digest)
        self._release(worker)
        if not answer.get("ok"):
            raise _refusal(answer)
        if self.error is not None and job.renderer == self.settings.render_service_renderer:
            # The warm-up failed, yet the default renderer draws now (its models installed
            # since, say): the service works.
            log.info("render service: the default renderer works again; ready")
            self.error = None
            self._warm = True
        if self._on_analysed is not None and not answer.get("warmup"):
            self._on_analysed(job.renderer, bool(answer.get("analysed")))
        images = []
        offset = 0
        for result in answer.get("results", []):
            length = int(result.pop("length"))
            images.append(payload[offset : offset + length])
            offset += length
        return answer, images

    async def _replace(self, worker: _Worker, delay: float = 0.0) -> None:
        self.crashes += 1
        await worker.kill()
        if worker.pid is not None:
            await asyncio.to_thread(_remove_leftovers, worker.pid)
        self._spawn_soon(worker, delay)

    # --- the queue ----------------------------------------------------------------------------

    async def _acquire(self, digest: str, deadline: float) -> _Worker:
        if self._idle:
            return self._take_idle(digest)
        if self._spawn_failures and self.live_workers == 0:
            raise self._unavailable()
        if len(self._waiters) >= self.settings.render_service_queue:
            raise ApiError(
                503,
                "render_busy",
                f"all {len(self._workers)} render workers are busy and "
                f"{len(self._waiters)} requests are waiting (AVATAR_RENDER_SERVICE_QUEUE); "
                "try again shortly",
                headers={"Retry-After": str(RETRY_AFTER_S)},
                retryable=True,
            )
        waiter: asyncio.Future[_Worker] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            left = deadline - asyncio.get_running_loop().time()
            return await asyncio.wait_for(asyncio.shield(waiter), max(0.001, left))
        except (TimeoutError, asyncio.CancelledError) as error:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release(waiter.result())  # handed over just as we gave up: pass it on
            else:
                waiter.cancel()
            if isinstance(error, TimeoutError):
                raise _timeout(self.settings.render_service_timeout_s) from None
            raise

    def _take_idle(self, digest: str) -> _Worker:
        for i, worker in enumerate(self._idle):
            if digest in worker.recent:
                return self._idle.pop(i)
        return self._idle.pop(0)

    def _release(self, worker: _Worker) -> None:
        if self._closing or not worker.alive:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return
        self._idle.append(worker)

    def _unavailable(self) -> ApiError:
        message = (self.error or {}).get("message", "the render workers cannot start")
        return ApiError(
            503,
            "render_unavailable",
            f"{message}; see the control API's log",
            headers={"Retry-After": str(RETRY_AFTER_S * 5)},
            retryable=True,
        )

    def _fail_waiters_if_down(self) -> None:
        if self.live_workers:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(self._unavailable())


def _remove_leftovers(pid: int) -> None:
    """The portrait file a killed worker may have left in the temporary folder."""
    for path in Path(tempfile.gettempdir()).glob(portrait_prefix(pid) + "*"):
        path.unlink(missing_ok=True)


def widen_pipe(stream: Any) -> None:
    """Give a worker's pipe a larger kernel buffer where the platform allows (Linux)."""
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", 1031) if fcntl is not None else None
    transport = getattr(stream, "transport", None) or getattr(stream, "_transport", None)
    pipe = transport.get_extra_info("pipe") if transport is not None else None
    if setpipe is None or pipe is None or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, ValueError):
        fcntl.fcntl(pipe.fileno(), setpipe, PIPE_BYTES)


def _message(job: RenderJob) -> dict[str, Any]:
    return {
        "renderer": job.renderer,
        "width": job.width,
        "height": job.height,
        "emotions": list(job.emotions),
        "intensity": job.intensity,
        "format": job.format,
        "hash": job.digest,
    }


def _timeout(seconds: float) -> ApiError:
    return ApiError(
        503,
        "render_timeout",
        f"the render did not finish within {seconds:g} s (AVATAR_RENDER_SERVICE_TIMEOUT_S), "
        "waiting included; try again, or with a smaller size or batch",
        headers={"Retry-After": str(RETRY_AFTER_S)},
        retryable=True,
    )


def _refusal(answer: dict[str, Any]) -> ApiError:
    status = answer.get("status")
    status = status if isinstance(status, int) and 400 <= status <= 599 else 500
    headers = {"Retry-After": str(RETRY_AFTER_S * 5)} if status == 503 else None
    extra = {"valid": answer["valid"]} if isinstance(answer.get("valid"), list) else {}
    return ApiError(
        status,
        str(answer.get("code") or "render_failed"),
        str(answer.get("message") or "the render failed"),
        headers=headers,
        **extra,
    )


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Consume the result of a render whose client went away (no "never retrieved" noise)."""
    if not task.cancelled():
        task.exception()
