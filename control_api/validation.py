"""Reading and checking request bodies: each route's body limit, one JSON object with known
fields, or ApiError."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from .context import SETTINGS
from .errors import ApiError, body_timeout

# LiveKit accepts more, but a conservative charset keeps names safe in URLs, logs and shells.
ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,128}")
ID_RULE = "1-128 characters of A-Z a-z 0-9 _ . -"


@dataclass(frozen=True)
class BodyLimit:
    """The most bytes a route's body may have; None: the route reads and limits its body
    itself (the multipart uploads, control_api/uploads.py)."""

    max_bytes: int | None
    why: str = ""
    """Said in the 413 after the limit: where it comes from, what to do instead."""


def body_limit_middleware(default: BodyLimit, limits: Mapping[Any, BodyLimit]) -> Middleware:
    """Holds each request's body to its route's limit (`limits`, by route handler; else
    `default`): a declared Content-Length over it is refused before anything is read, and a
    body that grows past it while read (`request.read()`, `json_object`) too, with a 413 that
    names the limit. The innermost middleware, so that a refusal comes after authentication."""

    @web.middleware
    async def limit_body(request: web.Request, handler: Handler) -> web.StreamResponse:
        limit = limits.get(request.match_info.handler, default)
        if limit.max_bytes is None or request.method in (hdrs.METH_GET, hdrs.METH_HEAD):
            return await handler(request)
        if request.content_length is not None and request.content_length > limit.max_bytes:
            raise _too_large(request, limit)
        if request.client_max_size != limit.max_bytes:
            request = request.clone(client_max_size=limit.max_bytes)
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            raise _too_large(request, limit) from None

    return limit_body


def _too_large(request: web.Request, limit: BodyLimit) -> ApiError:
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else request.path
    return ApiError(
        413,
        "payload_too_large",
        f"the request body is larger than {limit.max_bytes} bytes, the limit of "
        f"{request.method} {path[:200]}{limit.why}",
        headers={hdrs.CONNECTION: "close"},
    )


async def read_body(request: web.Request) -> bytes:
    """The whole body, as `request.read()` reads it (held to `client_max_size`, which
    body_limit_middleware sets per route), but 408 `request_timeout` when no bytes arrive for
    `Settings.body_idle_timeout_s`: a stalled client does not hold its handler forever."""
    timeout = request.app[SETTINGS].body_idle_timeout_s
    body = bytearray()
    while True:
        try:
            chunk = await asyncio.wait_for(request.content.readany(), timeout)
        except TimeoutError:
            raise body_timeout(timeout) from None
        if not chunk:
            return bytes(body)
        body.extend(chunk)
        if len(body) > request.client_max_size:
            raise web.HTTPRequestEntityTooLarge(
                max_size=request.client_max_size, actual_size=len(body)
            )


async def json_object(
    request: web.Request, *, allowed: Collection[str], required: Collection[str] = ()
) -> dict[str, Any]:
    """The body as a JSON object with only `allowed` fields and every `required` one. An empty
    body is an empty object ("all defaults")."""
    raw = await read_body(request)  # over the route's limit: 413 (body_limit_middleware)
    return parse_json_object(raw, allowed=allowed, required=required)


def parse_json_object(
    raw: bytes, *, allowed: Collection[str], required: Collection[str] = ()
) -> dict[str, Any]:
    """`json_object` of a body already read."""
    if not raw.strip():
        body: Any = {}
    else:
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError
            raise ApiError(400, "invalid_json", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_body", "request body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(
            422,
            "invalid_field",
            f"unknown field(s): {', '.join(unknown)[:200]}; allowed: {', '.join(sorted(allowed))}",
        )
    missing = sorted(set(required) - set(body))
    if missing:
        raise ApiError(422, "invalid_field", f"missing field(s): {', '.join(missing)}")
    return body


def _given(body: Mapping[str, Any], field: str, default: Any) -> Any:
    """The field's value; `default` when it is absent or JSON null, which means "not given"
    on every optional field (as in a job's input, control_api/jobs/inputs.py)."""
    value = body.get(field)
    return default if value is None else value


def optional_id(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise ApiError(422, "invalid_field", f"'{field}' must be {ID_RULE}")
    return value


def string(
    body: Mapping[str, Any], field: str, *, max_length: int, default: str | None = None
) -> str:
    value = _given(body, field, default)
    if not isinstance(value, str):
        raise ApiError(422, "invalid_field", f"'{field}' must be a string")
    if len(value) > max_length:
        raise ApiError(
            422, "invalid_field", f"'{field}' is {len(value)} characters; the most is {max_length}"
        )
    return value


def boolean(body: Mapping[str, Any], field: str, default: bool) -> bool:
    value = _given(body, field, default)
    if not isinstance(value, bool):
        raise ApiError(422, "invalid_field", f"'{field}' must be true or false")
    return value


def unit_interval(body: Mapping[str, Any], field: str, default: float, code: str) -> float:
    value = _given(body, field, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(422, code, f"'{field}' must be a number between 0 and 1")
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ApiError(422, code, f"'{field}' must be between 0 and 1, not {value:g}")
    return value


def one_of(value: Any, valid: list[str], *, field: str, code: str) -> str:
    if not isinstance(value, str) or value not in valid:
        shown = repr(value)[:60]
        raise ApiError(
            422, code, f"unknown {field} {shown}; valid: {', '.join(valid)}"[:1000], valid=valid
        )
    return value
