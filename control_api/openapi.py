"""The route table, and the OpenAPI document and docs page generated from it.

`app.py` adds exactly these routes to the router, so the description cannot drift from what
is served (tests/test_control_api.py checks both ways, and tests/test_openapi_fuzz.py sends
every operation generated requests and checks each answer against this document).

The schemas below are built from the constants the validators use (the id patterns, the
emotions, the renderers' names), so a rule changed in the code changes the document too.
"""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

import renderers
from avatar_runtime import EMOTIONS
from avatar_runtime.avatars import ANY_CASE_ID
from avatar_runtime.backgrounds import _COLOR as COLOR_PATTERN
from avatar_runtime.backgrounds import BLUR, ORIGINAL
from avatar_runtime.backgrounds import ID_PATTERN as IMAGE_ID_PATTERN
from renderers.preparation import AVATAR_ID_PATTERN as PACKAGE_ID_PATTERN
from renderers.preparation import SUPPORTED_MODELS

from .health import VERSION
from .jobs import links
from .jobs.inputs import MAX_DATA_URI_CHARS, MAX_PROMPT_CHARS, MAX_URL_CHARS, S3_BUCKET
from .jobs.storage import _EXPIRES as EXPIRES
from .jobs.storage import _SIGNATURE as SIGNATURE
from .jobs.storage import ANY_CASE_ID_PATTERN, CATALOG_DEFAULT_ID
from .jobs.system import RUNPOD_STATUS
from .render_service import rules as render_rules
from .security import ACCESS_TOKEN_PARAM, API_KEY_HEADER, QUERY_TOKEN_PREFIXES
from .tokens import MAX_NAME_LENGTH
from .validation import ID_PATTERN

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Schema = dict[str, Any]
_PARAM = re.compile(r"\{(\w+)\}")
_SLUG = re.compile(r"[^A-Za-z0-9]+")
JSON = "application/json"


# --- schema building blocks -------------------------------------------------------------------


def pattern(regex: re.Pattern[str]) -> str:
    """A Python regex that the code matches with `fullmatch`, as a JSON Schema pattern (which
    is searched, so anchored here). The patterns used are the common subset of Python's and
    ECMA-262's syntax."""
    return f"^(?:{regex.pattern})$"


def nullable(schema: Schema) -> Schema:
    """An optional field: JSON null means "not given" (validation.py, jobs/inputs.py)."""
    nulled = dict(schema)
    if "enum" in nulled:
        nulled["enum"] = [*nulled["enum"], None]
    kind = nulled.get("type")
    if isinstance(kind, str):
        nulled["type"] = [kind, "null"]
    return nulled


def obj(required: list[str] | tuple[str, ...], *, closed: bool = True, **properties: Any) -> Schema:
    """A JSON object; `closed` (request bodies): no fields other than `properties`."""
    schema: Schema = {"type": "object", "required": list(required), "properties": properties}
    if closed:
        schema["additionalProperties"] = False
    return schema


def reply(required: list[str] | tuple[str, ...], **properties: Any) -> Schema:
    """A response body: these fields at least (more may be added later)."""
    return obj(required, closed=False, **properties)


def _enum(values: Any) -> Schema:
    return {"type": "string", "enum": list(values)}


_HTTP = r"[hH][tT][tT][pP][sS]?://"
_SPACES = "".join(f"\\u{ord(c):04x}" for c in map(chr, range(0x3001)) if c.isspace())
SPACE = f"[{_SPACES}]"
"""What `str.strip()` removes (`isspace`), spelt out: JSON Schema's `\\s` (ECMA-262's) is
another set."""
NOT_BLANK = f"[^{_SPACES}]"
"""Refused when empty once trimmed (`say` text, the strings of a job's input)."""


def _url(*, data: bool = False) -> Schema:
    """What jobs/inputs.py accepts as a URL: http(s), or also a data: URI (trimmed first)."""
    schemes = _HTTP + (r"|[dD][aA][tT][aA]:[^,]*," if data else "")  # a data: URI has a ","
    return {
        "type": "string",
        "pattern": f"^{SPACE}*(?:{schemes})",
        "maxLength": MAX_DATA_URI_CHARS if data else MAX_URL_CHARS,
    }


