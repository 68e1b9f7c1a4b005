"""File upload for job inputs (`POST /api/v1/files`, the seed's `/api/generate/upload-file`)
and signed downloads (`GET /files/{folder}/{name}`) of uploads and job outputs.

An upload streams to disk under a size limit (control_api/uploads.py, shared with the
background upload) and answers `{url}`: a signed link that works as
a job's `image_url` / `audio_url` (the worker reads the file directly, see links.local_upload)
or in a browser. Downloads need no API key, only a valid, unexpired signature; they are served
by aiohttp's FileResponse, which answers Range requests (seeking in a video player).
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import secrets

from aiohttp import hdrs, web

from .. import uploads
from ..context import JOBS
from ..errors import ApiError
from . import links

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
    if not await asyncio.to_thread(target.is_file):
        raise ApiError(404, "file_not_found", "the file this link names no longer exists")
    content_type = _CONTENT_TYPES.get(target.suffix.lower()) or (
        mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    )
    return web.FileResponse(target, headers={hdrs.CONTENT_TYPE: content_type})
