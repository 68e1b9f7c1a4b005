"""Reading and checking request bodies: one JSON object with known fields, or ApiError."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping
from typing import Any

from aiohttp import web

from .errors import ApiError

# LiveKit accepts more, but a conservative charset keeps names safe in URLs, logs and shells.
ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,128}")
ID_RULE = "1-128 characters of A-Z a-z 0-9 _ . -"


async def json_object(
    request: web.Request, *, allowed: Collection[str], required: Collection[str] = ()
) -> dict[str, Any]:
    """The body as a JSON object with only `allowed` fields and every `required` one. An empty
    body is an empty object ("all defaults")."""
    raw = await request.read()  # larger than client_max_size -> 413 via the error middleware
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
    value = body.get(field, default)
    if not isinstance(value, str):
        raise ApiError(422, "invalid_field", f"'{field}' must be a string")
    if len(value) > max_length:
        raise ApiError(
            422, "invalid_field", f"'{field}' is {len(value)} characters; the most is {max_length}"
        )
    return value


def boolean(body: Mapping[str, Any], field: str, default: bool) -> bool:
    value = body.get(field, default)
    if not isinstance(value, bool):
        raise ApiError(422, "invalid_field", f"'{field}' must be true or false")
    return value


def unit_interval(body: Mapping[str, Any], field: str, default: float, code: str) -> float:
    value = body.get(field, default)
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
