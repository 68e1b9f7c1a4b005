"""Settings for the control API, read from the environment plus an optional `.env`.

docs/control-api.md lists every variable; this module is the one place that reads them.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TypedDict

from dotenv import find_dotenv, load_dotenv

import renderers
from renderers.cache import cache_dir

from .env_aliases import LOG_LEVELS, apply_aliases
from .render_service.rules import DEFAULT_MAX_BATCH

PACKAGE_DIR = Path(__file__).resolve().parent
CLIENT_DIR = PACKAGE_DIR / "web"
"""The built web page (index.html, style.css, dist/app.js): client_demo/ built into the package
by `npm run build` (client_demo/scripts/build.mjs), so a checkout and an installed wheel, which
carries it as package data, serve it from the same place."""
CHECKOUT_ROOT: Path | None = (
    PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "pyproject.toml").is_file() else None
)
"""The repository when running from a checkout; None when installed (site-packages)."""

DEFAULT_LIVEKIT_URL = "ws://127.0.0.1:7880"
DEFAULT_API_KEY = "devkey"
DEFAULT_API_SECRET = "avatar-agents-local-dev-secret-0123456789"
DEFAULT_AGENT_NAME = "avatar-agent"
AUTH_MODES = ("required", "disabled")
MIN_JWT_SECRET_LENGTH = 32


class ConfigError(ValueError):
    """A setting that cannot work; the message names the variable."""


def default_cache_dir() -> Path:
    return cache_dir()


@dataclass(frozen=True)
class Settings:
    livekit_url: str = DEFAULT_LIVEKIT_URL
    # What browsers are told to connect to; differs from livekit_url behind a proxy/NAT.
    public_livekit_url: str = DEFAULT_LIVEKIT_URL
    livekit_api_key: str = DEFAULT_API_KEY
    livekit_api_secret: str = field(default=DEFAULT_API_SECRET, repr=False)
    agent_name: str = DEFAULT_AGENT_NAME
    token_ttl: timedelta = timedelta(hours=1)
    client_dir: Path = CLIENT_DIR

    # -- security ------------------------------------------------------------------------------
    auth: str = "required"
    """'required' (keys and/or JWT) or 'disabled'."""
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    jwt_secret: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    rate_limit_per_s: float = 20.0
    rate_burst: int = 40

    # -- limits --------------------------------------------------------------------------------
    max_sessions: int = 10
    max_upload_bytes: int = 10 * 1024 * 1024
    """A background image upload; also the files one JSON body may carry as data: URIs."""
    max_body_bytes: int = 64 * 1024
    """A JSON body, on every route but those that take data: URIs (max_data_uri_body_bytes)."""
    max_say_chars: int = 1000
    body_idle_timeout_s: float = 30.0
    """The longest wait for the next bytes of a request body (an upload, a JSON body) before it
    is refused with 408 and its partial file removed: a stalled client holds nothing longer."""
    session_idle_timeout_s: float = 300.0
    """A session nobody (but the agent) has been in for this long is closed."""
    rpc_timeout_s: float = 5.0

    # -- server, GPU and logging (seed 004; __main__.py, gpu.py, logging_setup.py) ----------
    host: str = "127.0.0.1"
    """The bind address of `python -m control_api` (its --host wins)."""
    port: int = 8080
    """The bind port of `python -m control_api` (its --port wins)."""
    gpu_id: int | None = None
    """The GPU to use, by nvidia-smi's index: `GET /api/v1/gpu-info` lists it first, and the
    service and its worker processes see only it (CUDA_VISIBLE_DEVICES, gpu.select_gpu).
    None: every GPU, CUDA's first by default."""
    log_level: str = "INFO"
    enable_console_logging: bool = True
    """Human-readable lines on stderr (Rich on a terminal)."""
    enable_file_logging: bool = True
    """JSON lines in `<logs dir>/control-api_YYYYMMDD_HHMMSS.json`, `latest.json` the newest."""
    log_dir: Path | None = None
    """None: `<cache_dir>/logs`."""

    @property
    def logs_dir(self) -> Path:
        return self.log_dir or self.cache_dir / "logs"

    # -- storage -------------------------------------------------------------------------------
    cache_dir: Path = field(default_factory=default_cache_dir)
    backgrounds_dir: Path | None = None
    """None: avatar_runtime's default ($AVATAR_BACKGROUNDS_DIR or the cache)."""
    avatars_dir: Path | None = None
    """None: avatar_runtime's default ($AVATAR_AVATARS_DIR or the cache)."""

    # -- offline jobs (docs/jobs.md) -----------------------------------------------------------
    jobs_db_path: Path | None = None
    """None: `<cache_dir>/jobs.sqlite3`."""
    jobs_database_url: str | None = field(default=None, repr=False)
    """A PostgreSQL URL: the job store and queue shared by several instances (pg_store.py);
    None: the SQLite file `jobs_db_path`."""
    jobs_files_bucket: str | None = None
    """An S3 bucket for uploads, results and avatar packages, so that any instance serves
    any of them; None: `jobs_dir` on this machine."""
    jobs_files_prefix: str = ""
    jobs_dir: Path | None = None
    """Job inputs, outputs and uploads. None: `<cache_dir>/jobs`."""
    jobs_concurrency: int = 3
    jobs_max_retries: int = 3
    """Retries after the first attempt of a job that failed for a transient reason."""
    jobs_backoff_s: float = 5.0
    """Delay before the first retry; it doubles for each later one, up to jobs_backoff_max_s."""
    jobs_backoff_max_s: float = 300.0
    jobs_timeout_s: float = 900.0
    """One attempt of a job runs at most this long; then its worker is killed."""
    jobs_runsync_wait_s: float = 90.0
    """How long `POST /runsync` waits for the job before answering with its current status."""
    jobs_lease_s: float = 30.0
    """A processing job whose supervisor has not renewed its lease for this long is taken back."""
    jobs_log_lines: int = 200
    jobs_public_url: str | None = None
    """Base of the signed URLs the service hands out; None: the submitting request's origin."""
    jobs_url_secret: str | None = field(default=None, repr=False)
    """Signs download URLs; None: generated once into `<cache_dir>/jobs-url-secret`."""
    jobs_url_ttl_s: float = 86400.0
    jobs_max_upload_bytes: int = 100 * 1024 * 1024
    prepare_min_video_s: float = 3.0
    prepare_max_video_s: float = 300.0
    render_max_audio_s: float = 300.0
    fetch_allow_private: bool = False
    """Allow video_url/audio_url/image_url on private, loopback and link-local addresses."""
    fetch_allowed_cidrs: tuple[str, ...] = ()
    """Private networks allowed even when fetch_allow_private is off (e.g. 127.0.0.0/8)."""
    fetch_max_bytes: int = 1024 * 1024 * 1024
    fetch_timeout_s: float = 300.0
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_url_ttl_s: float = 7 * 86400.0
    webhook_secret: str | None = field(default=None, repr=False)
    """Signs webhook deliveries; None: generated once into `<cache_dir>/webhook-secret`."""
    webhook_max_attempts: int = 5
    webhook_backoff_s: float = 2.0
    webhook_timeout_s: float = 10.0
    webhook_allow_private: bool = False

    # -- single-frame renders (seed 001, control_api/render_service) ---------------------------
    render_service_renderer: str = "meshwarp"
    """The renderer of `POST /api/v1/render/frame|batch` when a request names none."""
    render_service_renderers: tuple[str, ...] = ()
    """Renderers a request may name besides the default (the default is always allowed)."""
    render_service_workers: int = 1
    """Render worker processes; each renders one request at a time."""
    render_service_queue: int = 16
    """Requests that may wait for a free worker; one more is refused with 503 render_busy."""
    render_service_max_batch: int = DEFAULT_MAX_BATCH
    """The most emotions one `POST /api/v1/render/batch` may ask for."""
    render_service_cache: int = 8
    """Analysed portraits each worker keeps (a loaded renderer each), least recently used out."""
    render_service_timeout_s: float = 30.0
    """The longest a render request waits and renders; then 503 render_timeout (a worker still
    rendering it is replaced)."""
    render_service_warmup: bool = True
    """Start and warm the workers when the service starts (else at the first render)."""

    # -- frame streaming over WebSocket (seed 004, control_api/streaming, docs/streaming.md) --
    stream_renderer: str = "meshwarp"
    """The renderer of `WS /api/v1/stream/ws` when an init names none."""
    stream_renderers: tuple[str, ...] = ()
    """Renderers an init may name besides the default (the default is always allowed)."""
    stream_max_sessions: int = 2
    """Streaming sessions at once (one worker process each); one more init is refused with
    `too_many_sessions`."""
    stream_idle_timeout_s: float = 60.0
    """A session (or a socket not yet initialized) that has received no message and produced
    no frame for this long expires (`session_expired`)."""
    stream_render_timeout_s: float = 30.0
    """The longest a session's worker may take to load the source, or go silent while it owes
    frames; then it is killed and the session ends (`render_timeout`)."""
    stream_fps: float = 25.0
    """The frame rate when an init names none (Ditto's own rate)."""
    stream_max_chunk_s: float = 10.0
    """The most audio one `audio_chunk` may carry."""
    stream_max_audio_s: float = 600.0
    """The most audio one session may receive in all."""
    stream_send_queue: int = 60
    """Frames waiting to go out to one WebSocket client; past it the oldest are dropped."""

    # -- WebRTC playback of streaming sessions (control_api/streaming/webrtc.py, whep.py) ------
    webrtc_max_peers_per_session: int = 2
    """WebRTC peers (WHEP or `webrtc_offer`) one streaming session may have; one more is
    refused with 429 too_many_peers."""
    webrtc_max_peers: int = 16
    """WebRTC peers in all; one more is refused with 503 webrtc_busy."""
    webrtc_ice_servers: tuple[str, ...] = ()
    """STUN/TURN URLs for the service's side of ICE (`stun:host:port`, `turn:host:port`).
    None: host candidates only (loopback, a LAN, a machine with a public address)."""
    webrtc_ice_username: str | None = None
    """For the `turn:` servers."""
    webrtc_ice_credential: str | None = field(default=None, repr=False)

    @property
    def stream_allowed(self) -> tuple[str, ...]:
        """The renderers an init may name: the default first."""
        return tuple(dict.fromkeys((self.stream_renderer, *self.stream_renderers)))

    @property
    def stream_max_message_bytes(self) -> int:
        """The largest WebSocket message a streaming client may send: an init with a source of
        up to max_upload_bytes as base64, plus an ordinary body's worth for the rest."""
        return self.max_data_uri_body_bytes

    @property
    def render_service_allowed(self) -> tuple[str, ...]:
        """The renderers a render request may name: the default first."""
        return tuple(dict.fromkeys((self.render_service_renderer, *self.render_service_renderers)))

    @property
    def max_data_uri_body_bytes(self) -> int:
        """The JSON body of a route that takes files inline as data: URIs (the renders'
        image_url and audio_url): files of up to max_upload_bytes together, base64-encoded
        (4 characters for every 3 bytes), plus an ordinary body's worth for the rest."""
        return self.max_body_bytes + 4 * -(-self.max_upload_bytes // 3)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `env` (default: os.environ, after loading `dotenv_path()`).
        ConfigError for a value that cannot work."""
        if env is None:
            path = dotenv_path()
            if path is not None:
                # override=False: variables already set in the shell win over the file.
                load_dotenv(path, override=False)
            environ: MutableMapping[str, str] = os.environ
        else:
            environ = dict(env)
        # Seed 004's DITTO_* names (env_aliases.py) as ours; in the process's own environment
        # when reading it, so that the renderers' settings and the worker processes see them.
        aliases = apply_aliases(environ)
        if aliases.errors:
            raise ConfigError("; ".join(aliases.errors))
        env = environ

        def get(name: str, default: str) -> str:
            # Treat empty values like unset ones so `FOO=` in .env does not blank a setting.
            return env.get(name) or default

        def optional_path(name: str) -> Path | None:
            value = env.get(name)
            return Path(value).expanduser() if value else None

        livekit_url = get("LIVEKIT_URL", DEFAULT_LIVEKIT_URL)
        settings = cls(
            livekit_url=livekit_url,
            public_livekit_url=get("LIVEKIT_PUBLIC_URL", livekit_url),
            livekit_api_key=get("LIVEKIT_API_KEY", DEFAULT_API_KEY),
            livekit_api_secret=get("LIVEKIT_API_SECRET", DEFAULT_API_SECRET),
            agent_name=get("AVATAR_AGENT_NAME", DEFAULT_AGENT_NAME),
            auth=get("AVATAR_API_AUTH", "required").lower(),
            api_keys=_split(env.get("AVATAR_API_KEYS", "")),
            jwt_secret=env.get("AVATAR_API_JWT_SECRET") or None,
            cors_origins=tuple(o.rstrip("/") for o in _split(env.get("AVATAR_CORS_ORIGINS", ""))),
            rate_limit_per_s=_number(env, "AVATAR_API_RATE_LIMIT", 20.0, 0.1, 1e6),
            rate_burst=int(_number(env, "AVATAR_API_RATE_BURST", 40, 1, 1e6)),
            max_sessions=int(_number(env, "AVATAR_MAX_SESSIONS", 10, 1, 10_000)),
            max_upload_bytes=int(
                _number(env, "AVATAR_MAX_UPLOAD_BYTES", 10 * 1024 * 1024, 1024, 1 << 30)
            ),
            session_idle_timeout_s=_number(env, "AVATAR_SESSION_IDLE_TIMEOUT_S", 300, 5, 86400),
            body_idle_timeout_s=_number(env, "AVATAR_BODY_IDLE_TIMEOUT_S", 30, 1, 3600),
            cache_dir=default_cache_dir(),
            backgrounds_dir=optional_path("AVATAR_BACKGROUNDS_DIR"),
            avatars_dir=optional_path("AVATAR_AVATARS_DIR"),
            **_job_settings(env),
            **_render_service_settings(env),
            **_server_settings(env),
            **_stream_settings(env),
            **_webrtc_settings(env),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(
                f"AVATAR_LOG_LEVEL={self.log_level!r} is not valid; "
                f"choose one of: {', '.join(LOG_LEVELS)}"
            )
        if self.auth not in AUTH_MODES:
            raise ConfigError(
                f"AVATAR_API_AUTH={self.auth!r} is not valid; "
                f"choose one of: {', '.join(AUTH_MODES)}"
            )
        if self.jwt_secret is not None and len(self.jwt_secret) < MIN_JWT_SECRET_LENGTH:
            raise ConfigError(
                f"AVATAR_API_JWT_SECRET must be at least {MIN_JWT_SECRET_LENGTH} characters"
            )
        if self.jobs_database_url is not None and not self.jobs_database_url.startswith(
            ("postgresql://", "postgres://")
        ):
            raise ConfigError(
                "AVATAR_JOBS_DATABASE_URL must be a PostgreSQL URL like "
                "postgresql://user:password@host:5432/avatars (unset it for the SQLite store)"
            )
        if self.jobs_files_bucket is not None and not re.fullmatch(
            r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", self.jobs_files_bucket
        ):
            raise ConfigError(
                f"AVATAR_JOBS_S3_BUCKET={self.jobs_files_bucket!r} is not a valid S3 bucket name"
            )
        if self.jobs_public_url is not None and not self.jobs_public_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigError(
                f"AVATAR_JOBS_PUBLIC_URL={self.jobs_public_url!r} is not a URL like "
                "https://avatars.example.com"
            )
        for cidr in self.fetch_allowed_cidrs:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(
                    f"AVATAR_FETCH_ALLOWED_CIDRS entry {cidr!r} is not a network like 10.0.0.0/8"
                ) from None
        known = renderers.available()
        for name, variable in (
            (self.render_service_renderer, "AVATAR_RENDER_SERVICE_RENDERER"),
            *((n, "AVATAR_RENDER_SERVICE_RENDERERS") for n in self.render_service_renderers),
            (self.stream_renderer, "AVATAR_STREAM_RENDERER"),
            *((n, "AVATAR_STREAM_RENDERERS") for n in self.stream_renderers),
        ):
            if name not in known:
                raise ConfigError(
                    f"{variable}: {name!r} is not a renderer; choose from: {', '.join(known)}"
                )
        for origin in self.cors_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ConfigError(
                    f"AVATAR_CORS_ORIGINS entry {origin!r} is not an origin like "
                    "https://app.example.com (or *)"
                )

    @property
    def livekit_http_url(self) -> str:
        """The LiveKit URL with ws(s) swapped for http(s), for plain HTTP probes."""
        url = self.livekit_url
        for ws, http in (("wss://", "https://"), ("ws://", "http://")):
            if url.startswith(ws):
                return http + url[len(ws) :]
        return url


def dotenv_path() -> Path | None:
    """The `.env` file settings are read from: the checkout's root when running from one, else
    the nearest `.env` from the current directory upwards (installed); None when there is none."""
    if CHECKOUT_ROOT is not None:
        return CHECKOUT_ROOT / ".env"
    found = find_dotenv(usecwd=True)
    return Path(found) if found else None


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if not raw:
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw} is out of range ({low:g} to {high:g})")
    return value


class _JobSettings(TypedDict):
    """The offline-job fields of Settings, as `_job_settings` reads them."""

    jobs_db_path: Path | None
    jobs_database_url: str | None
    jobs_files_bucket: str | None
    jobs_files_prefix: str
    jobs_dir: Path | None
    jobs_concurrency: int
    jobs_max_retries: int
    jobs_backoff_s: float
    jobs_backoff_max_s: float
    jobs_timeout_s: float
    jobs_runsync_wait_s: float
    jobs_lease_s: float
    jobs_log_lines: int
    jobs_public_url: str | None
    jobs_url_secret: str | None
    jobs_url_ttl_s: float
    jobs_max_upload_bytes: int
    prepare_min_video_s: float
    prepare_max_video_s: float
    render_max_audio_s: float
    fetch_allow_private: bool
    fetch_allowed_cidrs: tuple[str, ...]
    fetch_max_bytes: int
    fetch_timeout_s: float
    s3_endpoint_url: str | None
    s3_region: str | None
    s3_url_ttl_s: float
    webhook_secret: str | None
    webhook_max_attempts: int
    webhook_backoff_s: float
    webhook_timeout_s: float
    webhook_allow_private: bool


def _job_settings(env: Mapping[str, str]) -> _JobSettings:
    """The offline-job settings (`AVATAR_JOBS_*`, `AVATAR_FETCH_*`, `AVATAR_S3_*`,
    `AVATAR_WEBHOOK_*`), as Settings keyword arguments."""

    def path(name: str) -> Path | None:
        value = env.get(name)
        return Path(value).expanduser() if value else None

    def count(name: str, default: int, low: int, high: int) -> int:
        return int(_number(env, name, default, low, high))

    return {
        "jobs_db_path": path("AVATAR_JOBS_DB"),
        "jobs_database_url": env.get("AVATAR_JOBS_DATABASE_URL") or None,
        "jobs_files_bucket": env.get("AVATAR_JOBS_S3_BUCKET") or None,
        "jobs_files_prefix": "/".join(
            part for part in env.get("AVATAR_JOBS_S3_PREFIX", "").split("/") if part
        ),
        "jobs_dir": path("AVATAR_JOBS_DIR"),
        "jobs_concurrency": count("AVATAR_JOBS_CONCURRENCY", 3, 1, 256),
        "jobs_max_retries": count("AVATAR_JOBS_MAX_RETRIES", 3, 0, 100),
        "jobs_backoff_s": _number(env, "AVATAR_JOBS_BACKOFF_S", 5.0, 0, 86400),
        "jobs_backoff_max_s": _number(env, "AVATAR_JOBS_BACKOFF_MAX_S", 300.0, 0, 86400),
        "jobs_timeout_s": _number(env, "AVATAR_JOBS_TIMEOUT_S", 900.0, 1, 7 * 86400),
        "jobs_runsync_wait_s": _number(env, "AVATAR_JOBS_RUNSYNC_WAIT_S", 90.0, 0, 3600),
        "jobs_lease_s": _number(env, "AVATAR_JOBS_LEASE_S", 30.0, 2, 3600),
        "jobs_log_lines": count("AVATAR_JOBS_LOG_LINES", 200, 10, 100_000),
        "jobs_public_url": (env.get("AVATAR_JOBS_PUBLIC_URL") or "").rstrip("/") or None,
        "jobs_url_secret": env.get("AVATAR_JOBS_URL_SECRET") or None,
        "jobs_url_ttl_s": _number(env, "AVATAR_JOBS_URL_TTL_S", 86400.0, 60, 365 * 86400),
        "jobs_max_upload_bytes": count(
            "AVATAR_JOBS_MAX_UPLOAD_BYTES", 100 * 1024 * 1024, 1024, 1 << 40
        ),
        "prepare_min_video_s": _number(env, "AVATAR_JOBS_MIN_VIDEO_S", 3.0, 0, 86400),
        "prepare_max_video_s": _number(env, "AVATAR_JOBS_MAX_VIDEO_S", 300.0, 1, 86400),
        "render_max_audio_s": _number(env, "AVATAR_JOBS_MAX_AUDIO_S", 300.0, 1, 86400),
        "fetch_allow_private": _flag(env, "AVATAR_FETCH_ALLOW_PRIVATE"),
        "fetch_allowed_cidrs": _split(env.get("AVATAR_FETCH_ALLOWED_CIDRS", "")),
        "fetch_max_bytes": count("AVATAR_FETCH_MAX_BYTES", 1 << 30, 1024, 1 << 40),
        "fetch_timeout_s": _number(env, "AVATAR_FETCH_TIMEOUT_S", 300.0, 1, 86400),
        "s3_endpoint_url": env.get("AVATAR_S3_ENDPOINT_URL") or None,
        "s3_region": env.get("AVATAR_S3_REGION") or None,
        "s3_url_ttl_s": _number(env, "AVATAR_S3_URL_TTL_S", 7 * 86400.0, 60, 7 * 86400),
        "webhook_secret": env.get("AVATAR_WEBHOOK_SECRET") or None,
        "webhook_max_attempts": count("AVATAR_WEBHOOK_MAX_ATTEMPTS", 5, 1, 100),
        "webhook_backoff_s": _number(env, "AVATAR_WEBHOOK_BACKOFF_S", 2.0, 0, 86400),
        "webhook_timeout_s": _number(env, "AVATAR_WEBHOOK_TIMEOUT_S", 10.0, 0.5, 600),
        "webhook_allow_private": _flag(env, "AVATAR_WEBHOOK_ALLOW_PRIVATE"),
    }


class _RenderServiceSettings(TypedDict):
    """The render service's fields of Settings, as `_render_service_settings` reads them."""

    render_service_renderer: str
    render_service_renderers: tuple[str, ...]
    render_service_workers: int
    render_service_queue: int
    render_service_max_batch: int
    render_service_cache: int
    render_service_timeout_s: float
    render_service_warmup: bool


def _render_service_settings(env: Mapping[str, str]) -> _RenderServiceSettings:
    """The single-frame render service's settings (`AVATAR_RENDER_SERVICE_*`)."""

    def count(name: str, default: int, low: int, high: int) -> int:
        return int(_number(env, name, default, low, high))

    return {
        # liveportrait once its weights are configured, else the weights-free default
        "render_service_renderer": env.get("AVATAR_RENDER_SERVICE_RENDERER")
        or ("liveportrait" if env.get("AVATAR_LIVEPORTRAIT_DIR") else "meshwarp"),
        "render_service_renderers": _split(env.get("AVATAR_RENDER_SERVICE_RENDERERS", "")),
        "render_service_workers": count("AVATAR_RENDER_SERVICE_WORKERS", 1, 1, 64),
        "render_service_queue": count("AVATAR_RENDER_SERVICE_QUEUE", 16, 0, 10_000),
        "render_service_max_batch": count(
            "AVATAR_RENDER_SERVICE_MAX_BATCH", DEFAULT_MAX_BATCH, 1, 64
        ),
        "render_service_cache": count("AVATAR_RENDER_SERVICE_CACHE", 8, 1, 1024),
        "render_service_timeout_s": _number(env, "AVATAR_RENDER_SERVICE_TIMEOUT_S", 30.0, 1, 3600),
        "render_service_warmup": _flag(env, "AVATAR_RENDER_SERVICE_WARMUP", default=True),
    }


class _StreamSettings(TypedDict):
    """The streaming fields of Settings, as `_stream_settings` reads them."""

    stream_renderer: str
    stream_renderers: tuple[str, ...]
    stream_max_sessions: int
    stream_idle_timeout_s: float
    stream_render_timeout_s: float
    stream_fps: float
    stream_max_chunk_s: float
    stream_max_audio_s: float
    stream_send_queue: int


def _stream_settings(env: Mapping[str, str]) -> _StreamSettings:
    """Frame streaming's settings (`AVATAR_STREAM_*`, docs/streaming.md)."""
    return {
        "stream_renderer": env.get("AVATAR_STREAM_RENDERER") or "meshwarp",
        "stream_renderers": _split(env.get("AVATAR_STREAM_RENDERERS", "")),
        "stream_max_sessions": int(_number(env, "AVATAR_STREAM_MAX_SESSIONS", 2, 1, 1024)),
        "stream_idle_timeout_s": _number(env, "AVATAR_STREAM_IDLE_TIMEOUT_S", 60.0, 1, 86400),
        "stream_render_timeout_s": _number(env, "AVATAR_STREAM_RENDER_TIMEOUT_S", 30.0, 1, 3600),
        "stream_fps": _number(env, "AVATAR_STREAM_FPS", 25.0, 1, 60),
        "stream_max_chunk_s": _number(env, "AVATAR_STREAM_MAX_CHUNK_S", 10.0, 0.1, 600),
        "stream_max_audio_s": _number(env, "AVATAR_STREAM_MAX_AUDIO_S", 600.0, 1, 86400),
        "stream_send_queue": int(_number(env, "AVATAR_STREAM_SEND_QUEUE", 60, 1, 10_000)),
    }


class _ServerSettings(TypedDict):
    """The server, GPU and logging fields of Settings, as `_server_settings` reads them."""

    host: str
    port: int
    gpu_id: int | None
    log_level: str
    enable_console_logging: bool
    enable_file_logging: bool
    log_dir: Path | None


def _server_settings(env: Mapping[str, str]) -> _ServerSettings:
    """`AVATAR_HOST`, `AVATAR_PORT`, `AVATAR_GPU_ID` and `AVATAR_LOG_*` (seed 004's
    DITTO_HOST, DITTO_PORT, DITTO_GPU_ID and logging variables, env_aliases.py)."""
    level = (env.get("AVATAR_LOG_LEVEL") or env.get("LOG_LEVEL") or "INFO").strip().upper()
    log_dir = env.get("AVATAR_LOG_DIR")
    return {
        "host": (env.get("AVATAR_HOST") or "").strip() or "127.0.0.1",
        "port": int(_number(env, "AVATAR_PORT", 8080, 1, 65535)),
        "gpu_id": int(_number(env, "AVATAR_GPU_ID", 0, 0, 1023))
        if env.get("AVATAR_GPU_ID")
        else None,
        "log_level": "WARNING" if level == "WARN" else level,
        "enable_console_logging": _flag(env, "AVATAR_LOG_CONSOLE", default=True),
        "enable_file_logging": _flag(env, "AVATAR_LOG_FILE", default=True),
        "log_dir": Path(log_dir).expanduser() if log_dir else None,
    }


class _WebRtcSettings(TypedDict):
    """The WebRTC fields of Settings, as `_webrtc_settings` reads them."""

    webrtc_max_peers_per_session: int
    webrtc_max_peers: int
    webrtc_ice_servers: tuple[str, ...]
    webrtc_ice_username: str | None
    webrtc_ice_credential: str | None


def _webrtc_settings(env: Mapping[str, str]) -> _WebRtcSettings:
    """WebRTC playback's settings (`AVATAR_WEBRTC_*`, docs/streaming.md)."""
    servers = _split(env.get("AVATAR_WEBRTC_ICE_SERVERS", ""))
    for url in servers:
        if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
            raise ConfigError(
                f"AVATAR_WEBRTC_ICE_SERVERS entry {url!r} is not a URL like stun:host:3478 "
                "or turn:host:3478"
            )
    return {
        "webrtc_max_peers_per_session": int(
            _number(env, "AVATAR_WEBRTC_MAX_PEERS_PER_SESSION", 2, 1, 64)
        ),
        "webrtc_max_peers": int(_number(env, "AVATAR_WEBRTC_MAX_PEERS", 16, 1, 10_000)),
        "webrtc_ice_servers": servers,
        "webrtc_ice_username": env.get("AVATAR_WEBRTC_ICE_USERNAME") or None,
        "webrtc_ice_credential": env.get("AVATAR_WEBRTC_ICE_CREDENTIAL") or None,
    }


def _flag(env: Mapping[str, str], name: str, *, default: bool = False) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}={raw!r} is not a boolean (true or false)")