WEBHOOK = {"type": "string", "pattern": f"^{_HTTP}"}
"""RunPod's `webhook`: an http(s) URL as it is (jobs/routes_runpod.py)."""


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
NUMBER = {"type": "number"}
BOOLEAN = {"type": "boolean"}
ANY: Schema = {}
UNIT = {"type": "number", "minimum": 0, "maximum": 1}

ID = {"type": "string", "pattern": pattern(ID_PATTERN)}
"""Session ids, rooms and identities (validation.ID_PATTERN)."""
IMAGE_ID = {"type": "string", "pattern": pattern(IMAGE_ID_PATTERN)}
"""Background image ids."""
AVATAR_ID = {"type": "string", "pattern": pattern(ANY_CASE_ID)}
"""The avatar catalog's ids (`default` is one), in any case (avatar_runtime.avatars)."""
BACKGROUND_UPLOAD_ID = {
    "type": "string",
    # not "original" or "blur", the built-in backgrounds (a lookahead: a `not` next to a binary
    # part breaks schemathesis' multipart generation)
    "pattern": f"^(?!(?:{ORIGINAL}|{BLUR})$)(?:{IMAGE_ID_PATTERN.pattern})$",
}
BACKGROUND_SPEC = {
    "type": "string",
    "pattern": f"^(?:{COLOR_PATTERN.pattern}|{IMAGE_ID_PATTERN.pattern})$",
    "description": "original, blur, color:#RRGGBB or a background image's id (GET /backgrounds)",
}
EMOTION = _enum(EMOTIONS)
RENDERER = _enum(renderers.available())
PACKAGE_ID = {"type": "string", "pattern": pattern(PACKAGE_ID_PATTERN)}
JOB_STATUS = _enum(dict.fromkeys(RUNPOD_STATUS.values()))
BINARY = {"type": "string", "format": "binary", "minLength": 1}
"""An uploaded file: not empty."""
TIME = nullable(STRING)

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "valid": {"type": "array", "items": {"type": "string"}},
            },
        }
    },
}
PLAIN_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
    "description": "RunPod's error shape: the message as a string",
}
COMPONENTS: dict[str, Schema] = {"Error": ERROR_SCHEMA, "PlainError": PLAIN_ERROR_SCHEMA}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _component(name: str, schema: Schema) -> Schema:
    COMPONENTS[name] = schema
    return ref(name)


# --- request bodies ---------------------------------------------------------------------------

SESSION_BODY = obj(["avatar_id"], avatar_id=AVATAR_ID, session_id=nullable(ID))
EMOTION_BODY = obj(["emotion"], emotion=EMOTION, intensity=nullable(UNIT))
BACKGROUND_BODY = obj(["background_id"], background_id=BACKGROUND_SPEC)
SAY_BODY = obj(
    ["text"],
    text={"type": "string", "minLength": 1, "maxLength": 1000, "pattern": NOT_BLANK},
    interrupt=nullable(BOOLEAN),
)
TOKEN_BODY = obj(
    [],
    room=nullable(ID),
    identity=nullable(ID),
    name=nullable({"type": "string", "maxLength": MAX_NAME_LENGTH}),
)
BACKGROUND_UPLOAD_BODY = obj(["id", "file"], id=BACKGROUND_UPLOAD_ID, file=BINARY)
FILE_UPLOAD_BODY = obj(["file"], file=BINARY)

_TEXT = {"type": "string", "pattern": NOT_BLANK}
_FILLED = {"type": "string", "minLength": 1}


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


