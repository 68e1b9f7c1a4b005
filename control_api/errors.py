"""One error shape for every route: `{"error": {"code", "message", ...}}`, never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger("control_api")

_STATUS_CODES: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}
ERROR_CODE = web.ResponseKey("error_code", str)
"""The code of an error response, for the metrics middleware."""
# Headers of aiohttp's own HTTP errors worth passing on (Allow on a 405).
_KEPT_HEADERS = frozenset({"allow"})


class ApiError(Exception):
    """An error with a stable machine-readable code, rendered by `error_middleware`.

    `extra` fields are added next to code and message (e.g. `valid`, the list of valid values).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


def error_response(error: ApiError) -> web.Response:
    response = web.json_response(error.body(), status=error.status, headers=error.headers)
    response[ERROR_CODE] = error.code
    return response


def not_found(what: str, identifier: str, code: str = "not_found") -> ApiError:
    return ApiError(404, code, f"no {what} named '{identifier[:128]}'")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every failure the same JSON shape and never leak a traceback."""
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are not errors
            raise
        code = _STATUS_CODES.get(exc.status, "http_error")
        message = f"{exc.reason}: {request.method} {request.path}"
        if exc.status == 413:
            message = f"request body too large for {request.method} {request.path}"
        headers = {k: v for k, v in exc.headers.items() if k.lower() in _KEPT_HEADERS}
        return error_response(ApiError(exc.status, code, message, headers=headers))
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(ApiError(500, "internal_error", "internal server error"))
