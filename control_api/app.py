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

from . import avatars, catalog, health, inventory, logcontext, tokens
from . import openapi as spec
from .config import Settings
from .context import (
    AVATARS,
    BACKGROUNDS,
    HTTP_SESSION,
    HUB,
    JOBS,
    METRICS,
    RENDER_POOL,
    SETTINGS,
    STARTED_AT,
    STREAMS,
    WEBRTC_PEERS,
)
from .errors import ApiError, error_middleware
from .jobs import routes_files, routes_internal, routes_renders, routes_runpod
from .jobs.system import JobSystem
from .logging_setup import REQUEST_ID
from .metrics import CONTENT_TYPE, ApiMetrics
from .openapi import Route, docs_page, openapi_document
from .render_service import routes as render_routes
from .render_service.pool import RenderPool
from .security import (
    Authenticator,
    RateLimiter,
    auth_middleware,
    cors_middleware,
    rate_limit_middleware,
)
from .sessions import SessionHub
from .streaming import routes as stream_routes
from .streaming import whep
from .streaming.manager import StreamManager
from .validation import BodyLimit, body_limit_middleware

log = logging.getLogger("control_api")

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
CLIENT_BUNDLE = ("dist", "app.js")

# What a path parameter may match in the router, where aiohttp's default (anything but '/')
# would let one route take another's paths: a background id has no '.', so
# `DELETE /backgrounds/{background_id}` does not also answer for `/backgrounds/x.png`.
_ROUTER_PATTERNS = {"background_id": r"[^{}/.]+"}
_PATH_PARAM = re.compile(r"\{(\w+)\}")


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


def _runpod_routes(prefix: str) -> list[Route]:
    tags = ("runpod",)
    return [
        Route(
            "POST",
            f"{prefix}/run",
            routes_runpod.run,
            "RunPod: queue an avatar preparation",
            body=spec.RUNPOD_BODY,
            response=spec.RUNPOD_JOB,
            plain_errors=(400,),
            tags=tags,
        ),
        Route(
            "POST",
            f"{prefix}/runsync",
            routes_runpod.runsync,
            "RunPod: prepare an avatar and wait for the result (bounded)",
            body=spec.RUNPOD_BODY,
            response=spec.RUNPOD_JOB,
            query={"wait": spec.RUNSYNC_WAIT},
            plain_errors=(400,),
            tags=tags,
        ),
        Route(
            "GET",
            f"{prefix}/status/{{job_id}}",
            routes_runpod.status,
            "RunPod: a job's status",
            response=spec.RUNPOD_JOB,
            plain_errors=(404,),
            tags=tags,
        ),
        Route(
            "POST",
            f"{prefix}/cancel/{{job_id}}",
            routes_runpod.cancel,
            "RunPod: cancel a job",
            response=spec.RUNPOD_JOB,
            plain_errors=(404,),
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
        response=spec.QUEUE_STATUS,
        tags=("jobs",),
    ),
    Route(
        "GET",
        "/api/v1/internal/avatar/jobs/{job_id}",
        routes_internal.get_job,
        "A job's details: attempts, progress, logs",
        response=spec.JOB_DETAILS,
        tags=("jobs",),
    ),
    Route(
        "POST",
        "/api/v1/internal/avatar/jobs/{job_id}/retry",
        routes_internal.retry_job,
        "Queue a failed or cancelled job again",
        response=spec.JOB_DETAILS,
        tags=("jobs",),
    ),
    Route(
        "POST",
        "/api/v1/renders",
        routes_renders.submit,
        "Queue an offline talking-video render",
        body=spec.RENDER_BODY,
        status=202,
        response=spec.RENDER_QUEUED,
        tags=("renders",),
    ),
    Route(
        "GET",
        "/api/v1/renders/{request_id}/status",
        routes_renders.status,
        "A render's status, queue position and progress (logs with ?logs=1)",
        response=spec.RENDER_STATUS,
        query={"logs": spec.LOGS_FLAG},
        tags=("renders",),
    ),
    Route(
        "GET",
        "/api/v1/renders/{request_id}",
        routes_renders.result,
        "A finished render: {video: {url}, duration}",
        response=spec.RENDER_RESULT,
        tags=("renders",),
    ),
    Route(
        "POST",
        "/api/v1/renders/{request_id}/cancel",
        routes_renders.cancel,
        "Cancel a render",
        response=spec.RENDER_QUEUED,
        tags=("renders",),
    ),
    Route(
        "POST",
        "/api/v1/files",
        routes_files.upload,
        "Upload a file; its URL works as image_url or audio_url",
        body=spec.FILE_UPLOAD_BODY,
        body_type="multipart/form-data",
        status=201,
        response=spec.FILE_URL,
        tags=("renders",),
    ),
    Route(
        "GET",
        "/files/{folder}/{name}",
        routes_files.download,
        "Download an upload or a job's output by signed link",
        public=True,
        response_types=("*/*",),
        query=spec.SIGNED_LINK_QUERY,
        tags=("renders",),
    ),
    Route(
        "POST",
        "/api/generate/kling-avatar/submit",
        routes_renders.submit,
        "Seed 003 alias of POST /api/v1/renders",
        body=spec.RENDER_BODY,
        status=202,
        response=spec.RENDER_QUEUED,
        tags=("renders",),
    ),
    Route(
        "POST",
        "/api/generate/kling-avatar/status",
        routes_renders.status_by_body,
        "Seed 003 alias: a render's status by request_id",
        body=spec.REQUEST_ID_BODY,
        response=spec.RENDER_STATUS,
        tags=("renders",),
    ),
    Route(
        "POST",
        "/api/generate/kling-avatar/result",
        routes_renders.result_by_body,
        "Seed 003 alias: a finished render by request_id",
        body=spec.REQUEST_ID_BODY,
        response=spec.RENDER_RESULT,
        tags=("renders",),
    ),
    Route(
        "POST",
        "/api/generate/upload-file",
        routes_files.upload,
        "Seed 003 alias of POST /api/v1/files",
        body=spec.FILE_UPLOAD_BODY,
        body_type="multipart/form-data",
        status=201,
        response=spec.FILE_URL,
        tags=("renders",),
    ),
]