_NOT_LOCAL = [CATALOG_DEFAULT_ID, *renderers.available()]
LOCAL_AVATAR_ID = {
    "type": "string",
    "pattern": f"^(?!(?:{'|'.join(map(_any_case, _NOT_LOCAL))})$)"
    f"(?:{ANY_CASE_ID_PATTERN.pattern})$",
    "description": "an id of the avatar catalog, in any case (installed in lower case), "
    f"and none of {', '.join(_NOT_LOCAL)}",
}
"""An avatar id the local avatar store takes (jobs/storage.local_avatar_id)."""
RUNPOD_BODY = obj(
    ["input"],
    input=obj(
        ["video_url", "avatar_id"],
        video_url=_url(),
        avatar_id=PACKAGE_ID,
        model=nullable(
            {
                **_TEXT,
                "maxLength": 64,
                "default": SUPPORTED_MODELS[0],
                "description": f"{', '.join(SUPPORTED_MODELS)}; another fails the job",
            }
        ),
        s3_bucket=nullable({"type": "string", "pattern": pattern(S3_BUCKET)}),
        s3_prefix=nullable({"type": "string", "maxLength": 512}),
    )
    | {
        "allOf": [
            # a prefix needs a bucket the input names
            {
                "if": {"required": ["s3_prefix"], "properties": {"s3_prefix": _FILLED}},
                "then": {"required": ["s3_bucket"], "properties": {"s3_bucket": STRING}},
            },
            # without a bucket the package goes to this service's avatar store
            {
                "if": {"not": {"required": ["s3_bucket"], "properties": {"s3_bucket": STRING}}},
                "then": {"properties": {"avatar_id": LOCAL_AVATAR_ID}},
            },
        ]
    },
    webhook=nullable(WEBHOOK),
)
RENDER_BODY = {
    **obj(
        ["audio_url"],
        image_url=nullable(_url(data=True)),
        avatar_id=nullable(AVATAR_ID),
        audio_url=_url(data=True),
        renderer=nullable({**RENDERER, "default": "meshwarp"}),
        emotion=nullable({**EMOTION, "default": "neutral"}),
        intensity=nullable(UNIT),
        prompt=nullable({"type": "string", "maxLength": MAX_PROMPT_CHARS}),
        webhook_url=nullable(_url()),
    ),
    # Exactly one of the two pictures (null is "not given").
    "oneOf": [
        {"required": ["image_url"], "properties": {"image_url": STRING}},
        {"required": ["avatar_id"], "properties": {"avatar_id": STRING}},
    ],
}
# Seed 001's single-frame renders (render_service/): JSON, or multipart with the same fields.
_RENDER_IMAGE = {
    "type": "string",
    "pattern": NOT_BLANK,
    "maxLength": MAX_DATA_URI_CHARS,
    "description": "the portrait (PNG, JPEG or WebP, at most AVATAR_MAX_UPLOAD_BYTES) as "
    "base64, or as a data: URI",
}
_RENDER_SIZE = {
    "type": "integer",
    "minimum": render_rules.MIN_SIZE,
    "maximum": render_rules.MAX_SIZE,
    "default": render_rules.DEFAULT_SIZE,
}
_RENDER_FORMAT = {**_enum(render_rules.FORMATS), "default": render_rules.DEFAULT_FORMAT}
_RENDER_INTENSITY = {**UNIT, "default": render_rules.DEFAULT_INTENSITY}
_RENDER_EMOTION = {**EMOTION, "default": render_rules.DEFAULT_EMOTION}
_RENDER_RENDERER = {
    **RENDERER,
    "description": "the service's default renderer (AVATAR_RENDER_SERVICE_RENDERER) when not "
    "given; others only where AVATAR_RENDER_SERVICE_RENDERERS offers them "
    "(422 renderer_not_allowed)",
}
_RENDER_EMOTIONS = {
    "type": "array",
    "items": EMOTION,
    "minItems": 1,
    "maxItems": render_rules.DEFAULT_MAX_BATCH,
    "description": "rendered in this order; at most AVATAR_RENDER_SERVICE_MAX_BATCH "
    f"({render_rules.DEFAULT_MAX_BATCH} by default)",
}
_EMOTION_CHOICE = "|".join(EMOTIONS)
_RENDER_OPTIONS: dict[str, Any] = {
    "intensity": nullable(_RENDER_INTENSITY),
    "format": nullable(_RENDER_FORMAT),
    "width": nullable(_RENDER_SIZE),
    "height": nullable(_RENDER_SIZE),
    "renderer": nullable(_RENDER_RENDERER),
}
_RENDER_FORM_OPTIONS: dict[str, Any] = {
    "intensity": _RENDER_INTENSITY,
    "format": _RENDER_FORMAT,
    "width": _RENDER_SIZE,
    "height": _RENDER_SIZE,
    "renderer": _RENDER_RENDERER,
}
RENDER_FRAME_BODY = obj(
    ["image"], image=_RENDER_IMAGE, emotion=nullable(_RENDER_EMOTION), **_RENDER_OPTIONS
)
RENDER_BATCH_BODY = obj(
    ["image", "emotions"], image=_RENDER_IMAGE, emotions=_RENDER_EMOTIONS, **_RENDER_OPTIONS
)
RENDER_FRAME_FORM = obj(["image"], image=BINARY, emotion=_RENDER_EMOTION, **_RENDER_FORM_OPTIONS)
RENDER_BATCH_FORM = obj(
    ["image", "emotions"],
    image=BINARY,
    emotions={
        "type": "string",
        "pattern": f"^(?:{_EMOTION_CHOICE})(?:,(?:{_EMOTION_CHOICE})){{0,"
        f"{render_rules.DEFAULT_MAX_BATCH - 1}}}$",
        "description": "comma-separated (or a JSON array)",
    },
    **_RENDER_FORM_OPTIONS,
)
REQUEST_ID_BODY = obj(["request_id"], request_id={"type": "string", "minLength": 1}, logs=BOOLEAN)


