"""What a session can be set to: `GET /emotions` and the background library."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from avatar_runtime import EMOTIONS
from avatar_runtime.backgrounds import BLUR, ORIGINAL, BackgroundLibrary
from avatar_runtime.backgrounds import ID_PATTERN as BACKGROUND_ID
from renderers import RendererError
from renderers.vision.portrait import sniff_format

from . import uploads
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
    """`multipart/form-data` with `id` (text) and `file` (PNG, JPEG or WebP), read by
    control_api/uploads.py into the library's directory, then decoded and stored as PNG."""
    library = request.app[BACKGROUNDS]
    rules = uploads.Rules(
        max_bytes=request.app[SETTINGS].max_upload_bytes,
        limit_name="AVATAR_MAX_UPLOAD_BYTES",
        usage="send multipart/form-data with the fields 'id' and 'file'",
        text_fields={"id": 256},
        sniff=sniff_format,
        sniff_error=("invalid_image", "the file is not a PNG, JPEG or WebP image"),
        declared_types=("image/",),
        idle_timeout_s=request.app[SETTINGS].body_idle_timeout_s,
    )
    async with uploads.receive(request, rules, library.directory) as upload:
        background_id = upload.fields.get("id")
        if not background_id:
            raise ApiError(422, "invalid_field", f"no field 'id'; {rules.usage}")
        if not BACKGROUND_ID.fullmatch(background_id) or background_id in (ORIGINAL, BLUR):
            raise ApiError(
                422, "invalid_field", f"'id' must be {_ID_RULE}, and not 'original' or 'blur'"
            )
        try:
            await asyncio.to_thread(_register, library, background_id, upload.path)
        except RendererError as error:
            raise ApiError(422, "invalid_image", error.message) from None
    return web.json_response(_image_entry(background_id), status=201)


def _register(library: BackgroundLibrary, background_id: str, path: Path) -> None:
    library.register(background_id, path.read_bytes())
