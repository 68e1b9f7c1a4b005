"""File upload for job inputs (`POST /api/v1/files`, the seed's `/api/generate/upload-file`)
and signed downloads (`GET /files/{folder}/{name}`) of uploads and job outputs.

An upload streams to disk under a size limit (control_api/uploads.py, shared with the
background upload) and answers `{url}`: a signed link that works as
a job's `image_url` / `audio_url` (the worker reads the file directly, see links.local_upload)
or in a browser. Downloads need no API key, only a valid, unexpired signature; they are served
by aiohttp's FileResponse, which answers Range requests (seeking in a video player).

With a shared bucket (AVATAR_JOBS_S3_BUCKET, shared_files.py) an upload goes on to S3 and a
download is a redirect to a short-lived presigned URL of the object, from any instance.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import secrets
import shutil
import time

from aiohttp import hdrs, web

from .. import uploads
from ..context import JOBS
from ..errors import ApiError
from . import links
from .shared_files import SharedFiles
from .storage import StorageError

_CONTENT_TYPES = {".mp4": "video/mp4", ".tar": "application/x-tar", ".m4a": "audio/mp4"}


async def upload(request: web.Request) -> web.Response:
    """multipart/form-data with one part named `file` (control_api/uploads.py reads it)."""
    system = request.app[JOBS]
    rules = uploads.Rules(
        max_bytes=system.settings.jobs_max_upload_bytes,
        limit_name="AVATAR_JOBS_MAX_UPLOAD_BYTES",
        usage="send multipart/form-data with one part named 'file'",
        idle_timeout_s=system.settings.body_idle_timeout_s,
    )
    folder = secrets.token_hex(16)
    directory = links.files_root(system.paths.jobs_dir) / folder
    async with uploads.receive(request, rules, directory) as received:
        name = uploads.safe_filename(received.filename)
        target = links.local_path(system.paths.jobs_dir, folder, name)
        assert target is not None and target.parent == directory
        os.replace(received.path, target)  # a rename in one directory: instant, and atomic
    shared = system.options.shared_files if system.options else None
    if shared is not None:
        try:
            await asyncio.to_thread(
                shared.put, target, shared.file_key(folder, name), _content_type(name)
            )
        except StorageError as error:
            raise ApiError(503, error.code, error.message) from None
        finally:
            await asyncio.to_thread(shutil.rmtree, directory, True)
    return web.json_response(
        {"url": system.sign(system.base_url(request), links.url_path(folder, name))}, status=201
    )


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
    content_type = _content_type(name)
    shared = system.options.shared_files if system.options else None
    if shared is not None:
        return await _redirect_to_shared(shared, folder, name, content_type, request)
    if not await asyncio.to_thread(target.is_file):
        raise ApiError(404, "file_not_found", "the file this link names no longer exists")
    return web.FileResponse(target, headers={hdrs.CONTENT_TYPE: content_type})


def _content_type(name: str) -> str:
    suffix = os.path.splitext(name)[1].lower()
    return _CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


_PRESIGN_MAX_S = 3600


async def _redirect_to_shared(
    shared: SharedFiles, folder: str, name: str, content_type: str, request: web.Request
) -> web.StreamResponse:
    """302 to a presigned URL of the object, valid no longer than the link (nor an hour)."""
    key = shared.file_key(folder, name)
    try:
        if not await asyncio.to_thread(shared.exists, key):
            raise ApiError(404, "file_not_found", "the file this link names no longer exists")
        expires = int(request.query.get("expires", "0")) - int(time.time())
        url = await asyncio.to_thread(
            shared.presigned, key, min(max(1, expires), _PRESIGN_MAX_S), content_type
        )
    except StorageError as error:
        raise ApiError(503, error.code, error.message) from None
    raise web.HTTPFound(url, headers={hdrs.CACHE_CONTROL: "no-store"})