# --- responses --------------------------------------------------------------------------------

HEALTH = _component(
    "Health",
    reply(
        [
            "status",
            "ready",
            "version",
            "uptime_s",
            "livekit",
            "renderers",
            "gpuAvailable",
            "gpu",
            "render",
        ],
        status=_enum(["ok", "degraded"]),
        ready={
            "type": "boolean",
            "description": "the render service (POST /api/v1/render/*) is warm and has a worker",
        },
        version=STRING,
        uptime_s=NUMBER,
        livekit=reply(["url", "reachable"], url=STRING, reachable=BOOLEAN),
        renderers={
            "type": "array",
            "items": reply(
                ["name", "available"],
                name=STRING,
                available=BOOLEAN,
                reason=STRING,
                emotions={"type": "array", "items": STRING},
                details={"type": "object"},
            ),
        },
        gpuAvailable=BOOLEAN,
        gpu=reply(["available", "devices"], available=BOOLEAN, devices={"type": "array"}),
        sessions=INTEGER,
        render=reply(
            ["ready", "state", "renderer", "renderers", "workers", "workersUp", "busy", "queued"],
            ready=BOOLEAN,
            state=_enum(["warming", "ready", "failed", "restarting"]),
            renderer=STRING,
            renderers={"type": "array", "items": STRING},
            workers=INTEGER,
            workersUp=INTEGER,
            busy=INTEGER,
            queued=INTEGER,
            crashes=INTEGER,
            error=reply(["code", "message"], code=STRING, message=STRING),
        ),
    ),
)
READY = reply(["ready"], ready={"const": True})
LIVE = reply(["status"], status={"const": "alive"})
_FILES = reply(
    ["setting", "path", "complete", "files"],
    setting={"type": "string", "description": "the variable that says where the files are"},
    path={**nullable(STRING), "description": "its value, as configured (null: unset)"},
    complete=BOOLEAN,
    layout=nullable(STRING),
    files={
        "type": "array",
        "items": reply(["name", "found"], name=STRING, found=BOOLEAN, layout=STRING),
    },
)
MODELS = _component(
    "Models",
    reply(
        ["default", "defaults", "models", "backends", "devices"],
        default={**STRING, "description": "the renderer used when a request names none"},
        defaults={"type": "object", "additionalProperties": STRING},
        models={
            "type": "array",
            "items": reply(
                ["name", "default", "available", "emotions", "checkpoints", "devices", "backends"],
                name=STRING,
                default=BOOLEAN,
                default_for={"type": "array", "items": STRING},
                available=BOOLEAN,
                reason=STRING,
                emotions={"type": "array", "items": STRING},
                checkpoints={"oneOf": [_FILES, {"type": "null"}]},
                backend=STRING,
                backends={"type": "array", "items": STRING},
                device=STRING,
                devices={"type": "array", "items": STRING},
                needs_source=BOOLEAN,
                native_fps=nullable(NUMBER),
                details={"type": "object"},
            ),
        },
        backends={
            "type": "array",
            "items": reply(
                ["name", "installed", "usable"],
                name=_enum(["torch", "onnx", "tensorrt"]),
                module=STRING,
                installed=BOOLEAN,
                version=nullable(STRING),
                usable=BOOLEAN,
                reason=STRING,
            ),
        },
        devices={
            "type": "array",
            "items": reply(
                ["id", "type", "available"],
                id=STRING,
                type=_enum(["cpu", "cuda"]),
                available=BOOLEAN,
                name=STRING,
                selected=BOOLEAN,
            ),
        },
    ),
)
_GPU = reply(
    ["index", "name", "memory", "utilization", "temperature_c"],
    index=INTEGER,
    name=STRING,
    uuid=nullable(STRING),
    selected=BOOLEAN,
    memory={
        "oneOf": [
            reply(
                ["total_mb", "used_mb", "free_mb"],
                total_mb=INTEGER,
                used_mb=INTEGER,
                free_mb=INTEGER,
                total_bytes=INTEGER,
                used_bytes=INTEGER,
                free_bytes=INTEGER,
            ),
            {"type": "null"},
        ]
    },
    utilization={
        "oneOf": [
            reply(["gpu_percent", "memory_percent"], gpu_percent=INTEGER, memory_percent=INTEGER),
            {"type": "null"},
        ]
    },
    temperature_c=nullable(INTEGER),
    power_w=nullable(NUMBER),
    power_limit_w=nullable(NUMBER),
)
GPU_INFO = _component(
    "GpuInfo",
    reply(
        ["available", "devices"],
        available=BOOLEAN,
        reason={**STRING, "description": "why no GPU is reported (when available is false)"},
        source=STRING,
        count=INTEGER,
        driver_version=nullable(STRING),
        cuda_version=nullable(STRING),
        nvml_version=nullable(STRING),
        selected=nullable(INTEGER),
        warning=STRING,
        devices={"type": "array", "items": _GPU},
    ),
)
SESSION = _component(
    "Session",
    reply(
        [
            "session_id",
            "room",
            "avatar_id",
            "created_at",
            "avatar_connected",
            "avatar_identity",
            "emotion",
            "intensity",
            "background",
            "speaking",
            "emotions",
            "emotion_shown",
            "participants",
            "stats",
        ],
        session_id=STRING,
        room=STRING,
        avatar_id=STRING,
        created_at=STRING,
        avatar_connected=BOOLEAN,
        avatar_identity=nullable(STRING),
        emotion=STRING,
        intensity=NUMBER,
        background=STRING,
        speaking=BOOLEAN,
        emotions={"type": "array", "items": STRING},
        emotion_shown=BOOLEAN,
        renderer_error={
            "oneOf": [
                {"type": "null"},
                reply(
                    ["code", "message", "since"],
                    code={"enum": ["render_failed", "render_timeout"]},
                    message=STRING,
                    since=STRING,
                ),
            ],
            "description": "Why the renderer is not drawing (the idle picture shows); null "
            "while it works.",
        },
        participants={
            "type": "array",
            "items": reply(["identity", "name", "kind"], identity=STRING, name=STRING, kind=STRING),
        },
        stats={"type": "object"},
    ),
)
SESSION_CREATED = reply(
    ["session_id", "room", "avatar_id", "livekit_url", "token", "identity", "created_at"],
    session_id=STRING,
    room=STRING,
    avatar_id=STRING,
    livekit_url=STRING,
    token=STRING,
    identity=STRING,
    created_at=STRING,
    ws_url=STRING,
)
SESSIONS = reply(["sessions"], sessions={"type": "array", "items": SESSION})
SESSION_DELETED = reply(["session_id", "deleted"], session_id=STRING, deleted={"const": True})
SPEECH = reply(
    ["session_id", "text", "speech_id"], session_id=STRING, text=STRING, speech_id=nullable(STRING)
)
EMOTIONS_LIST = reply(
    ["emotions", "default"],
    emotions={
        "type": "array",
        "items": reply(["id", "description"], id=EMOTION, description=STRING),
    },
    default=EMOTION,
)
BACKGROUND_ENTRY = _component(
    "Background",
    reply(
        ["id", "kind", "description"],
        id=STRING,
        kind=_enum(["builtin", "color", "image"]),
        description=STRING,
        source=_enum(["bundled", "uploaded"]),
        url=STRING,
    ),
)
BACKGROUNDS_LIST = reply(["backgrounds"], backgrounds={"type": "array", "items": BACKGROUND_ENTRY})
DELETED = reply(["id", "deleted"], id=STRING, deleted={"const": True})
TOKEN = reply(
    ["url", "token", "room", "identity"], url=STRING, token=STRING, room=STRING, identity=STRING
)