# --- single-frame renders (seed 001, control_api/render_service) --------------------------------

RENDER_SERVICE_ROUTES: list[Route] = [
    Route(
        "POST",
        "/api/v1/render/frame",
        render_routes.render_frame,
        "Render one still frame of a portrait showing an emotion",
        body=spec.RENDER_FRAME_BODY,
        other_bodies={"multipart/form-data": spec.RENDER_FRAME_FORM},
        response=spec.RENDER_FRAME,
        tags=("render",),
    ),
    Route(
        "POST",
        "/api/v1/render/batch",
        render_routes.render_batch,
        "Render one portrait in several emotions (analysed once)",
        body=spec.RENDER_BATCH_BODY,
        other_bodies={"multipart/form-data": spec.RENDER_BATCH_FORM},
        response=spec.RENDER_BATCH,
        tags=("render",),
    ),
]


# --- frame streaming over WebSocket (seed 004, control_api/streaming, docs/streaming.md) --------

STREAM_ROUTES: list[Route] = [
    Route(
        "GET",
        "/api/v1/stream/ws",
        stream_routes.stream_ws,
        "WebSocket: stream audio in, get lip-synced frames back (seed 004's Ditto protocol)",
        status=101,
        response_types=(),
        tags=("streaming",),
    ),
    Route(
        "GET",
        "/api/v1/stream/sessions",
        stream_routes.stream_sessions,
        "Active streaming sessions",
        response=spec.STREAM_SESSIONS,
        tags=("streaming",),
    ),
    Route(
        "GET",
        "/api/v1/stream/stats",
        stream_routes.stream_stats,
        "Streaming statistics: sessions started, active, refused, expired, crashed; frames",
        response=spec.STREAM_STATS,
        tags=("streaming",),
    ),
]


def _job_seconds(started: float | None, finished: float | None) -> float | None:
    return finished - started if started is not None and finished is not None else None


