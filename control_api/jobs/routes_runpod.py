"""Seed 000's RunPod contract: `POST /run`, `POST /runsync`, `GET /status/{id}`,
`POST /cancel/{id}`, also under `/v2/{endpoint_id}/...` so a client only swaps RunPod's base URL.

Bodies are RunPod's: `{"input": {...}, "webhook"?: url}` in, `{id, status, output | error}` out.
Errors these routes raise themselves are RunPod-shaped too, `{"error": "message"}` (400 for a
bad request, 404 for an unknown id), since RunPod clients read `error` as a string; refusals
made before a route runs (401 credentials, 413 body size, 429 rate limit) keep the service's
`{"error": {"code", "message"}}` shape.
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from renderers.errors import CodedError

from ..context import JOBS
from ..validation import read_body
from .inputs import InputError, prepare_destination, prepare_input
from .system import runpod_body

_BODY_FIELDS = ("input", "webhook")


_CODES = {400: "bad_request", 404: "not_found"}


class RunPodError(CodedError):
    """An error these routes answer as RunPod does, `{"error": message}` with `status`; the
    code is the status's (`bad_request`, `not_found`), for logs and metrics."""

    status: int

    def __init__(self, status: int, message: str) -> None:
        super().__init__(_CODES.get(status, "http_error"), message, status=status)

    def response(self) -> web.Response:
        return web.json_response({"error": self.message}, status=self.status)


async def _request_body(request: web.Request) -> tuple[dict[str, Any], str | None]:
    raw = await read_body(request)  # 413 past the body limit, 408 for a stalled body
    try:
        body = json.loads(raw) if raw.strip() else None
    except (ValueError, RecursionError):
        raise RunPodError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise RunPodError(400, 'request body must be a JSON object like {"input": {...}}')
    unknown = sorted(set(body) - set(_BODY_FIELDS))
    if unknown:
        raise RunPodError(
            400, f"unknown field(s): {', '.join(unknown)[:200]}; allowed: input, webhook"
        )
    if "input" not in body:
        raise RunPodError(400, "'input' is required")
    options = request.app[JOBS].options
    assert options is not None, "the job system has not started"
    try:
        job_input = prepare_input(body["input"])
        # Refused now, not when the job has prepared a package it cannot keep.
        prepare_destination(
            job_input, default_bucket=options.s3_default_bucket, local_store=options.local_store
        )
    except InputError as error:
        raise RunPodError(400, error.message) from None
    webhook = body.get("webhook")
    if webhook is not None and (
        not isinstance(webhook, str) or not webhook.lower().startswith(("http://", "https://"))
    ):
        raise RunPodError(400, "'webhook' must be an http(s) URL")
    return job_input, webhook


def _runpod(handler: Any) -> Any:
    """Answer RunPodError as RunPod does."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except RunPodError as error:
            return error.response()

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


async def _job(request: web.Request) -> Any:
    job = await request.app[JOBS].get(request.match_info["job_id"], "prepare")
    if job is None:
        raise RunPodError(404, "request does not exist")
    return job


def _wait_s(request: web.Request) -> float:
    """RunPod's optional `?wait=<ms>`, capped by AVATAR_JOBS_RUNSYNC_WAIT_S."""
    cap = request.app[JOBS].settings.jobs_runsync_wait_s
    raw = request.query.get("wait")
    if raw is None:
        return cap
    try:
        wait_ms = float(raw)
    except ValueError:
        raise RunPodError(400, "'wait' must be a number of milliseconds") from None
    if not math.isfinite(wait_ms) or wait_ms < 0:
        raise RunPodError(400, "'wait' must be a number of milliseconds")
    return min(cap, wait_ms / 1000)


@_runpod
async def run(request: web.Request) -> web.Response:
    job_input, webhook = await _request_body(request)
    job = await request.app[JOBS].submit("prepare", job_input, request, webhook_url=webhook)
    return web.json_response({"id": job.id, "status": "IN_QUEUE"})


@_runpod
async def runsync(request: web.Request) -> web.Response:
    wait_s = _wait_s(request)
    job_input, webhook = await _request_body(request)
    system = request.app[JOBS]
    job = await system.submit("prepare", job_input, request, webhook_url=webhook)
    job = await system.runner.wait(job.id, wait_s) or job
    return web.json_response(runpod_body(job))


@_runpod
async def status(request: web.Request) -> web.Response:
    return web.json_response(runpod_body(await _job(request)))


@_runpod
async def cancel(request: web.Request) -> web.Response:
    job = await _job(request)
    result = await request.app[JOBS].runner.cancel(job.id)
    if result is not None:
        job = result[0]
    return web.json_response({"id": job.id, "status": runpod_body(job)["status"]})