RUNPOD_JOB = _component(
    "RunPodJob",
    reply(["id", "status"], id=STRING, status=JOB_STATUS, output=ANY, error=nullable(STRING)),
)
QUEUE_STATUS = reply(
    ["running", "pending", "completed", "failed", "cancelled", "max_concurrent", "max_retries"],
    running=INTEGER,
    pending=INTEGER,
    completed=INTEGER,
    failed=INTEGER,
    cancelled=INTEGER,
    max_concurrent=INTEGER,
    max_retries=INTEGER,
    by_kind={"type": "object", "additionalProperties": {"type": "object"}},
)
JOB_DETAILS = _component(
    "Job",
    reply(
        ["job_id", "kind", "status", "runpod_status", "attempts", "progress", "logs"],
        job_id=STRING,
        kind=_enum(["prepare", "render"]),
        status=STRING,
        runpod_status=JOB_STATUS,
        input={"type": "object"},
        output=ANY,
        error=nullable(STRING),
        attempts=INTEGER,
        max_attempts=INTEGER,
        progress=NUMBER,
        queue_position=nullable(INTEGER),
        created_at=TIME,
        started_at=TIME,
        finished_at=TIME,
        next_attempt_at=TIME,
        logs={
            "type": "array",
            "items": reply(["timestamp", "message"], timestamp=TIME, message=STRING),
        },
        webhook={"type": "object"},
    ),
)
RENDER_QUEUED = reply(["request_id", "status"], request_id=STRING, status=JOB_STATUS)
RENDER_STATUS = _component(
    "RenderStatus",
    reply(
        ["request_id", "status", "queue_position", "progress", "attempts"],
        request_id=STRING,
        status=JOB_STATUS,
        queue_position=nullable(INTEGER),
        progress=NUMBER,
        attempts=INTEGER,
        error=nullable(STRING),
        logs={"type": "array"},
    ),
)
RENDER_RESULT = _component(
    "RenderResult",
    reply(["video", "duration"], video=reply(["url"], url=STRING), duration=nullable(NUMBER)),
)
RENDER_FRAME = _component(
    "RenderedFrame",
    reply(
        ["image", "format", "latencyMs", "metadata"],
        image={"type": "string", "description": "the picture, base64"},
        format=_enum(render_rules.FORMATS),
        latencyMs=NUMBER,
        metadata=reply(
            ["emotion", "intensity", "renderer", "width", "height", "format", "analysed"],
            emotion=EMOTION,
            intensity=NUMBER,
            renderer=STRING,
            width=INTEGER,
            height=INTEGER,
            format=_enum(render_rules.FORMATS),
            analysed=BOOLEAN,
            warmup=BOOLEAN,
            backend={"type": "string", "description": "the back end that ran, when it has one"},
            timings={"type": "object", "additionalProperties": NUMBER},
        ),
    ),
)
RENDER_BATCH = reply(
    ["results", "latencyMs"], results={"type": "array", "items": RENDER_FRAME}, latencyMs=NUMBER
)
FILE_URL = reply(["url"], url=STRING)
_COUNT = {"type": "integer", "minimum": 0}
_SECONDS = {"type": "number", "minimum": 0}
STREAM_SESSION = _component(
    "StreamSession",
    reply(
        ["session_id", "renderer", "width", "height", "fps", "state", "frames", "age_s", "idle_s"],
        session_id=STRING,
        renderer=STRING,
        width=INTEGER,
        height=INTEGER,
        fps=NUMBER,
        state=_enum(["loading", "ready", "streaming", "stopping", "completed", "failed", "closed"]),
        frames=_COUNT,
        dropped=_COUNT,
        audio_seconds=_SECONDS,
        age_s=_SECONDS,
        idle_s=_SECONDS,
        render_fps=_SECONDS,
        latency_ms=nullable(NUMBER),
        subscribers=_COUNT,
        pid=nullable(INTEGER),
    ),
)
STREAM_SESSIONS = reply(
    ["sessions", "max_sessions"],
    sessions={"type": "array", "items": STREAM_SESSION},
    max_sessions=INTEGER,
)
STREAM_STATS = reply(
    [
        "sessions_active",
        "sessions_started",
        "sessions_refused",
        "sessions_expired",
        "sessions_crashed",
        "frames",
        "dropped",
        "fps",
    ],
    sessions_active=_COUNT,
    sessions_started=_COUNT,
    sessions_completed=_COUNT,
    sessions_refused=_COUNT,
    sessions_expired=_COUNT,
    sessions_crashed=_COUNT,
    sessions_failed=_COUNT,
    sessions_disconnected=_COUNT,
    max_sessions=INTEGER,
    frames=_COUNT,
    dropped=_COUNT,
    fps=_SECONDS,
)
DOCUMENT = {"type": "object"}
HTML = ("text/html",)
IMAGE_TYPES = ("image/png", "image/jpeg")
"""A background image: an uploaded one is a PNG, a bundled one may be a JPEG."""