ROUTES: list[Route] = [
    *(
        Route(
            "GET",
            path,
            health.health,
            "Service health",
            public=True,
            response=spec.HEALTH,
            tags=("health",),
        )
        for path in ("/health", "/api/v1/health")
    ),
    Route(
        "GET",
        "/api/v1/ready",
        health.ready,
        "Readiness probe",
        response=spec.READY,
        tags=("health",),
    ),
    Route(
        "GET",
        "/api/v1/live",
        health.live,
        "Liveness probe",
        public=True,
        response=spec.LIVE,
        tags=("health",),
    ),
    Route(
        "GET",
        "/api/v1/models",
        inventory.models,
        "Renderers: available or why not, model files found or missing, back ends, devices",
        response=spec.MODELS,
        tags=("health",),
    ),
    Route(
        "GET",
        "/api/v1/gpu-info",
        inventory.gpu_info,
        "GPUs: memory, utilization, temperature, driver and CUDA versions (or why none)",
        response=spec.GPU_INFO,
        tags=("health",),
    ),
    Route(
        "POST",
        "/avatars",
        avatars.create_session,
        "Create a session: a room with the agent and its avatar",
        body=spec.SESSION_BODY,
        status=201,
        response=spec.SESSION_CREATED,
        tags=("sessions",),
    ),
    Route(
        "GET",
        "/avatars",
        avatars.list_sessions,
        "List live sessions",
        response=spec.SESSIONS,
        tags=("sessions",),
    ),
    Route(
        "GET",
        "/avatars/{session_id}",
        avatars.get_session,
        "A session's state",
        response=spec.SESSION,
        tags=("sessions",),
    ),
    Route(
        "DELETE",
        "/avatars/{session_id}",
        avatars.delete_session,
        "Close a session: everyone, the agent included, leaves",
        response=spec.SESSION_DELETED,
        tags=("sessions",),
    ),
    Route(
        "POST",
        "/avatars/{session_id}/emotion",
        avatars.set_emotion,
        "Change the avatar's emotion",
        body=spec.EMOTION_BODY,
        response=spec.SESSION,
        tags=("sessions",),
    ),
    Route(
        "POST",
        "/avatars/{session_id}/background",
        avatars.set_background,
        "Change the avatar's background",
        body=spec.BACKGROUND_BODY,
        response=spec.SESSION,
        tags=("sessions",),
    ),
    Route(
        "POST",
        "/avatars/{session_id}/say",
        avatars.say,
        "Make the agent say a text",
        body=spec.SAY_BODY,
        status=202,
        response=spec.SPEECH,
        tags=("sessions",),
    ),
    Route(
        "POST",
        "/avatars/{session_id}/interrupt",
        avatars.interrupt,
        "Stop the agent speaking",
        response=spec.SESSION,
        tags=("sessions",),
    ),
    Route(
        "GET",
        "/ws/{session_id}",
        avatars.events,
        "WebSocket of session events",
        status=101,
        response_types=(),
        tags=("sessions",),
    ),
    Route(
        "GET",
        "/emotions",
        catalog.list_emotions,
        "Emotions",
        response=spec.EMOTIONS_LIST,
        tags=("catalog",),
    ),
    Route(
        "GET",
        "/backgrounds",
        catalog.list_backgrounds,
        "Backgrounds",
        response=spec.BACKGROUNDS_LIST,
        tags=("catalog",),
    ),
    Route(
        "POST",
        "/backgrounds",
        catalog.upload_background,
        "Upload a background image",
        body=spec.BACKGROUND_UPLOAD_BODY,
        body_type="multipart/form-data",
        status=201,
        response=spec.BACKGROUND_ENTRY,
        tags=("catalog",),
    ),
    Route(
        "GET",
        "/backgrounds/{background_id}.png",
        catalog.background_image,
        "A background image",
        response_types=spec.IMAGE_TYPES,
        tags=("catalog",),
    ),
    Route(
        "DELETE",
        "/backgrounds/{background_id}",
        catalog.delete_background,
        "Delete a background image",
        response=spec.DELETED,
        tags=("catalog",),
    ),
    Route(
        "POST",
        "/token",
        tokens.create_token,
        "A LiveKit token for a room (dispatches the agent on join)",
        body=spec.TOKEN_BODY,
        response=spec.TOKEN,
        tags=("tokens",),
    ),
    *JOB_ROUTES,
    *RENDER_SERVICE_ROUTES,
    *STREAM_ROUTES,
    *whep.STREAM_WEBRTC_ROUTES,
    Route(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics",
        response_types=("text/plain",),
        tags=("metrics",),
    ),
    Route(
        "GET",
        "/openapi.json",
        openapi_json,
        "This API, as OpenAPI 3.1",
        public=True,
        response=spec.DOCUMENT,
    ),
    Route("GET", "/docs", docs, "This API, as a page", public=True, response_types=spec.HTML),
    Route("GET", "/", index, "The web client", public=True, response_types=spec.HTML),
]


