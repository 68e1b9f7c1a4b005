"""Who may call the API and from where: credentials, CORS and per-caller rate limits.

Each is an aiohttp middleware; `create_app` orders them CORS, errors, auth, rate limit, so a
preflight needs no credentials and every refusal still carries the CORS headers and the JSON
error shape.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import jwt
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from .config import ConfigError, Settings
from .errors import ApiError, error_response

log = logging.getLogger("control_api")

API_KEY_HEADER = "X-API-Key"
ACCESS_TOKEN_PARAM = "access_token"
KEY_FILE_NAME = "control-api-key"
PRINCIPAL = web.RequestKey("principal", str)

# Open to anyone: probes, the web client's files and the API's own description.
PUBLIC_PATHS = frozenset(
    {"/", "/health", "/api/v1/health", "/api/v1/live", "/docs", "/openapi.json"}
)
# /files/ are signed, expiring download links (jobs/links.py): the signature is the credential.
PUBLIC_PREFIXES = ("/static/", "/files/")
# Only the WebSocket accepts credentials in the query: browsers cannot set its headers, and
# anywhere else a key in a URL would end up in logs and histories.
QUERY_TOKEN_PREFIXES = ("/ws/", "/api/v1/stream/ws")

ALLOWED_METHODS = "GET, HEAD, POST, DELETE"
"""Offered by a preflight for a path no route serves (the request itself then answers 404)."""
ALLOWED_HEADERS = f"Authorization, Content-Type, {API_KEY_HEADER}, X-Request-Id"
EXPOSED_HEADERS = "Location, Retry-After, X-Request-Id"
"""Location: a WHEP answer's (the URL that ends the playback), read by a page on another origin."""
PREFLIGHT_MAX_AGE_S = "600"


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


# --- credentials -----------------------------------------------------------------------------


def ensure_credentials(settings: Settings) -> tuple[Settings, str | None]:
    """Settings that can authenticate someone. With auth required and neither keys nor a JWT
    secret configured, a key is generated once and kept (mode 0600) in the cache directory;
    it is returned as the second value so it can be shown to the operator."""
    if settings.auth == "disabled" or settings.api_keys or settings.jwt_secret:
        return settings, None
    path = settings.cache_dir / KEY_FILE_NAME
    key = _read_key(path) or _write_new_key(path)
    return replace(settings, api_keys=(key,)), key


def _read_key(path: Path) -> str | None:
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        return None
    return key or None


def _write_new_key(path: Path) -> str:
    key = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: two processes starting at once must not each mint a different key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path) or key
    with os.fdopen(fd, "w") as file:
        file.write(key + "\n")
    return key


