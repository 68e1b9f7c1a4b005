"""Seed 003's offline renders: submit, status (queue position, progress, logs), result, cancel;
plus the seed's own paths (`/api/generate/kling-avatar/...`) as aliases of the same handlers.

Statuses follow the fal queue the seed was written against: IN_QUEUE, IN_PROGRESS, COMPLETED,
FAILED, CANCELLED.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from avatar_runtime import EMOTIONS

from ..context import AVATARS, JOBS
from ..errors import ApiError, not_found
from ..validation import json_object, one_of
from .fetch import FetchError, decode_data_uri
from .inputs import RENDER_FIELDS, InputError, render_input
from .routes_internal import job_details
from .store import CANCELLED, COMPLETED, FAILED, Job
from .system import RUNPOD_STATUS

_FLAG_TRUE = ("1", "true", "yes")


async def _validated(request: web.Request) -> dict[str, Any]:
    body = await json_object(request, allowed=RENDER_FIELDS, required=("audio_url",))
    try:
        job_input = render_input(body)
    except InputError as error:
        raise ApiError(422, "invalid_field", error.message) from None
    import renderers

    one_of(job_input["renderer"], renderers.available(), field="renderer", code="invalid_renderer")
    one_of(job_input["emotion"], list(EMOTIONS), field="emotion", code="invalid_emotion")
    avatar_id = job_input.get("avatar_id")
    if avatar_id is not None:
        catalog = request.app[AVATARS]
        if not await asyncio.to_thread(catalog.__contains__, avatar_id) and not (
            await _in_shared_store(request, avatar_id)
        ):
            ids = await asyncio.to_thread(catalog.ids)
            one_of(avatar_id, ids, field="avatar", code="invalid_avatar")
    settings = request.app[JOBS].settings
    for field in ("image_url", "audio_url"):
        url = job_input.get(field)
        if url is not None and url[:5].lower() == "data:":
            # Files sent inline are checked now, in a thread (an image is decoded), so that a
            # bad one is refused before a job is made for it; URLs are the worker's to fetch.
            await asyncio.to_thread(_check_inline, field, url, settings.max_upload_bytes)
    return job_input


async def _in_shared_store(request: web.Request, avatar_id: str) -> bool:
    """Whether another instance prepared `avatar_id` into the shared bucket (the worker
    installs it from there, handlers._shared_avatar)."""
    options = request.app[JOBS].options
    shared = options.shared_files if options else None
    if shared is None:
        return False
    from .storage import StorageError, local_avatar_id

    try:
        key = shared.package_key(local_avatar_id(avatar_id))
        return await asyncio.to_thread(shared.exists, key)
    except StorageError:
        return False


_IMAGE_TYPES = ("", "application/octet-stream", "application/x-tar")
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
"""gzip, bzip2 and xz: a compressed package is refused as one (it must come uncompressed)."""


def _check_inline(field: str, url: str, max_bytes: int) -> None:
    """ApiError unless the data: URI in `field` holds a file the render can use: any bytes for
    the audio (its worker decodes it), an image that decodes (PNG, JPEG or WebP, within the
    pixel limit) or a safe avatar package TAR (wav2lip's) for the image."""
    from renderers import RendererError
    from renderers.vision.portrait import load_image, sniff_format
    from renderers.wav2lip.package import check_package_tar

    # The bytes are what the document cannot describe: their own codes, as for an upload.
    code = "invalid_image" if field == "image_url" else "invalid_audio"
    try:
        media, data = decode_data_uri(url, max_bytes)
    except FetchError as error:  # not base64, no ',', or more than the upload limit
        raise ApiError(422, code, f"'{field}': {error.message}") from None
    if not data:
        raise ApiError(422, code, f"'{field}' is a data: URI without any data")
    if field != "image_url":
        return
    if media and not media.startswith("image/") and media not in _IMAGE_TYPES:
        raise ApiError(
            422,
            "invalid_image",
            f"'image_url' must be an image or an avatar package, not {media[:80]!r}",
        )
    try:
        if sniff_format(data[:16]) is not None:
            load_image(data)
        elif data[257:262] == b"ustar" or data.startswith(_COMPRESSED):  # a package TAR
            check_package_tar(data, "the image_url package")
        else:
            raise ApiError(
                422,
                "invalid_image",
                "'image_url' is not a PNG, JPEG or WebP image, nor an avatar package TAR",
            )
    except RendererError as error:
        code = "invalid_package" if error.code == "invalid_package" else "invalid_image"
        raise ApiError(422, code, error.message) from None


async def submit(request: web.Request) -> web.Response:
    job_input = await _validated(request)
    webhook_url = job_input.pop("webhook_url", None)
    job = await request.app[JOBS].submit("render", job_input, request, webhook_url=webhook_url)
    return web.json_response({"request_id": job.id, "status": "IN_QUEUE"}, status=202)


async def _render(request: web.Request, request_id: str) -> Job:
    job = await request.app[JOBS].get(request_id, "render")
    if job is None:
        raise not_found("render", request_id, "render_not_found")
    return job


async def _request_id_in_body(request: web.Request) -> tuple[str, bool]:
    body = await json_object(request, allowed=("request_id", "logs"), required=("request_id",))
    request_id = body["request_id"]
    if not isinstance(request_id, str) or not request_id:
        raise ApiError(422, "invalid_field", "'request_id' must be a string")
    logs = body.get("logs", False)
    if not isinstance(logs, bool):
        raise ApiError(422, "invalid_field", "'logs' must be true or false")
    return request_id, logs


async def _status_body(request: web.Request, job: Job, with_logs: bool) -> dict[str, Any]:
    details = await job_details(request.app[JOBS], job)
    body: dict[str, Any] = {
        "request_id": job.id,
        "status": RUNPOD_STATUS[job.status],
        "queue_position": details["queue_position"],
        "progress": details["progress"],
        "attempts": job.attempts,
    }
    if job.status == FAILED:
        body["error"] = job.error
    if with_logs:
        body["logs"] = details["logs"]
    return body


async def status(request: web.Request) -> web.Response:
    job = await _render(request, request.match_info["request_id"])
    with_logs = request.query.get("logs", "").lower() in _FLAG_TRUE
    return web.json_response(await _status_body(request, job, with_logs))


async def status_by_body(request: web.Request) -> web.Response:
    request_id, with_logs = await _request_id_in_body(request)
    job = await _render(request, request_id)
    return web.json_response(await _status_body(request, job, with_logs))


def _result(request: web.Request, job: Job) -> web.Response:
    if job.status == COMPLETED:
        system = request.app[JOBS]
        return web.json_response(system.render_result(job, system.base_url(request)))
    if job.status == FAILED:
        raise ApiError(422, "render_failed", job.error or "the render failed")
    if job.status == CANCELLED:
        raise ApiError(409, "render_cancelled", f"render {job.id} was cancelled")
    raise ApiError(
        409,
        "not_ready",
        f"render {job.id} is {RUNPOD_STATUS[job.status]}; poll its status until COMPLETED",
        job_status=RUNPOD_STATUS[job.status],
    )


async def result(request: web.Request) -> web.Response:
    return _result(request, await _render(request, request.match_info["request_id"]))


async def result_by_body(request: web.Request) -> web.Response:
    request_id, _ = await _request_id_in_body(request)
    return _result(request, await _render(request, request_id))


async def cancel(request: web.Request) -> web.Response:
    job = await _render(request, request.match_info["request_id"])
    outcome = await request.app[JOBS].runner.cancel(job.id)
    if outcome is not None:
        job = outcome[0]
    return web.json_response({"request_id": job.id, "status": RUNPOD_STATUS[job.status]})
