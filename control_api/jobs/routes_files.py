"""File upload for job inputs (`POST /api/v1/files`, the seed's `/api/generate/upload-file`)
and signed downloads (`GET /files/{folder}/{name}`) of uploads and job outputs.

An upload streams to disk under a size limit and answers `{url}`: a signed link that works as
a job's `image_url` / `audio_url` (the worker reads the file directly, see links.local_upload)
or in a browser. Downloads need no API key, only a valid, unexpired signature; they are served
by aiohttp's FileResponse, which answers Range requests (seeking in a video player).
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
import re
import secrets
from pathlib import Path

from aiohttp import BodyPartReader, hdrs, web

from ..context import JOBS
from ..errors import ApiError
from . import links

_CHUNK = 256 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CONTENT_TYPES = {".mp4": "video/mp4", ".tar": "application/x-tar", ".m4a": "audio/mp4"}


def _safe_name(filename: str | None) -> str:
    """A file name made of safe characters that keeps the original's suffix."""
    base = os.path.basename((filename or "").replace("\\", "/"))
    name = _UNSAFE.sub("_", base).strip("._")[-100:]
    return name if links.NAME.fullmatch(name or "") else "file"


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "payload_too_large",
        f"the upload is larger than {limit} bytes (AVATAR_JOBS_MAX_UPLOAD_BYTES)",
        headers={hdrs.CONNECTION: "close"},
    )


async def upload(request: web.Request) -> web.Response:
    """multipart/form-data with one part named `file`."""
    system = request.app[JOBS]
    limit = system.settings.jobs_max_upload_bytes
    if request.content_type != "multipart/form-data":
        raise ApiError(
            415, "unsupported_media_type", "send multipart/form-data with a part named 'file'"
        )
    if request.content_length is not None and request.content_length > limit + _CHUNK:
        raise _too_large(limit)
    reader = await request.multipart()
    path: str | None = None
    async for part in reader:
        if not isinstance(part, BodyPartReader) or part.name != "file":
            raise ApiError(422, "invalid_field", "send exactly one part, named 'file'")
        if path is not None:
            raise ApiError(422, "invalid_field", "send exactly one part, named 'file'")
        path = await _save(part, system.paths.jobs_dir, limit)
    if path is None:
        raise ApiError(422, "invalid_field", "send a part named 'file'")
    return web.json_response({"url": system.sign(system.base_url(request), path)}, status=201)


async def _save(part: BodyPartReader, jobs_dir: Path, limit: int) -> str:
    folder = secrets.token_hex(16)
    name = _safe_name(part.filename)
    target = links.local_path(jobs_dir, folder, name)
    assert target is not None
    await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
    partial = target.with_name(f".{name}.part")
    size = 0
    try:
        with partial.open("wb") as out:
            while chunk := await part.read_chunk(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                await asyncio.to_thread(out.write, chunk)
        if size == 0:
            raise ApiError(422, "invalid_field", "the uploaded file is empty")
        await asyncio.to_thread(os.replace, partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # only if empty: nothing else is in it
            target.parent.rmdir()
        raise
    return links.url_path(folder, name)


async def download(request: web.Request) -> web.StreamResponse:
    system = request.app[JOBS]
    folder, name = request.match_info["folder"], request.match_info["name"]
    target = links.local_path(system.paths.jobs_dir, folder, name)
    if target is None or not links.verify(
        request.rel_url.raw_path, request.query, system.url_secret
    ):
        raise ApiError(
            403, "invalid_signature", "this link is not valid or has expired; ask for a new one"
        )
    if not await asyncio.to_thread(target.is_file):
        raise ApiError(404, "file_not_found", "the file this link names no longer exists")
    content_type = _CONTENT_TYPES.get(target.suffix.lower()) or (
        mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    )
    return web.FileResponse(target, headers={hdrs.CONTENT_TYPE: content_type})
