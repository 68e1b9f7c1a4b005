"""Settings for the control API, read from the environment plus an optional `.env`.

docs/control-api.md lists every variable; this module is the one place that reads them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from dotenv import load_dotenv

from renderers.cache import cache_dir

REPO_ROOT = Path(__file__).resolve().parent.parent

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
    client_dir: Path = REPO_ROOT / "client_demo"

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
    max_body_bytes: int = 64 * 1024
    max_say_chars: int = 1000
    session_idle_timeout_s: float = 300.0
    """A session nobody (but the agent) has been in for this long is closed."""
    rpc_timeout_s: float = 5.0

    # -- storage -------------------------------------------------------------------------------
    cache_dir: Path = field(default_factory=default_cache_dir)
    backgrounds_dir: Path | None = None
    """None: avatar_runtime's default ($AVATAR_BACKGROUNDS_DIR or the cache)."""
    avatars_dir: Path | None = None
    """None: avatar_runtime's default ($AVATAR_AVATARS_DIR or the cache)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `env` (default: os.environ, after loading the repo's `.env`).
        ConfigError for a value that cannot work."""
        if env is None:
            # override=False: variables already set in the shell win over the file.
            load_dotenv(REPO_ROOT / ".env", override=False)
            env = os.environ

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
            cache_dir=default_cache_dir(),
            backgrounds_dir=optional_path("AVATAR_BACKGROUNDS_DIR"),
            avatars_dir=optional_path("AVATAR_AVATARS_DIR"),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.auth not in AUTH_MODES:
            raise ConfigError(
                f"AVATAR_API_AUTH={self.auth!r} is not valid; "
                f"choose one of: {', '.join(AUTH_MODES)}"
            )
        if self.jwt_secret is not None and len(self.jwt_secret) < MIN_JWT_SECRET_LENGTH:
            raise ConfigError(
                f"AVATAR_API_JWT_SECRET must be at least {MIN_JWT_SECRET_LENGTH} characters"
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