# --- query parameters -------------------------------------------------------------------------


def param(schema: Schema, description: str, *, required: bool = False) -> dict[str, Any]:
    """A query parameter (`Route.query`), as OpenAPI describes one less its name and place."""
    return {"required": required, "description": description, "schema": schema}


RUNSYNC_WAIT = param(
    {"type": "number", "minimum": 0},
    "milliseconds to wait for the result, capped by AVATAR_JOBS_RUNSYNC_WAIT_S",
)
LOGS_FLAG = param(STRING, "1, true or yes: include the job's log lines")
SIGNED_LINK_QUERY = {
    "expires": param({"type": "string", "pattern": pattern(EXPIRES)}, "unix time", required=True),
    "signature": param(
        {"type": "string", "pattern": pattern(SIGNATURE)}, "HMAC-SHA256, hex", required=True
    ),
}


# --- routes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    public: bool = False
    body: dict[str, Any] | None = None
    """JSON schema of the request body (JSON unless `body_type` says otherwise). A JSON body
    with no required fields may be left out (validation.json_object reads it as {})."""
    body_type: str = JSON
    other_bodies: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    """The same body in other media types (`multipart/form-data`), by media type."""
    status: int = 200
    tags: tuple[str, ...] = field(default=())
    response: dict[str, Any] | None = None
    """JSON schema of the success body, when it is JSON."""
    response_types: tuple[str, ...] = (JSON,)
    """Media types of the success body."""
    query: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    """Query parameters by name (`param`)."""
    plain_errors: tuple[int, ...] = ()
    """Statuses whose error body is RunPod's `{"error": "message"}`; every other error is
    `{"error": {"code", "message"}}`."""


