"""`POST /api/v1/render/frame` and `POST /api/v1/render/batch` (seed 001).

A request is JSON (`image` as base64 or a `data:` URI) or `multipart/form-data` (an `image`
file part and the same fields as text). Everything about it is checked here, on the event
loop and cheaply (the fields, the image's size and its first bytes), before a worker
decodes, analyses and renders it (pool.py, worker.py). Answers:

    frame: {"image": <base64>, "format", "latencyMs", "metadata": {...}}
    batch: {"results": [<as a frame>, ...], "latencyMs"}

`latencyMs` is the service's own time for the request: from its body being in (the network
is not counted) to its answer being ready, so waiting for a worker, decoding, analysing the
portrait (or finding it in a worker's cache), rendering and encoding, which
`metadata.timings` splits up (per result in a batch).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

import renderers
from avatar_runtime import EMOTIONS
from renderers.vision.portrait import sniff_format

from .. import uploads
from ..context import METRICS, RENDER_POOL, SETTINGS
from ..errors import ApiError
from ..jobs.fetch import FetchError, decode_data_uri
from ..validation import one_of, parse_json_object, read_body, unit_interval
from .pool import RenderJob, RenderReply
from .rules import (
    DEFAULT_EMOTION,
    DEFAULT_FORMAT,
    DEFAULT_INTENSITY,
    DEFAULT_SIZE,
    FORMATS,
    MAX_SIZE,
    MIN_SIZE,
)

FRAME_FIELDS = ("image", "emotion", "intensity", "format", "width", "height", "renderer")
BATCH_FIELDS = ("image", "emotions", "intensity", "format", "width", "height", "renderer")
_TEXT_LIMITS = {
    "emotion": 64,
    "emotions": 2048,
    "intensity": 32,
    "format": 16,
    "width": 16,
    "height": 16,
    "renderer": 64,
}
_USAGE = {
    "frame": "send JSON {image: base64 or data: URI, emotion?, intensity?, format?, width?, "
    "height?, renderer?} or multipart/form-data with an 'image' file and those fields",
    "batch": "send JSON {image: base64 or data: URI, emotions: [...], intensity?, format?, "
    "width?, height?, renderer?} or multipart/form-data with an 'image' file and those fields "
    "('emotions' comma-separated)",
}
_IMAGE_PLACEHOLDER = "\x00image-{}\x00"
_PARSE_IN_THREAD_BYTES = 256 * 1024


@dataclass(frozen=True)
class _Params:
    renderer: str
    emotions: tuple[str, ...]
    intensity: float
    format: str
    width: int
    height: int


async def render_frame(request: web.Request) -> web.Response:
    return await _render(request, "frame")


async def render_batch(request: web.Request) -> web.Response:
    return await _render(request, "batch")


async def _render(request: web.Request, endpoint: str) -> web.Response:
    settings = request.app[SETTINGS]
    metrics = request.app[METRICS]
    renderer = settings.render_service_renderer
    started = time.perf_counter()
    image: bytes | None = None
    try:
        if request.content_type == "multipart/form-data":
            fields, image, started = await _multipart(request, endpoint)
        else:
            allowed = FRAME_FIELDS if endpoint == "frame" else BATCH_FIELDS
            required = ("image",) if endpoint == "frame" else ("image", "emotions")
            raw = await read_body(request)  # held to the route's limit (body_limit_middleware)
            started = time.perf_counter()
            if len(raw) > _PARSE_IN_THREAD_BYTES:  # an image inline: megabytes of JSON
                fields = await asyncio.to_thread(
                    parse_json_object, raw, allowed=allowed, required=required
                )
            else:
                fields = parse_json_object(raw, allowed=allowed, required=required)
        params = _params(
            fields, endpoint, settings.render_service_allowed, settings.render_service_max_batch
        )
        renderer = params.renderer
        if image is None:
            data, digest = await asyncio.to_thread(
                _decoded_image, fields["image"], settings.max_upload_bytes
            )
        else:
            data, digest = image, await asyncio.to_thread(_sha256, image)
        job = RenderJob(
            renderer=params.renderer,
            width=params.width,
            height=params.height,
            emotions=params.emotions,
            intensity=params.intensity,
            format=params.format,
            image=data,
            digest=digest,
        )
        reply = await request.app[RENDER_POOL].render(job)
        results = _results(params, reply)
        latency_ms = round((time.perf_counter() - started) * 1000.0, 2)
        if endpoint == "frame":
            body: dict[str, Any] = {**results[0], "latencyMs": latency_ms}
        else:
            body = {"results": results, "latencyMs": latency_ms}
        response = _json_with_images(body, reply.images)
    except ApiError as error:
        metrics.render_failed(renderer, endpoint, error.code, time.perf_counter() - started)
        raise
    except web.HTTPRequestEntityTooLarge:  # the body grew past the route's limit while read
        metrics.render_failed(renderer, endpoint, "payload_too_large", 0.0)
        raise
    except Exception:
        metrics.render_failed(renderer, endpoint, "internal_error", time.perf_counter() - started)
        raise
    metrics.render_done(renderer, endpoint, time.perf_counter() - started)
    return response


# --- the request ------------------------------------------------------------------------------


async def _multipart(request: web.Request, endpoint: str) -> tuple[dict[str, Any], bytes, float]:
    settings = request.app[SETTINGS]
    fields = FRAME_FIELDS if endpoint == "frame" else BATCH_FIELDS
    rules = uploads.Rules(
        max_bytes=settings.max_upload_bytes,
        limit_name="AVATAR_MAX_UPLOAD_BYTES",
        usage=_USAGE[endpoint],
        file_field="image",
        text_fields={name: _TEXT_LIMITS[name] for name in fields if name != "image"},
        sniff=sniff_format,
        sniff_error=("invalid_image", "the image is not a PNG, JPEG or WebP image"),
        declared_types=("image/",),
        idle_timeout_s=settings.body_idle_timeout_s,
    )
    async with uploads.receive(request, rules, settings.cache_dir / "render-uploads") as upload:
        started = time.perf_counter()
        image = await asyncio.to_thread(upload.path.read_bytes)
    values: dict[str, Any] = dict(upload.fields)
    for name in ("intensity", "width", "height"):
        if name in values:
            values[name] = _number_text(values[name])
    if "emotions" in values:
        values["emotions"] = _emotion_list_text(values["emotions"])
    if endpoint == "batch" and "emotions" not in values:
        raise ApiError(422, "invalid_field", f"missing field 'emotions'; {rules.usage}")
    return values, image, started


def _number_text(text: str) -> Any:
    """A multipart field's number, or the text as it is (refused as not a number later)."""
    try:
        value = float(text)
    except ValueError:
        return text
    return (
        int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value
    )


