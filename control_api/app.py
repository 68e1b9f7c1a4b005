"""The aiohttp application: the route table, the middleware stack and what lives beside them."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from avatar_runtime import AvatarCatalog, BackgroundLibrary

from . import avatars, catalog, health, tokens
from .config import Settings
from .context import (
    AVATARS,
    BACKGROUNDS,
    HTTP_SESSION,
    HUB,
    JOBS,
    METRICS,
    SETTINGS,
    STARTED_AT,
)
from .errors import ApiError, error_middleware
from .jobs import routes_files, routes_internal, routes_renders, routes_runpod
from .jobs.system import JobSystem
from .metrics import CONTENT_TYPE, ApiMetrics
from .openapi import Route, docs_page, openapi_document
from .security import (
    Authenticator,
    RateLimiter,
    auth_middleware,
    cors_middleware,
    rate_limit_middleware,
)
from .sessions import SessionHub

log = logging.getLogger("control_api")

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
CLIENT_BUNDLE = ("dist", "app.js")

_ID = {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,128}$"}
_UNIT = {"type": "number", "minimum": 0, "maximum": 1}


def _schema(required: list[str], **properties: dict) -> dict:
    return {
        "type": "object",
        "required": required,
        "additionalProperties": False,
        "properties": properties,
    }


# --- small handlers ------------------------------------------------------------------------


async def index(request: web.Request) -> web.FileResponse:
    client_dir = request.app[SETTINGS].client_dir
    if not client_dir.joinpath(*CLIENT_BUNDLE).is_file():
        raise ApiError(
            503,
            "client_not_built",
            "the web client is not built; in a checkout run `make client` (or `make setup`)",
        )
    return web.FileResponse(client_dir / "index.html")


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(ROUTES))


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=docs_page(ROUTES), content_type="text/html")


# --- offline jobs (control_api/jobs, docs/jobs.md) --------------------------------------------

_URL = {"type": "string", "format": "uri"}
_RUNPOD_BODY = _schema(
    ["input"],
    input=_schema(
        ["video_url", "avatar_id"],
        video_url=_URL,
        avatar_id={"type": "string"},
        model={"type": "string", "default": "wav2lip"},
        s3_bucket={"type": "string"},
        s3_prefix={"type": "string"},
    ),
    webhook=_URL,
)
_RENDER_BODY = _schema(
    ["audio_url"],
    image_url=_URL,
    avatar_id={"type": "string"},
    audio_url=_URL,
    renderer={"type": "string", "default": "meshwarp"},
    emotion={"type": "string", "default": "neutral"},
    intensity=_UNIT,
    prompt={"type": "string", "maxLength": 2000},
    webhook_url=_URL,
)
_REQUEST_ID_BODY = _schema(["request_id"], request_id={"type": "string"}, logs={"type": "boolean"})
_UPLOAD_BODY = _schema(["file"], file={"type": "string", "format": "binary"})


def _runpod_routes(prefix: str) -> list[Route]:
    tags = ("runpod",)
    return [
        Route(
            "POST",
            f"{prefix}/run",
            routes_runpod.run,
            "RunPod: queue an avatar preparation",
            body=_RUNPOD_BODY,
            tags=tags,
        ),
        Route(
            "POST",
            f"{prefix}/runsync",
            routes_runpod.runsync,
            "RunPod: prepare an avatar and wait for the result (bounded)",
            body=_RUNPOD_BODY,
            tags=tags,
        ),
        Route(
            "GET",
            f"{prefix}/status/{{job_id}}",
            routes_runpod.status,
            "RunPod: a job's status",
            tags=tags,
        ),
        Route(
            "POST",
            f"{prefix}/cancel/{{job_id}}",
            routes_runpod.cancel,
            "RunPod: cancel a job",
            tags=tags,
        ),
    ]


JOB_ROUTES: list[Route] = [
    *_runpod_routes(""),
    *_runpod_routes("/v2/{endpoint_id}"),
    Route(
        "GET",
        "/api/v1/internal/avatar/jobs/status",
        routes_internal.queue_status,
        "Job queue: running, pending, completed, failed and cancelled counts",
        tags=("jobs",),
    ),
    Route(
        "GET",
        "/api/v1/internal/avatar/jobs/{job_id}",
        routes_internal.get_job,
        "A job's details: attempts, progress, logs",
        tags=("jobs",),
    ),
    Route(
        "POST",
        "/api/v1/internal/avatar/jobs/{job_id}/retry",
        routes_internal.retry_job,
        "Queue a failed or cancelled job again",
        tags=("jobs",),
    ),
    Route(
        "POST",
        "/api/v1/renders",
        routes_renders.submit,
        "Queue an offline talking-video render",
        body=_RENDER_BODY,
        status=202,
        tags=("renders",),
    ),
    Route(
        "GET",
        "/api/v1/renders/{request_id}/status",
        routes_renders.status,
        "A render's status, queue position and progress (logs with ?logs=1)",
        tags=("renders",),
    ),
    Route(
        "GET",
        "/api/v1/renders/{request_id}",
        routes_renders.result,
        "A finished render: {video: {url}, duration}",
        tags=("renders",),
    ),
    Route(
        "POST",
        "/api/v1/renders/{request_id}/cancel",
        routes_renders.cancel,
        "Cancel a render",
        tags=("renders",),
    ),
    Route(
        "POST",
        "/api/v1/files",
        routes_files.upload,
        "Upload a file; its URL works as image_url or audio_url",
        body=_UPLOAD_BODY,
        body_type="multipart/form-data",
        status=201,
        tags=("renders",),
    ),
    Route(
        "GET",
        "/files/{folder}/{name}",
        routes_files.download,
        "Download an upload or a job's output by signed link",
        public=True,
        tags=("renders",),
    ),
    Route(
        "POST",
        "/api/generate/kling-avatar/submit",
        routes_renders.submit,
        "Seed 003 alias of POST /api/v1/renders",
        body=_RENDER_BODY,
        status=202,
        tags=("renders",),
    ),
    Route(
        "POST",
        "/api/generate/kling-avatar/status",
        routes_renders.status_by_body,
        "Seed 003 alias: a render's status by request_id",
        body=_REQUEST_ID_BODY,
        tags=("renders",),
    ),
    Route(
        "POST",
        "/api/generate/kling-avatar/result",
        routes_renders.result_by_body,
        "Seed 003 alias: a finished render by request_id",
        body=_REQUEST_ID_BODY,
        tags=("renders",),
    ),
    Route(
        "POST",
        "/api/generate/upload-file",
        routes_files.upload,
        "Seed 003 alias of POST /api/v1/files",
        body=_UPLOAD_BODY,
        body_type="multipart/form-data",
        status=201,
        tags=("renders",),
    ),
]


def _job_seconds(started: float | None, finished: float | None) -> float | None:
    return finished - started if started is not None and finished is not None else None


ROUTES: list[Route] = [
    Route("GET", "/health", health.health, "Service health", public=True, tags=("health",)),
    Route("GET", "/api/v1/health", health.health, "Service health", public=True, tags=("health",)),
    Route("GET", "/api/v1/ready", health.ready, "Readiness probe", tags=("health",)),
    Route("GET", "/api/v1/live", health.live, "Liveness probe", public=True, tags=("health",)),
    Route(
        "POST",
        "/avatars",
        avatars.create_session,
        "Create a session: a room with the agent and its avatar",
        body=_schema(["avatar_id"], avatar_id={"type": "string"}, session_id=_ID),
        status=201,
        tags=("sessions",),
    ),
    Route("GET", "/avatars", avatars.list_sessions, "List live sessions", tags=("sessions",)),
    Route(
        "GET", "/avatars/{session_id}", avatars.get_session, "A session's state", tags=("sessions",)
    ),
    Route(
        "DELETE",
        "/avatars/{session_id}",
        avatars.delete_session,
        "Close a session: everyone, the agent included, leaves",
        tags=("sessions",),
    ),
    Route(
        "POST",
        "/avatars/{session_id}/emotion",
        avatars.set_emotion,
        "Change the avatar's emotion",
        body=_schema(["emotion"], emotion={"type": "string"}, intensity=_UNIT),
        tags=("sessions",),
    ),
    Route(
        "POST",
        "/avatars/{session_id}/background",
        avatars.set_background,
        "Change the avatar's background",
        body=_schema(["background_id"], background_id={"type": "string"}),
        tags=("sessions",),
    ),
    Route(
        "POST",
        "/avatars/{session_id}/say",
        avatars.say,
        "Make the agent say a text",
        body=_schema(
            ["text"], text={"type": "string", "maxLength": 1000}, interrupt={"type": "boolean"}
        ),
        status=202,
        tags=("sessions",),
    ),
    Route(
        "POST",
        "/avatars/{session_id}/interrupt",
        avatars.interrupt,
        "Stop the agent speaking",
        tags=("sessions",),
    ),
    Route(
        "GET", "/ws/{session_id}", avatars.events, "WebSocket of session events", tags=("sessions",)
    ),
    Route("GET", "/emotions", catalog.list_emotions, "Emotions", tags=("catalog",)),
    Route("GET", "/backgrounds", catalog.list_backgrounds, "Backgrounds", tags=("catalog",)),
    Route(
        "POST",
        "/backgrounds",
        catalog.upload_background,
        "Upload a background image",
        body=_schema(
            ["id", "file"], id={"type": "string"}, file={"type": "string", "format": "binary"}
        ),
        body_type="multipart/form-data",
        status=201,
        tags=("catalog",),
    ),
    Route(
        "GET",
        "/backgrounds/{background_id}.png",
        catalog.background_image,
        "A background image",
        tags=("catalog",),
    ),
    Route(
        "DELETE",
        "/backgrounds/{background_id}",
        catalog.delete_background,
        "Delete a background image",
        tags=("catalog",),
    ),
    Route(
        "POST",
        "/token",
        tokens.create_token,
        "A LiveKit token for a room (dispatches the agent on join)",
        body=_schema([], room=_ID, identity=_ID, name={"type": "string", "maxLength": 128}),
        tags=("tokens",),
    ),
    *JOB_ROUTES,
    Route("GET", "/metrics", metrics, "Prometheus metrics", tags=("metrics",)),
    Route("GET", "/openapi.json", openapi_json, "This API, as OpenAPI 3.1", public=True),
    Route("GET", "/docs", docs, "This API, as a page", public=True),
    Route("GET", "/", index, "The web client", public=True),
]


# --- middleware and lifecycle ---------------------------------------------------------------


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)
    response = await handler(request)
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = request_id
        response.headers.setdefault("Cache-Control", "no-cache")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.status >= 500:
        log.warning("%s %s -> %s [%s]", request.method, request.path, response.status, request_id)
    return response


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as session:
        app[HTTP_SESSION] = session
        yield


async def _job_system(app: web.Application) -> AsyncIterator[None]:
    jobs = app[JOBS]
    await jobs.start()
    app[METRICS].watch_jobs(jobs.store.counts)
    yield
    await jobs.close()


async def _session_hub(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB]
    await hub.start()
    yield
    await hub.close()


def create_app(settings: Settings | None = None) -> web.Application:
    """The control API. Auth must be configured (keys, a JWT secret or auth disabled):
    `security.ensure_credentials` makes a key for a development machine."""
    settings = settings or Settings.from_env()
    settings.validate()
    authenticator = (
        None
        if settings.auth == "disabled"
        else Authenticator(settings.api_keys, settings.jwt_secret)
    )
    hub = SessionHub(settings)
    api_metrics = ApiMetrics(hub.stats)
    app = web.Application(
        middlewares=[
            request_id_middleware,
            api_metrics.middleware(),
            cors_middleware(settings.cors_origins),
            error_middleware,
            auth_middleware(authenticator),
            rate_limit_middleware(RateLimiter(settings.rate_limit_per_s, settings.rate_burst)),
        ],
        # Uploads stream through multipart and check their own, larger limit.
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[HUB] = hub
    app[METRICS] = api_metrics
    app[BACKGROUNDS] = BackgroundLibrary(settings.backgrounds_dir)
    app[AVATARS] = AvatarCatalog(settings.avatars_dir)
    app[STARTED_AT] = time.monotonic()
    app[JOBS] = JobSystem(
        settings,
        on_finished=lambda job: api_metrics.job_finished(
            job.kind, job.status, _job_seconds(job.started_at, job.finished_at)
        ),
    )
    app.cleanup_ctx.extend([_http_session, health.gpu_probe, _job_system, _session_hub])

    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    if settings.client_dir.is_dir():
        # aiohttp's static route normalises the path and refuses anything outside the
        # directory; follow_symlinks=False also stops a symlink from leading out of it.
        app.router.add_static("/static", settings.client_dir, follow_symlinks=False)
    else:
        log.warning("web client directory %s not found; /static is disabled", settings.client_dir)
    return app