def _content(types: tuple[str, ...], schema: Schema | None) -> dict[str, Any]:
    return {t: {"schema": schema} if schema is not None else {} for t in types}


def _operation(route: Route) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "success"}
    if route.response_types:
        success["content"] = _content(route.response_types, route.response)
    responses: dict[str, Any] = {str(route.status): success}
    for status in route.plain_errors:
        responses[str(status)] = {
            "description": "refused, in RunPod's error shape",
            "content": {JSON: {"schema": ref("PlainError")}},
        }
    responses["default"] = {
        "description": "an error",
        "content": {JSON: {"schema": ref("Error")}},
    }
    operation: dict[str, Any] = {
        "summary": route.summary,
        "operationId": route.handler.__name__,
        "tags": list(route.tags),
        "responses": responses,
    }
    parameters = [
        {"name": p, "in": "path", "required": True, "schema": PATH_SCHEMAS.get(p, STRING)}
        for p in _PARAM.findall(route.path)
    ]
    parameters += [{"name": name, "in": "query", **p} for name, p in route.query.items()]
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        required = route.body_type != JSON or bool(route.body.get("required"))
        operation["requestBody"] = {
            "required": required,
            "content": {
                route.body_type: {"schema": route.body},
                **{media: {"schema": schema} for media, schema in route.other_bodies.items()},
            },
        }
    operation["security"] = _security(route)
    return operation