class Authenticator:
    """Checks an API key or an HS256 JWT and names the caller ("principal")."""

    def __init__(self, api_keys: Iterable[str], jwt_secret: str | None) -> None:
        self._keys = [key.encode() for key in api_keys]
        self._jwt_secret = jwt_secret
        if not self._keys and not jwt_secret:
            raise ConfigError(
                "the control API needs credentials: set AVATAR_API_KEYS or AVATAR_API_JWT_SECRET "
                "(or AVATAR_API_AUTH=disabled for a private development machine)"
            )

    def principal(self, request: web.Request) -> str:
        """The caller's name, or ApiError 401 saying what to send."""
        credential = self._credential(request)
        if credential is None:
            raise ApiError(
                401,
                "unauthorized",
                f"credentials required: send '{API_KEY_HEADER}: <key>' or "
                "'Authorization: Bearer <key or JWT>'",
                headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="avatar-agents"'},
            )
        if self._is_key(credential):
            return "key:" + hashlib.sha256(credential.encode()).hexdigest()[:12]
        if self._jwt_secret and credential.count(".") == 2:
            return self._jwt_principal(credential, self._jwt_secret)
        raise ApiError(401, "unauthorized", "invalid API key or token")

    def _credential(self, request: web.Request) -> str | None:
        key = request.headers.get(API_KEY_HEADER)
        if key:
            return key.strip()
        scheme, _, value = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        if request.path.startswith(QUERY_TOKEN_PREFIXES):
            return request.query.get(ACCESS_TOKEN_PARAM) or None
        return None

    def _is_key(self, credential: str) -> bool:
        given = credential.encode()
        # Compare against every key, without stopping early, in constant time per key.
        return any([hmac.compare_digest(given, key) for key in self._keys])

    def _jwt_principal(self, token: str, secret: str) -> str:
        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                options={"require": ["exp"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError:
            raise ApiError(401, "unauthorized", "token expired") from None
        except jwt.InvalidTokenError as error:
            raise ApiError(401, "unauthorized", f"invalid token: {error}") from None
        subject = claims.get("sub")
        return f"jwt:{subject}" if isinstance(subject, str) and subject else "jwt:anonymous"


def auth_middleware(authenticator: Authenticator | None) -> Middleware:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if authenticator is None:
            request[PRINCIPAL] = "anonymous"
        elif not is_public(request.path):
            request[PRINCIPAL] = authenticator.principal(request)
        return await handler(request)

    return authenticate


# --- rate limits ---------------------------------------------------------------------------


class RateLimiter:
    """A token bucket per caller: `rate` requests per second, `burst` at once."""

    _MAX_CALLERS = 10_000  # forget idle callers past this, so the table cannot grow forever

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    def retry_after(self, caller: str, now: float | None = None) -> float:
        """0 when the request may go ahead (and it is counted), else seconds to wait."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(caller, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[caller] = (tokens - 1.0, now)
            if len(self._buckets) > self._MAX_CALLERS:
                self._forget_full(now)
            return 0.0
        self._buckets[caller] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        for caller, (tokens, last) in list(self._buckets.items()):
            if tokens + (now - last) * self.rate >= self.burst:
                del self._buckets[caller]


def rate_limit_middleware(limiter: RateLimiter) -> Middleware:
    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_public(request.path):
            wait = limiter.retry_after(request.get(PRINCIPAL, "anonymous"))
            if wait > 0:
                raise ApiError(
                    429,
                    "rate_limited",
                    f"too many requests: at most {limiter.rate:g} per second "
                    f"(bursts of {limiter.burst:g}); retry in {wait:.2f} s",
                    headers={hdrs.RETRY_AFTER: str(max(1, math.ceil(wait)))},
                )
        return await handler(request)

    return limit


# --- CORS ------------------------------------------------------------------------------------


def cors_middleware(origins: Iterable[str]) -> Middleware:
    allowed = frozenset(origins)
    any_origin = "*" in allowed

    def allows(origin: str) -> bool:
        return any_origin or origin.rstrip("/") in allowed

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        if (  # a preflight
            request.method == hdrs.METH_OPTIONS
            and origin is not None
            and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
        ):
            return _preflight(request, origin, allows(origin))
        response = await handler(request)
        if origin is not None and allows(origin) and not response.prepared:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = "*" if any_origin else origin
            response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSED_HEADERS
            if not any_origin:
                response.headers.add(hdrs.VARY, "Origin")
        return response

    return cors


def route_methods(request: web.Request) -> list[str] | None:
    """The methods the route of the request's path answers, sorted; None when no route
    serves the path. (The router has matched the path before any middleware runs.)"""
    match_info = request.match_info
    error = getattr(match_info, "http_exception", None)
    if isinstance(error, web.HTTPMethodNotAllowed):
        return sorted(error.allowed_methods)
    if error is not None:
        return None
    resource = match_info.route.resource
    return sorted({route.method for route in resource}) if resource is not None else None


def _preflight(request: web.Request, origin: str, allowed: bool) -> web.Response:
    method = request.headers[hdrs.ACCESS_CONTROL_REQUEST_METHOD].upper()
    if not allowed:
        return error_response(
            ApiError(
                403,
                "cors_origin_not_allowed",
                f"origin {origin[:200]!r} is not allowed; add it to AVATAR_CORS_ORIGINS",
            )
        )
    methods = route_methods(request)
    offered = ", ".join(methods) if methods is not None else ALLOWED_METHODS
    if method not in offered.split(", "):
        return error_response(
            ApiError(
                405,
                "method_not_allowed",
                f"{method[:20]} is not allowed on {request.path[:200]}; use one of {offered}",
                headers={hdrs.ALLOW: ",".join(methods or ALLOWED_METHODS.split(", "))},
            )
        )
    return web.Response(
        status=204,
        headers={
            hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: offered,
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOWED_HEADERS,
            hdrs.ACCESS_CONTROL_MAX_AGE: PREFLIGHT_MAX_AGE_S,
            hdrs.VARY: "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        },
    )
