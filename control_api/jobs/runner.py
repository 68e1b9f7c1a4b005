"""The supervisor: claims due jobs and runs each attempt in its own worker process.

One `JobRunner` lives in the control API's event loop. It never computes anything itself:
every attempt is `python -m control_api.jobs.worker` (see worker.py), a fresh process that
reads its job on stdin and writes JSON events (progress, log lines, the result) on stdout. A
process per attempt makes every way of stopping one the same: on a timeout, a cancel or a
lost lease the supervisor kills the worker's process group, and a crash is just an exit
without a result.

Restart safety. Claims, results and retries are store transactions guarded by the attempt's
lease, and the supervisor renews its leases while it lives. When it starts, jobs still
`processing` under a supervisor that is gone (its pid is dead on this host, or its lease ran
out) are queued again, the lost attempt counted. Workers get SIGKILL when their supervisor dies
(Linux PR_SET_PDEATHSIG) and write nothing but their own attempt directory, so a job whose
supervisor was killed finishes once, in a later attempt; and since a result is recorded only
while its lease holds, nothing completed is ever run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import site
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import logcontext
from ..env_aliases import apply_aliases
from ..gpu import select_gpu
from . import errors
from .store import FAILED, PENDING, Job, JobStoreBase

log = logging.getLogger("control_api.jobs")

IMPORT_ROOT = Path(__file__).resolve().parents[2]
"""The folder that holds the `control_api` package: the checkout, or site-packages when
installed. Workers import the very code their supervisor runs, from there (see `worker_env`)."""
WORKER_COMMAND = (sys.executable, "-m", "control_api.jobs.worker")
_MAX_EVENT_BYTES = 4 * 1024 * 1024
_PROGRESS_WRITE_S = 0.5
"""Progress reaches the store at most this often per job; log lines go at once."""
_STDERR_TAIL_LINES = 8
_KILL_WAIT_S = 10.0

Outcome = tuple[str, Any, str | None]
"""(kind, value, error code) of an attempt: ('completed', output, None), ('retry' | 'rejected',
message, code) or ('stopped', reason, None)."""
SpecBuilder = Callable[[Job, Path], Mapping[str, Any]]
"""(claimed job, its attempt directory) -> what the worker reads on stdin."""
Finished = Callable[[Job], None]
"""Called with a job once it is completed, failed or cancelled."""


def worker_env(environ: Mapping[str, str]) -> dict[str, str]:
    """A worker's environment: the service's, importing control_api from `IMPORT_ROOT`. From a
    checkout that folder goes first on PYTHONPATH; installed it is site-packages, already on
    the path (and put before the standard library it could shadow parts of it). PYTHONSAFEPATH
    keeps `-m` from adding the working directory in front of either. Seed 004's DITTO_* names
    arrive as ours (env_aliases.py), AVATAR_GPU_ID as the one GPU it sees (gpu.select_gpu),
    AVATAR_LOG_LEVEL as the LOG_LEVEL the render worker reads."""
    env = dict(environ)
    apply_aliases(env)  # invalid values were refused by Settings.from_env already
    gpu_id = env.get("AVATAR_GPU_ID", "")
    select_gpu(env, int(gpu_id) if gpu_id.isdigit() else None)
    if env.get("AVATAR_LOG_LEVEL") and not env.get("LOG_LEVEL"):
        env["LOG_LEVEL"] = env["AVATAR_LOG_LEVEL"]
    env["PYTHONSAFEPATH"] = "1"
    if not _on_default_path(IMPORT_ROOT):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(IMPORT_ROOT), env.get("PYTHONPATH")]))
    return env


def _on_default_path(folder: Path) -> bool:
    """True for this interpreter's site-packages (where a wheel installs)."""
    sites = [*site.getsitepackages(), site.getusersitepackages()]
    return any(Path(p).resolve() == folder for p in sites if p)


def timeout_message(seconds: float) -> str:
    return f"Processing timed out after {seconds:g} seconds"


