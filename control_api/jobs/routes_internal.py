"""Seed 000's internal endpoints: queue status, one job's details, retrying a job."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ..context import JOBS
from ..errors import ApiError, not_found
from .store import STATUSES, Job, JobStateError
from .system import JobSystem, iso_time, runpod_body


async def queue_status(request: web.Request) -> web.Response:
    system = request.app[JOBS]
    counts = await asyncio.to_thread(system.store.counts)
    totals = {status: sum(by_kind[status] for by_kind in counts.values()) for status in STATUSES}
    settings = system.settings
    return web.json_response(
        {
            "running": totals["processing"],
            "pending": totals["pending"],
            "completed": totals["completed"],
            "failed": totals["failed"],
            "cancelled": totals["cancelled"],
            "max_concurrent": settings.jobs_concurrency,
            "max_retries": settings.jobs_max_retries,
            "by_kind": counts,
        }
    )


async def job_details(system: JobSystem, job: Job) -> dict[str, Any]:
    logs = await asyncio.to_thread(system.store.logs, job.id)
    position = await asyncio.to_thread(system.store.queue_position, job)
    details: dict[str, Any] = {
        "job_id": job.id,
        "kind": job.kind,
        "status": job.status,
        "runpod_status": runpod_body(job)["status"],
        "input": job.input,
        "output": job.output,
        "error": job.error,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "progress": round(job.progress, 4),
        "queue_position": position,
        "created_at": iso_time(job.created_at),
        "started_at": iso_time(job.started_at),
        "finished_at": iso_time(job.finished_at),
        "next_attempt_at": iso_time(job.next_attempt_at) if job.status == "pending" else None,
        "logs": [{"timestamp": iso_time(line.at), "message": line.message} for line in logs],
    }
    if job.webhook_url:
        details["webhook"] = {
            "url": job.webhook_url,
            "state": job.webhook_state,
            "attempts": job.webhook_attempts,
            "error": job.webhook_error,
        }
    return details


async def _job(request: web.Request) -> Job:
    job_id = request.match_info["job_id"]
    job = await request.app[JOBS].get(job_id)
    if job is None:
        raise not_found("job", job_id, "job_not_found")
    return job


async def get_job(request: web.Request) -> web.Response:
    job = await _job(request)
    return web.json_response(await job_details(request.app[JOBS], job))


async def retry_job(request: web.Request) -> web.Response:
    system = request.app[JOBS]
    job = await _job(request)
    try:
        retried = await asyncio.to_thread(
            system.store.retry, job.id, extra_attempts=system.settings.jobs_max_retries + 1
        )
    except JobStateError as error:  # 409 job_not_retryable
        raise ApiError.of(error, job_status=error.job.status) from None
    if retried is None:
        raise not_found("job", job.id, "job_not_found")
    system.runner.wake()
    return web.json_response(await job_details(system, retried))