def _emotion_list_text(text: str) -> Any:
    """`emotions` in a multipart body: comma-separated, or a JSON array."""
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return [part.strip() for part in text.split(",")] if text else []


def _params(
    fields: Mapping[str, Any], endpoint: str, allowed: tuple[str, ...], max_batch: int
) -> _Params:
    renderer = _renderer(fields.get("renderer"), allowed)
    if endpoint == "frame":
        emotions: tuple[str, ...] = (_emotion(fields.get("emotion"), DEFAULT_EMOTION),)
    else:
        emotions = _emotions(fields.get("emotions"), max_batch)
    return _Params(
        renderer=renderer,
        emotions=emotions,
        intensity=unit_interval(fields, "intensity", DEFAULT_INTENSITY, "invalid_intensity"),
        format=_format(fields.get("format")),
        width=_size(fields, "width"),
        height=_size(fields, "height"),
    )


def _renderer(value: Any, allowed: tuple[str, ...]) -> str:
    if value is None:
        return allowed[0]
    if isinstance(value, str) and value in allowed:
        return value
    if isinstance(value, str) and value in renderers.available():
        raise ApiError(
            422,
            "renderer_not_allowed",
            f"renderer '{value}' is not offered by this service "
            f"(AVATAR_RENDER_SERVICE_RENDERERS); valid: {', '.join(allowed)}",
            valid=list(allowed),
        )
    raise ApiError(
        422,
        "invalid_renderer",
        f"unknown renderer {repr(value)[:64]}; valid: {', '.join(allowed)}",
        valid=list(allowed),
    )


def _emotion(value: Any, default: str | None = None) -> str:
    if value is None and default is not None:
        return default
    return one_of(value, list(EMOTIONS), field="emotion", code="invalid_emotion")


