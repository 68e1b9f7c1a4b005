"""The job system as the control API holds it: store, supervisor, webhooks and signed links,
built from Settings, started and stopped with the app."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from ..config import Settings
from . import links
from .notify import WebhookDispatcher
from .options import JobOptions, options_from_settings
from .runner import JobRunner, RunnerConfig
from .store import CANCELLED, COMPLETED, FAILED, Job, JobStore, JobStoreBase, JobStoreError

log = logging.getLogger("control_api.jobs")

URL_SECRET_FILE = "jobs-url-secret"
WEBHOOK_SECRET_FILE = "webhook-secret"


def read_or_create_secret(path: Path) -> str:
    """A secret kept in `path` (mode 0600), made once; two processes starting together agree."""
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip() or secret
    with os.fdopen(fd, "w") as file:
        file.write(secret + "\n")
    return secret


@dataclass(frozen=True)
class JobPaths:
    db: Path
    jobs_dir: Path
    avatars_dir: Path

    @classmethod
    def of(cls, settings: Settings) -> JobPaths:
        from avatar_runtime.avatars import default_avatars_dir

        cache = settings.cache_dir
        return cls(
            db=settings.jobs_db_path or cache / "jobs.sqlite3",
            jobs_dir=settings.jobs_dir or cache / "jobs",
            avatars_dir=settings.avatars_dir or default_avatars_dir(),
        )


def open_job_store(settings: Settings, paths: JobPaths) -> JobStoreBase:
    """The configured store: PostgreSQL at AVATAR_JOBS_DATABASE_URL, else SQLite at
    AVATAR_JOBS_DB (the default). Either is migrated to its current schema on opening;
    JobStoreError (a code and a message) when it cannot be."""
    if settings.jobs_database_url:
        from .pg_store import PostgresJobStore  # here: psycopg only where PostgreSQL is used

        return PostgresJobStore(settings.jobs_database_url, log_lines=settings.jobs_log_lines)
    return JobStore(paths.db, log_lines=settings.jobs_log_lines)


class JobSystem:
    def __init__(
        self, settings: Settings, *, on_finished: Callable[[Job], None] | None = None
    ) -> None:
        self.settings = settings
        self.paths = JobPaths.of(settings)
        self._on_finished = on_finished
        self._store: JobStoreBase | None = None
        self._runner: JobRunner | None = None
        self._webhooks: WebhookDispatcher | None = None
        self.url_secret = ""
        self.options: JobOptions | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    async def _secret(self, configured: str | None, file_name: str) -> str:
        """`configured`, else the secret kept in the cache directory (made once)."""
        if configured:
            return configured
        return await asyncio.to_thread(read_or_create_secret, self.settings.cache_dir / file_name)

    async def start(self) -> None:
        settings = self.settings
        self.url_secret = await self._secret(settings.jobs_url_secret, URL_SECRET_FILE)
        webhook_secret = await self._secret(settings.webhook_secret, WEBHOOK_SECRET_FILE)
        self.options = options_from_settings(
            settings, url_secret=self.url_secret, avatars_dir=self.paths.avatars_dir
        )
        try:
            self._store = await asyncio.to_thread(open_job_store, settings, self.paths)
        except JobStoreError as error:
            # Configuration the service cannot run with: say so in one line and stop, rather
            # than start without jobs or print a traceback.
            log.critical("cannot start the job system (%s): %s", error.code, error.message)
            raise SystemExit(2) from None
        self._webhooks = WebhookDispatcher(
            self._store, settings, webhook_secret, payload=self.webhook_payload
        )
        self._runner = JobRunner(
            self._store,
            RunnerConfig(
                jobs_dir=self.paths.jobs_dir,
                concurrency=settings.jobs_concurrency,
                max_retries=settings.jobs_max_retries,
                backoff_s=settings.jobs_backoff_s,
                backoff_max_s=settings.jobs_backoff_max_s,
                timeout_s=settings.jobs_timeout_s,
                lease_s=settings.jobs_lease_s,
            ),
            self._spec,
            on_finished=self._on_finished,
            on_tick=self._webhooks.tick,
        )
        self._webhooks.owner = self._runner.owner
        await self._runner.start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.close()
        if self._webhooks is not None:
            await self._webhooks.close()
        if self._store is not None:
            self._store.close()

    @property
    def store(self) -> JobStoreBase:
        assert self._store is not None, "the job system has not started"
        return self._store

    @property
    def runner(self) -> JobRunner:
        assert self._runner is not None, "the job system has not started"
        return self._runner

    def _spec(self, job: Job, work_dir: Path) -> Mapping[str, Any]:
        assert self.options is not None
        return {
            "job_id": job.id,
            "kind": job.kind,
            "attempt": job.attempts,
            "input": job.input,
            "work_dir": str(work_dir),
            "base_url": job.base_url,
            "options": self.options.to_json(),
        }

    # --- operations ---------------------------------------------------------------------------

    def base_url(self, request: web.Request) -> str:
        """Where links we hand out should point: the configured public URL, else the origin
        the caller reached us at."""
        return self.settings.jobs_public_url or str(request.url.origin())

    async def submit(
        self,
        kind: str,
        job_input: Mapping[str, Any],
        request: web.Request,
        *,
        webhook_url: str | None = None,
    ) -> Job:
        job = await asyncio.to_thread(
            self.store.create,
            kind,
            job_input,
            max_attempts=self.settings.jobs_max_retries + 1,
            base_url=self.base_url(request),
            webhook_url=webhook_url,
        )
        self.runner.wake()
        return job

    async def get(self, job_id: str, kind: str | None = None) -> Job | None:
        job = await asyncio.to_thread(self.store.get, job_id)
        if job is None or (kind is not None and job.kind != kind):
            return None
        return job

    def sign(self, base_url: str, path: str) -> str:
        return links.signed_url(base_url, path, self.url_secret, self.settings.jobs_url_ttl_s)

    def render_result(self, job: Job, base_url: str | None = None) -> dict[str, Any]:
        """Seed 003's result: {video: {url}, duration}."""
        output = job.output or {}
        video = output.get("video") or {}
        url = self.sign(base_url or job.base_url or "", video.get("file", ""))
        return {"video": {"url": url}, "duration": output.get("duration")}

    def webhook_payload(self, job: Job) -> dict[str, Any]:
        if job.kind == "render":
            if job.status == COMPLETED:
                return {"request_id": job.id, "status": "OK", "payload": self.render_result(job)}
            return {"request_id": job.id, "status": "ERROR", "error": job.error or job.status}
        return runpod_body(job)


RUNPOD_STATUS = {
    "pending": "IN_QUEUE",
    "processing": "IN_PROGRESS",
    COMPLETED: "COMPLETED",
    FAILED: "FAILED",
    CANCELLED: "CANCELLED",
}


def runpod_body(job: Job) -> dict[str, Any]:
    """RunPod's job JSON: {id, status, output | error}."""
    body: dict[str, Any] = {"id": job.id, "status": RUNPOD_STATUS[job.status]}
    if job.status == COMPLETED:
        body["output"] = job.output
    elif job.status == FAILED:
        body["error"] = job.error
    return body


def iso_time(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"