def _security(route: Route) -> list[dict[str, list[str]]]:
    if route.public:
        return []
    schemes: list[dict[str, list[str]]] = [{"apiKey": []}, {"bearer": []}]
    if route.path.startswith(QUERY_TOKEN_PREFIXES):  # the WebSocket: browsers set no headers
        schemes.append({"accessToken": []})
    return schemes


PATH_SCHEMAS: dict[str, Schema] = {
    "session_id": ID,
    "background_id": IMAGE_ID,
    "folder": {"type": "string", "pattern": pattern(links.FOLDER)},
    "name": {"type": "string", "pattern": pattern(links.NAME)},
}
"""Path parameters with a rule of their own (by name, the same on every route); a value that
breaks it names nothing: 404, or 403 for a signed link (`/files/{folder}/{name}`)."""


def openapi_document(routes: list[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for route in routes:
        operation = _operation(route)
        # Unique, as OpenAPI wants: an alias (a handler on a second path) adds its path.
        if operation["operationId"] in taken:
            operation["operationId"] += "_" + _SLUG.sub("_", route.path).strip("_")
        taken.add(operation["operationId"])
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Avatar Agents control API",
            "version": VERSION,
            "description": "Sessions, live emotion and background, speech and events of "
            "LiveKit talking avatars. See docs/control-api.md.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(COMPONENTS),
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER},
                "bearer": {"type": "http", "scheme": "bearer"},
                "accessToken": {"type": "apiKey", "in": "query", "name": ACCESS_TOKEN_PARAM},
            },
        },
    }


_CSS = (
    "body{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;"
    "color:#1b1f24}table{border-collapse:collapse;width:100%}th,td{text-align:left;"
    "padding:.35rem .6rem;border-bottom:1px solid #d8dee4;vertical-align:top}"
    "th{background:#f3f5f7}code{font-size:13px}"
)
_HEAD = "".join(f"<th>{h}</th>" for h in ("method", "path", "what it does", "body", "auth"))


def docs_page(routes: list[Route]) -> str:
    rows = []
    for route in routes:
        body = ""
        if route.body is not None:
            fields = route.body.get("properties", {})
            body = ", ".join(
                f"{name}{'' if name in route.body.get('required', []) else '?'}" for name in fields
            )
        rows.append(
            "<tr>"
            f"<td><code>{route.method}</code></td>"
            f"<td><code>{html.escape(route.path)}</code></td>"
            f"<td>{html.escape(route.summary)}</td>"
            f"<td>{html.escape(body)}</td>"
            f"<td>{'open' if route.public else 'key or JWT'}</td>"
            "</tr>"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Avatar Agents control API</title>
<link rel="icon" href="data:,">
<style>{_CSS}</style></head><body>
<h1>Avatar Agents control API <small>{VERSION}</small></h1>
<p>Machine-readable: <a href="/openapi.json">/openapi.json</a>. Send <code>X-API-Key</code> or
<code>Authorization: Bearer</code> on routes that are not open. Errors are
<code>{{"error": {{"code", "message"}}}}</code>.</p>
<table><thead><tr>{_HEAD}</tr></thead>
<tbody>{"".join(rows)}</tbody></table></body></html>
"""
