"""One error shape for every route: `{"error": {"code", "message", ...}}`, never a traceback.

`ApiError` is the project's `CodedError` (renderers/errors.py) with an HTTP status. Any other
CodedError that carries a status is answered the same way by `error_middleware`
(`ApiError.of`, the one conversion), so a layer below can raise its own error with its code
and status and never build a response itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from renderers.errors import CodedError

log = logging.getLogger("control_api")

_STATUS_CODES: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}
ERROR_CODE = web.ResponseKey("error_code", str)
"""The code of an error response, for the metrics middleware."""
# Headers of aiohttp's own HTTP errors worth passing on (Allow on a 405).
_KEPT_HEADERS = frozenset({"allow"})


class ApiError(CodedError):
    """An error with a stable machine-readable code, rendered by `error_middleware`.

    `extra` fields are added next to code and message (e.g. `valid`, the list of valid values).
    """

    status: int

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(code, message, status=status)
        self.headers = dict(headers or {})
        self.extra = extra

    @classmethod
    def of(
        cls, error: CodedError, status: int | None = None, code: str | None = None, **extra: Any
    ) -> ApiError:
        """`error` as the service answers it: `status` when given, else its own, else 500; `code`
        when given, else its own; its message as written; `extra` fields beside them."""
        if isinstance(error, ApiError) and status is None and code is None and not extra:
            return error
        chosen = status if status is not None else error.status
        chosen = chosen if chosen is not None else 500
        return cls(chosen, code or error.code, error.message, **extra)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


def error_response(error: ApiError) -> web.Response:
    response = web.json_response(error.body(), status=error.status, headers=error.headers)
    response[ERROR_CODE] = error.code
    return response


def body_timeout(seconds: float) -> ApiError:
    """408 for a request body that stopped arriving (`Settings.body_idle_timeout_s`). The
    connection is closed: the rest of the body may still come, and must not be read as the
    next request."""
    return ApiError(
        408,
        "request_timeout",
        f"the request body stalled: no bytes arrived for {seconds:g} s "
        "(AVATAR_BODY_IDLE_TIMEOUT_S); send the body without pauses",
        headers={"Connection": "close"},
    )


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
    except Exception as error:
        if isinstance(error, CodedError) and error.status is not None:
            return error_response(ApiError.of(error))
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(ApiError(500, "internal_error", "internal server error"))