def crash_message(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"Worker crashed unexpectedly (killed by {name})"
    return f"Worker crashed unexpectedly (exit code {returncode})"


LOST_MESSAGE = "Worker crashed unexpectedly (the control API stopped during the job)"


@dataclass(frozen=True)
class RunnerConfig:
    jobs_dir: Path
    concurrency: int = 3
    max_retries: int = 3
    backoff_s: float = 5.0
    backoff_max_s: float = 300.0
    timeout_s: float = 900.0
    lease_s: float = 30.0
    poll_s: float = 1.0
    """Longest sleep of the supervisor loop; it wakes at once on a submit or a finished job."""
    worker_command: tuple[str, ...] = WORKER_COMMAND

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def backoff(self, attempts: int) -> float:
        return backoff_delay(attempts, self.backoff_s, self.backoff_max_s)


def backoff_delay(attempts: int, backoff_s: float, backoff_max_s: float) -> float:
    """Delay before the attempt after attempt number `attempts` (1-based): `backoff_s`,
    doubling each time, at most `backoff_max_s` (the RunPod worker retries alike)."""
    return min(backoff_max_s, backoff_s * 2 ** max(0, attempts - 1))


def _owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    # A killed process its parent has not reaped yet (a zombie) still answers signal 0.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux), or it just went: the lease will tell
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def pdeathsig_preexec(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A preexec_fn that has the child sent `sig` when its parent dies, even by SIGKILL
    (Linux only: prctl PR_SET_PDEATHSIG; None elsewhere). libc is loaded here, in the parent,
    so the child makes only one system call between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sig)

    return preexec


@dataclass
class _Attempt:
    job: Job
    task: asyncio.Task[None] | None = None
    process: asyncio.subprocess.Process | None = None
    stopped: str | None = None
    """Why the supervisor stopped the worker itself: 'cancelled', 'lease lost', 'shutdown'."""
    started: float = field(default_factory=time.monotonic)

    @property
    def lease(self) -> str:
        assert self.job.lease is not None
        return self.job.lease


class JobRunner:
    def __init__(
        self,
        store: JobStoreBase,
        config: RunnerConfig,
        spec: SpecBuilder,
        *,
        on_finished: Finished | None = None,
        on_tick: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self._spec = spec
        self._on_finished = on_finished
        self._on_tick = on_tick
        self.owner = _owner_id()
        self._host = socket.gethostname()
        self._running: dict[str, _Attempt] = {}
        self._wake = asyncio.Event()
        self._changed = asyncio.Condition()
        self._loop_task: asyncio.Task[None] | None = None
        self._closing = False
        self._last_heartbeat = 0.0
        self._last_reclaim = 0.0

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self.config.jobs_dir.mkdir(parents=True, exist_ok=True)
        await self._reclaim()
        self._loop_task = asyncio.create_task(self._loop(), name="job-supervisor")

    async def close(self) -> None:
        """Stop claiming, stop the running workers and give their jobs back uncounted: a
        clean shutdown is not the job's fault."""
        self._closing = True
        self._wake.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        attempts = list(self._running.values())
        for attempt in attempts:
            attempt.stopped = "shutdown"
            await self._kill(attempt)
        tasks = [a.task for a in attempts if a.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for attempt in attempts:
            await asyncio.to_thread(
                self.store.release, attempt.job.id, attempt.lease, "the control API stopped"
            )

    def wake(self) -> None:
        """Look for due jobs now (a job was submitted or retried)."""
        self._wake.set()

    @property
    def running(self) -> int:
        return len(self._running)

    def worker_pid(self, job_id: str) -> int | None:
        attempt = self._running.get(job_id)
        return attempt.process.pid if attempt and attempt.process else None

    # --- operations for the routes ------------------------------------------------------------

    async def cancel(self, job_id: str) -> tuple[Job, str] | None:
        """Cancel a pending or running job (its worker is killed). (job, status before)."""
        result = await asyncio.to_thread(self.store.cancel, job_id)
        if result is None:
            return None
        job, before = result
        attempt = self._running.get(job_id)
        if attempt is not None and job.status == "cancelled":
            attempt.stopped = "cancelled"
            await self._kill(attempt)
        if before != job.status:
            await self._finished(job)
        return result

    async def wait(self, job_id: str, timeout: float) -> Job | None:
        """The job once it has ended, or as it is after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        async with self._changed:
            while True:
                job = await asyncio.to_thread(self.store.get, job_id)
                left = deadline - time.monotonic()
                if job is None or job.terminal or left <= 0:
                    return job
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=min(left, 1.0))

    # --- the loop -----------------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._closing:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a full disk or a locked database must not end the supervisor
                log.exception("job supervisor tick failed")
            self._wake.clear()
            sleep_s = await self._sleep_s()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=sleep_s)

    async def _sleep_s(self) -> float:
        due = await asyncio.to_thread(self.store.next_due_at)
        sleep = self.config.poll_s
        if due is not None and self.running < self.config.concurrency:
            sleep = min(sleep, max(0.01, due - time.time()))
        return sleep

    async def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat >= self.config.lease_s / 3:
            self._last_heartbeat = now
            await self._heartbeat()
        # As often as leases are renewed: with several instances on one store, a job whose
        # instance died is taken over within a third of a lease after its lease ran out.
        if now - self._last_reclaim >= self.config.lease_s / 3:
            self._last_reclaim = now
            await self._reclaim()
        free = self.config.concurrency - self.running
        if free > 0:
            claimed = await asyncio.to_thread(
                self.store.claim, self.owner, free, lease_s=self.config.lease_s
            )
            for job in claimed:
                attempt = _Attempt(job)
                self._running[job.id] = attempt
                attempt.task = asyncio.create_task(self._run(attempt), name=f"job-{job.id}")
        if self._on_tick is not None:
            await self._on_tick()

    async def _heartbeat(self) -> None:
        until = time.time() + self.config.lease_s
        for attempt in list(self._running.values()):
            held = await asyncio.to_thread(
                self.store.renew, attempt.job.id, attempt.lease, until=until
            )
            if not held and attempt.stopped is None:
                log.warning("job %s: lease lost; stopping its worker", attempt.job.id)
                attempt.stopped = "lease lost"
                await self._kill(attempt)

    def _is_stale(self, job: Job) -> bool:
        if job.owner == self.owner:
            return False  # ours: renewed by the heartbeat while its worker runs
        if job.lease_expires_at is not None and job.lease_expires_at < time.time():
            return True
        host, _, rest = (job.owner or "").partition(":")
        pid_text, _, _token = rest.partition(":")
        if host != self._host or not pid_text.isdigit():
            return False  # another machine's supervisor: only its lease can tell
        pid = int(pid_text)
        # Our own pid under another token is an earlier life of this process id (containers
        # restart as pid 1), so it is gone too.
        return pid == os.getpid() or not _pid_alive(pid)

    async def _reclaim(self) -> None:
        jobs = await asyncio.to_thread(self.store.reclaim, self._is_stale, LOST_MESSAGE)
        for job in jobs:
            log.warning("job %s: its supervisor is gone; now %s", job.id, job.status)
            if job.terminal:
                await self._finished(job)
        if jobs:
            self._wake.set()

    # --- one attempt --------------------------------------------------------------------------

    async def _run(self, attempt: _Attempt) -> None:
        job = attempt.job
        # The job id (a render's request_id) is the correlation id of what is logged about it.
        with logcontext.bound(correlation_id=job.id):
            await self._run_attempt(attempt)

    async def _run_attempt(self, attempt: _Attempt) -> None:
        job = attempt.job
        try:
            outcome = await self._execute(attempt)
            await self._record(attempt, outcome)
        except Exception:
            log.exception("job %s: supervising attempt %d failed", job.id, job.attempts)
            with contextlib.suppress(Exception):
                await self._record(
                    attempt,
                    _failure(errors.INTERNAL_ERROR, "internal error while supervising the job"),
                )
        finally:
            self._running.pop(job.id, None)
            self._wake.set()

    def _attempt_dir(self, job: Job) -> Path:
        return self.config.jobs_dir / job.id / f"attempt-{job.attempts}"

    async def _execute(self, attempt: _Attempt) -> Outcome:
        """Run the worker; its Outcome."""
        job = attempt.job
        work_dir = self._attempt_dir(job)
        await asyncio.to_thread(work_dir.mkdir, parents=True, exist_ok=True)
        spec = json.dumps(dict(self._spec(job, work_dir))).encode()
        stderr_path = work_dir.with_suffix(".log")
        env = worker_env(os.environ)
        with stderr_path.open("wb") as stderr:
            attempt.process = await asyncio.create_subprocess_exec(
                *self.config.worker_command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                cwd=work_dir,  # the one folder it writes
                env=env,
                start_new_session=True,  # its own process group, killed as one
                preexec_fn=pdeathsig_preexec(),  # workers die with their supervisor
                limit=_MAX_EVENT_BYTES,
            )
        process = attempt.process
        log.info("job %s: attempt %d in worker pid %d", job.id, job.attempts, process.pid)
        assert process.stdin is not None
        process.stdin.write(spec)
        with contextlib.suppress(ConnectionError):
            await process.stdin.drain()
        process.stdin.close()
        result: Outcome | None = None
        try:
            result = await asyncio.wait_for(self._pump(attempt), timeout=self.config.timeout_s)
        except TimeoutError:
            await self._kill(attempt)
            if attempt.stopped is None:
                return _failure(errors.JOB_TIMEOUT, timeout_message(self.config.timeout_s))
        returncode = await process.wait()
        if attempt.stopped is not None:
            return ("stopped", attempt.stopped, None)
        if result is not None:
            return result
        tail = await asyncio.to_thread(_tail, stderr_path, _STDERR_TAIL_LINES)
        if tail:
            await asyncio.to_thread(
                self.store.attempt_log, job.id, attempt.lease, "worker output:\n" + tail
            )
        return _failure(errors.WORKER_CRASHED, crash_message(returncode))

    async def _pump(self, attempt: _Attempt) -> Outcome | None:
        """Relay the worker's events into the store until its stdout closes; its result."""
        process = attempt.process
        assert process is not None and process.stdout is not None
        job = attempt.job
        result: Outcome | None = None
        last_progress = 0.0
        while True:
            try:
                line = await process.stdout.readline()
            except ValueError:  # a line past the limit: not our protocol
                continue
            if not line:
                return result
            try:
                event = json.loads(line)
                kind = event["event"]
            except (ValueError, KeyError, TypeError):
                continue
            if kind == "progress":
                now = time.monotonic()
                value = float(event.get("progress", 0.0))
                if now - last_progress >= _PROGRESS_WRITE_S or value >= 1.0:
                    last_progress = now
                    await asyncio.to_thread(self.store.set_progress, job.id, attempt.lease, value)
            elif kind == "log":
                await asyncio.to_thread(
                    self.store.attempt_log, job.id, attempt.lease, str(event.get("message", ""))
                )
            elif kind == "result":
                result = ("completed", event.get("output") or {}, None)
            elif kind == "error":
                result = _error_event(event)

    async def _kill(self, attempt: _Attempt) -> None:
        process = attempt.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), timeout=_KILL_WAIT_S)

    async def _record(self, attempt: _Attempt, outcome: Outcome) -> None:
        job = attempt.job
        kind, value, code = outcome
        if kind == "stopped":
            return  # cancelled, lease lost or shutdown: whoever stopped it updates the store
        if kind == "completed":
            done = await asyncio.to_thread(self.store.complete, job.id, attempt.lease, value)
            if done:
                await asyncio.to_thread(self._clean_attempts, job)
        else:
            retry = kind == "retry" and job.attempts < job.max_attempts
            retry_at = time.time() + self.config.backoff(job.attempts) if retry else None
            status = await asyncio.to_thread(
                self.store.fail_attempt, job.id, attempt.lease, value, retry_at=retry_at
            )
            done = status == FAILED
            if status == PENDING:
                log.info(
                    "job %s: attempt %d failed (%s: %s); retrying",
                    *(job.id, job.attempts, code, value),
                )
            elif status == FAILED:
                log.info("job %s: failed (%s: %s)", job.id, code, value)
        if done:
            final = await asyncio.to_thread(self.store.get, job.id)
            if final is not None:
                await self._finished(final)

    def _clean_attempts(self, job: Job) -> None:
        """Remove the directories of earlier, superseded attempts of a completed job."""
        keep = self._attempt_dir(job).name
        for path in (self.config.jobs_dir / job.id).glob("attempt-*"):
            if path.is_dir() and path.name != keep:
                shutil.rmtree(path, ignore_errors=True)

    async def _finished(self, job: Job) -> None:
        if self._on_finished is not None:
            try:
                self._on_finished(job)
            except Exception:
                log.exception("job %s: on_finished hook failed", job.id)
        async with self._changed:
            self._changed.notify_all()
        self._wake.set()


def _failure(code: str, message: str) -> Outcome:
    """A failed attempt's Outcome: retried or not by its code alone (errors.retryable)."""
    return ("retry" if errors.retryable(code) else "rejected", message, code)


def _error_event(event: Mapping[str, Any]) -> Outcome:
    """The Outcome of a worker's error event. The code decides; an event without one (not
    this worker's protocol) falls back to its `retry` flag."""
    message = str(event.get("error") or "unknown error")
    code = event.get("code")
    if isinstance(code, str) and code:
        return _failure(code, message)
    return ("retry" if event.get("retry") else "rejected", message, None)


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])
