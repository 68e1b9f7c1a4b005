"""What a session can be set to: `GET /emotions` and the background library."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import BodyPartReader, hdrs, web

from avatar_runtime import EMOTIONS
from avatar_runtime.backgrounds import BLUR, ORIGINAL, BackgroundLibrary
from avatar_runtime.backgrounds import ID_PATTERN as BACKGROUND_ID
from renderers import RendererError

from .context import BACKGROUNDS, SETTINGS
from .errors import ApiError

EMOTION_DESCRIPTIONS = {
    "neutral": "Default relaxed expression",
    "happy": "Smiling, positive expression",
    "sad": "Downward mouth, empathetic look",
    "concerned": "Furrowed brow, serious expression",
    "surprised": "Raised eyebrows, open mouth",
    "angry": "Frown, tense features",
    "reassuring": "Warm, gentle smile that comforts",
}
assert set(EMOTION_DESCRIPTIONS) == set(EMOTIONS), "describe every emotion the runtime knows"

BUILTIN_BACKGROUNDS = (
    {"id": ORIGINAL, "kind": "builtin", "description": "The portrait's own background"},
    {"id": BLUR, "kind": "builtin", "description": "The portrait's own background, blurred"},
    {"id": "color:#RRGGBB", "kind": "color", "description": "A solid colour, e.g. color:#1e3a5f"},
)
BUNDLED_DESCRIPTIONS = {
    "medical_office": "Professional medical setting",
    "clinic_room": "Clinical examination room",
    "hospital_room": "Hospital patient room",
    "consultation_room": "Private consultation space",
}
"""The images bundled with the runtime (avatar_runtime/assets/backgrounds), as listed."""
_UPLOAD_CHUNK = 64 * 1024
_ID_RULE = "1-64 characters of a-z 0-9 _ -, starting with a letter or digit"


async def list_emotions(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "emotions": [{"id": e, "description": EMOTION_DESCRIPTIONS[e]} for e in EMOTIONS],
            "default": "neutral",
        }
    )


def _image_entry(background_id: str, *, bundled: bool = False) -> dict[str, Any]:
    if bundled:
        description = BUNDLED_DESCRIPTIONS.get(background_id, "An image bundled with the runtime")
    else:
        description = "An uploaded image"
    return {
        "id": background_id,
        "kind": "image",
        "description": description,
        "source": "bundled" if bundled else "uploaded",
        "url": f"/backgrounds/{background_id}.png",
    }


def _image_entries(library: BackgroundLibrary) -> list[dict[str, Any]]:
    """Every image id, sorted; an uploaded image hides a bundled one with its id."""
    uploaded = set(library.registered_ids())
    ids = sorted(uploaded.union(library.bundled_ids()))
    return [_image_entry(i, bundled=i not in uploaded) for i in ids]


async def list_backgrounds(request: web.Request) -> web.Response:
    images = await asyncio.to_thread(_image_entries, request.app[BACKGROUNDS])
    return web.json_response({"backgrounds": [*BUILTIN_BACKGROUNDS, *images]})


def _background_id(request: web.Request) -> str:
    background_id = request.match_info["background_id"]
    if not BACKGROUND_ID.fullmatch(background_id) or background_id not in request.app[BACKGROUNDS]:
        raise ApiError(
            404, "background_not_found", f"no background image named '{background_id[:64]}'"
        )
    return background_id


async def background_image(request: web.Request) -> web.FileResponse:
    """The image shown for the id: the uploaded PNG, else the bundled file (a JPEG; the
    Content-Type says which)."""
    background_id = _background_id(request)
    try:
        path = request.app[BACKGROUNDS].path(background_id)
    except KeyError:  # removed by someone else in between
        raise ApiError(
            404, "background_not_found", f"no background image named '{background_id}'"
        ) from None
    return web.FileResponse(path)


async def delete_background(request: web.Request) -> web.Response:
    """Deletes an uploaded image; a bundled one with its id shows again. A bundled image
    itself cannot be deleted (409)."""
    background_id = _background_id(request)
    library = request.app[BACKGROUNDS]
    try:
        await asyncio.to_thread(library.remove, background_id)
    except KeyError:
        if background_id in library:  # only the bundled image has this id
            raise ApiError(
                409,
                "background_bundled",
                f"'{background_id}' is bundled with the runtime and cannot be deleted; upload "
                "an image with this id to replace it",
            ) from None
        raise ApiError(  # removed by someone else in between
            404, "background_not_found", f"no background image named '{background_id}'"
        ) from None
    return web.json_response({"id": background_id, "deleted": True})


async def upload_background(request: web.Request) -> web.Response:
    """`multipart/form-data` with `id` (text) and `file` (PNG, JPEG or WebP)."""
    limit = request.app[SETTINGS].max_upload_bytes
    if request.content_type != "multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            "send multipart/form-data with the fields 'id' and 'file'",
        )
    if request.content_length is not None and request.content_length > limit + _UPLOAD_CHUNK:
        raise _too_large(limit)
    background_id: str | None = None
    data: bytes | None = None
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            raise ApiError(422, "invalid_body", "nested multipart bodies are not accepted")
        if part.name == "id":
            background_id = (await _read_part(part, 256)).decode("utf-8", "replace").strip()
        elif part.name == "file":
            data = await _read_part(part, limit)
        else:
            raise ApiError(
                422, "invalid_field", f"unknown field {part.name!r}; send 'id' and 'file'"
            )
    if not background_id or data is None:
        raise ApiError(422, "invalid_field", "send both fields: 'id' and 'file'")
    if not BACKGROUND_ID.fullmatch(background_id) or background_id in (ORIGINAL, BLUR):
        raise ApiError(
            422, "invalid_field", f"'id' must be {_ID_RULE}, and not 'original' or 'blur'"
        )
    try:
        await asyncio.to_thread(request.app[BACKGROUNDS].register, background_id, data)
    except RendererError as error:
        raise ApiError(422, "invalid_image", error.message) from None
    return web.json_response(_image_entry(background_id), status=201)


async def _read_part(part: BodyPartReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(_UPLOAD_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "payload_too_large",
        f"the upload is larger than {limit} bytes (AVATAR_MAX_UPLOAD_BYTES)",
        headers={hdrs.CONNECTION: "close"},
    )
