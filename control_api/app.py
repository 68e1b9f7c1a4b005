"""aiohttp application: health check, LiveKit token minting and the demo page."""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler
from livekit import api

from .config import Settings

log = logging.getLogger("control_api")

SETTINGS = web.AppKey("settings", Settings)
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)

# LiveKit accepts more, but a conservative charset keeps names safe in URLs, logs and shells.
ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,128}")
MAX_NAME_LENGTH = 128
MAX_BODY_BYTES = 64 * 1024
TOKEN_FIELDS = frozenset({"room", "identity", "name"})
HEALTH_PROBE_TIMEOUT_S = 1.0
VENDOR_LIVEKIT_JS = ("node_modules", "livekit-client", "dist", "livekit-client.umd.js")

_STATUS_CODES: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """An error with a stable machine-readable code, rendered by `error_middleware`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every failure the same JSON shape and never leak a traceback."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are not errors
            raise
        code = _STATUS_CODES.get(exc.status, "http_error")
        message = f"{exc.reason}: {request.method} {request.path}"
        # Keep only headers that matter to clients (e.g. Allow on 405), not the text body's.
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(exc.status, code, message, headers)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal server error")


async def _on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    # Dev-oriented service: revalidate instead of serving a stale page after an edit.
    response.headers.setdefault("Cache-Control", "no-cache")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


# --- health -------------------------------------------------------------------------------


async def _livekit_reachable(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        timeout = aiohttp.ClientTimeout(total=HEALTH_PROBE_TIMEOUT_S)
        async with session.get(url, timeout=timeout, allow_redirects=False):
            return True  # any HTTP answer at all means the server is up
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return False


async def health(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    reachable = await _livekit_reachable(request.app[HTTP_SESSION], settings.livekit_http_url)
    return web.json_response(
        {"status": "ok", "livekit": {"url": settings.livekit_url, "reachable": reachable}}
    )


# --- token --------------------------------------------------------------------------------


def mint_token(settings: Settings, *, room: str, identity: str, name: str | None = None) -> str:
    """A participant token for `room` whose first join dispatches the configured agent."""
    token = (
        api.AccessToken(settings.livekit_api_key, settings.livekit_api_secret)
        .with_identity(identity)
        .with_ttl(settings.token_ttl)
        .with_grants(
            api.VideoGrants(
                room_join=True,
                room=room,
                can_publish=True,
                can_subscribe=True,
                can_publish_data=True,
            )
        )
    )
    if name:
        token = token.with_name(name)
    if settings.agent_name:
        # The worker registers with an explicit agent name, so it is only sent to rooms that ask.
        token = token.with_room_config(
            api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=settings.agent_name)])
        )
    return token.to_jwt()


async def _read_json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()  # larger than client_max_size -> 413 via the middleware
    if not raw.strip():
        return {}  # a bare POST means "all defaults"
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ApiError(400, "invalid_json", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_body", "request body must be a JSON object")
    unknown = sorted(set(body) - TOKEN_FIELDS)
    if unknown:
        raise ApiError(422, "invalid_field", f"unknown field(s): {', '.join(unknown)}")
    return body


def _optional_id(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise ApiError(
            422, "invalid_field", f"'{field}' must be 1-128 characters of A-Z a-z 0-9 _ . -"
        )
    return value


def _optional_name(body: Mapping[str, Any]) -> str | None:
    value = body.get("name")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_NAME_LENGTH:
        raise ApiError(
            422, "invalid_field", f"'name' must be a string of at most {MAX_NAME_LENGTH} characters"
        )
    return value or None


async def create_token(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = await _read_json_object(request)
    room = _optional_id(body, "room") or f"avatar-{secrets.token_hex(4)}"
    identity = _optional_id(body, "identity") or f"user-{secrets.token_hex(4)}"
    token = mint_token(settings, room=room, identity=identity, name=_optional_name(body))
    return web.json_response(
        {"url": settings.public_livekit_url, "token": token, "room": room, "identity": identity},
        headers={"Cache-Control": "no-store"},  # tokens are credentials
    )


# --- demo page ----------------------------------------------------------------------------


async def index(request: web.Request) -> web.FileResponse:
    path = request.app[SETTINGS].client_dir / "index.html"
    if not path.is_file():
        raise ApiError(404, "not_found", "demo page is missing (client_demo/index.html)")
    return web.FileResponse(path)


async def vendor_livekit_client(request: web.Request) -> web.FileResponse:
    path = request.app[SETTINGS].client_dir.joinpath(*VENDOR_LIVEKIT_JS)
    if not path.is_file():
        raise ApiError(
            503,
            "vendor_missing",
            "livekit-client is not installed; run `make setup` (or `npm ci` in client_demo/)",
        )
    return web.FileResponse(path)


# --- app ----------------------------------------------------------------------------------


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as session:
        app[HTTP_SESSION] = session
        yield


def create_app(settings: Settings | None = None) -> web.Application:
    settings = settings or Settings.from_env()
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_http_session)
    app.on_response_prepare.append(_on_response_prepare)

    app.router.add_get("/health", health)
    app.router.add_post("/token", create_token)
    app.router.add_get("/", index)
    app.router.add_get("/vendor/livekit-client.umd.js", vendor_livekit_client)
    if settings.client_dir.is_dir():
        # aiohttp's static route normalises the path and refuses anything outside the
        # directory; follow_symlinks=False also stops a symlink from leading out of it.
        app.router.add_static("/static", settings.client_dir, follow_symlinks=False)
    else:
        log.warning("client demo directory %s not found; /static is disabled", settings.client_dir)
    return app