def _emotions(value: Any, max_batch: int) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ApiError(
            422,
            "invalid_field",
            f'\'emotions\' must be a list of 1 to {max_batch} emotions, e.g. ["neutral", "happy"]',
        )
    if len(value) > max_batch:
        raise ApiError(
            422,
            "too_many_emotions",
            f"{len(value)} emotions asked for; one batch renders at most {max_batch} "
            "(AVATAR_RENDER_SERVICE_MAX_BATCH): split it",
        )
    return tuple(_emotion(v) for v in value)


def _format(value: Any) -> str:
    if value is None:
        return DEFAULT_FORMAT
    if not isinstance(value, str) or value not in FORMATS:
        raise ApiError(
            422,
            "invalid_format",
            f"unknown format {repr(value)[:64]}; valid: {', '.join(FORMATS)}",
            valid=list(FORMATS),
        )
    return value


def _size(fields: Mapping[str, Any], name: str) -> int:
    value = fields.get(name)
    if value is None:
        return DEFAULT_SIZE
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_SIZE <= value <= MAX_SIZE:
        raise ApiError(
            422,
            "invalid_size",
            f"'{name}' must be a whole number of pixels from {MIN_SIZE} to {MAX_SIZE}, "
            f"not {repr(value)[:32]}",
        )
    return value


def _decoded_image(value: Any, max_bytes: int) -> tuple[bytes, str]:
    """The bytes of the JSON `image` (base64, or a data: URI) and their SHA-256, or ApiError."""
    if not isinstance(value, str) or not value.strip():
        raise ApiError(
            422, "invalid_field", "'image' must be the image as base64 or as a data: URI"
        )
    text = value.strip()
    uri = text if text[:5].lower() == "data:" else "data:;base64," + text
    try:
        media, data = decode_data_uri(uri, max_bytes)
    except FetchError as error:
        if error.code == "download_too_large":
            raise ApiError(
                413,
                "payload_too_large",
                f"the image is larger than {max_bytes} bytes (AVATAR_MAX_UPLOAD_BYTES)",
            ) from None
        raise ApiError(422, "invalid_image", "'image' is not valid base64") from None
    if media and not media.startswith("image/") and media != "application/octet-stream":
        raise ApiError(422, "invalid_image", f"'image' must be an image, not {media[:80]!r}")
    if sniff_format(data[:16]) is None:
        raise ApiError(422, "invalid_image", "'image' is not a PNG, JPEG or WebP image")
    return data, hashlib.sha256(data).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the answer -------------------------------------------------------------------------------


def _results(params: _Params, reply: RenderReply) -> list[dict[str, Any]]:
    results = []
    for index, result in enumerate(reply.answer["results"]):
        timings = dict(result.get("timings", {}))
        if index == 0:
            timings["queueMs"] = round(reply.queue_ms, 2)
        metadata: dict[str, Any] = {
            "emotion": result["emotion"],
            "intensity": params.intensity,
            "renderer": params.renderer,
            "width": params.width,
            "height": params.height,
            "format": params.format,
            "analysed": bool(result.get("analysed")),
            "timings": timings,
        }
        if result.get("warmup"):
            metadata["warmup"] = True
        if reply.answer.get("backend"):
            metadata["backend"] = reply.answer["backend"]  # what actually ran: "torch on cpu"
        results.append(
            {
                "image": _IMAGE_PLACEHOLDER.format(index),
                "format": params.format,
                "latencyMs": round(sum(float(v) for v in timings.values()), 2),
                "metadata": metadata,
            }
        )
    return results


def _json_with_images(body: dict[str, Any], images: list[bytes]) -> web.Response:
    """`body` as JSON with each placeholder replaced by its base64 picture: megabytes of base64
    are spliced in, never escaped by the JSON encoder (they need no escaping)."""
    text = json.dumps(body, separators=(",", ":")).encode()
    parts = []
    for index, image in enumerate(images):
        marker = json.dumps(_IMAGE_PLACEHOLDER.format(index)).encode()
        before, _, text = text.partition(marker)
        parts += [before, b'"', image, b'"']
    parts.append(text)
    return web.Response(body=b"".join(parts), content_type="application/json")