# --- middleware and lifecycle ---------------------------------------------------------------


def router_path(path: str) -> str:
    """`path` of the route table with the router's pattern for each parameter that has one."""

    def pattern(match: re.Match[str]) -> str:
        name = match[1]
        return f"{{{name}:{_ROUTER_PATTERNS[name]}}}" if name in _ROUTER_PATTERNS else match[0]

    return _PATH_PARAM.sub(pattern, path)


def body_limits(settings: Settings) -> dict[object, BodyLimit]:
    """Each route's body limit where it is not the JSON one (settings.max_body_bytes): the
    uploads limit their own (control_api/uploads.py), and the renders take their image and
    audio inline as data: URIs (seed 003) of up to AVATAR_MAX_UPLOAD_BYTES together."""
    inline = BodyLimit(
        settings.max_data_uri_body_bytes,
        " (files inline as data: URIs of up to AVATAR_MAX_UPLOAD_BYTES together, as base64); "
        "upload larger files with POST /api/v1/files and send their URLs",
    )
    images = BodyLimit(
        settings.max_data_uri_body_bytes,
        " (an image of up to AVATAR_MAX_UPLOAD_BYTES inline as base64, or as multipart)",
    )
    return {
        render_routes.render_frame: images,
        render_routes.render_batch: images,
        routes_renders.submit: inline,
        routes_files.upload: BodyLimit(None),
        catalog.upload_background: BodyLimit(None),
    }


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)
    request[REQUEST_ID] = request_id  # for the access log, written after the response
    # The request id is the correlation id of every line logged while handling it.
    with logcontext.bound(correlation_id=request_id):
        response = await handler(request)
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
            response.headers.setdefault("Cache-Control", "no-cache")
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if response.status >= 500:
            log.warning(
                "%s %s -> %s [%s]", request.method, request.path, response.status, request_id
            )
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


async def _render_pool(app: web.Application) -> AsyncIterator[None]:
    pool = app[RENDER_POOL]
    await pool.start()
    yield
    await pool.close()


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
            body_limit_middleware(BodyLimit(settings.max_body_bytes), body_limits(settings)),
        ],
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
    app[RENDER_POOL] = RenderPool(settings, on_analysed=api_metrics.portrait)
    api_metrics.watch_render_pool(app[RENDER_POOL].status)
    app[STREAMS] = StreamManager(settings)
    api_metrics.watch_streams(app[STREAMS].stats)
    app.cleanup_ctx.append(app[STREAMS].lifecycle)
    app.on_shutdown.append(app[STREAMS].on_shutdown)
    app[WEBRTC_PEERS] = whep.peer_registry(settings)
    app.on_shutdown.append(whep.close_peers)
    app.cleanup_ctx.extend(
        [_http_session, health.gpu_probe, _job_system, _render_pool, _session_hub]
    )

    for route in ROUTES:
        path = router_path(route.path)
        if route.method == "GET":  # and HEAD: the same answer without its body
            app.router.add_get(path, route.handler, allow_head=True)
        else:
            app.router.add_route(route.method, path, route.handler)
    if settings.client_dir.is_dir():
        # aiohttp's static route normalises the path and refuses anything outside the
        # directory; follow_symlinks=False also stops a symlink from leading out of it.
        app.router.add_static("/static", settings.client_dir, follow_symlinks=False)
    else:
        log.warning("web client directory %s not found; /static is disabled", settings.client_dir)
    return app
