"""Worker configuration from the environment (and an optional .env), validated up front.

Every problem a person can fix is reported as one `ConfigError` line before the worker starts,
instead of a traceback from deep inside a job minutes later.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import find_dotenv, load_dotenv

from .capacity import default_worker_sessions

DEFAULT_LIVEKIT_URL = "ws://127.0.0.1:7880"
DEFAULT_API_KEY = "devkey"
DEFAULT_API_SECRET = "avatar-agents-local-dev-secret-0123456789"
DEFAULT_RENDERER = "meshwarp"
AVATAR_MODES = ("inprocess", "remote")


class ConfigError(Exception):
    """A configuration problem, worded as one line a person can act on."""


@dataclass(frozen=True)
class Settings:
    livekit_url: str = DEFAULT_LIVEKIT_URL
    api_key: str = DEFAULT_API_KEY
    api_secret: str = DEFAULT_API_SECRET
    renderer: str = DEFAULT_RENDERER
    source: Path | None = None
    agent_name: str = "avatar-agent"
    avatar_mode: str = "inprocess"
    avatar_worker_name: str = "avatar-renderer"
    width: int = 512
    height: int = 512
    fps: float = 30.0
    audio_sample_rate: int = 24000
    greeting: str = "Hello! I am your avatar. Type a message and I will say it."
    worker_sessions: int = 4
    """The most sessions a worker runs at once (agent/capacity.py)."""
    render_timeout_s: float = 3.0
    """A render call that takes longer is given up as hung (avatar_runtime.generator): the
    session shows its idle picture, reports `renderer_error` and tries the renderer again."""
    extra_renderers: tuple[tuple[str, str], ...] = ()
    """`AVATAR_RENDERERS`: renderers of your own, `(name, "module:Class")`, registered in every
    process of the worker (its job processes too) before the renderer is chosen."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        if env is None:
            load_dotenv(dotenv_path(), override=False)  # real variables win over .env
            env = os.environ
        source = env.get("AVATAR_SOURCE") or None
        # Registered first: AVATAR_RENDERER may name one of them.
        extra_renderers = register_renderers(env.get("AVATAR_RENDERERS", ""))
        settings = cls(
            livekit_url=env.get("LIVEKIT_URL", DEFAULT_LIVEKIT_URL),
            api_key=env.get("LIVEKIT_API_KEY", DEFAULT_API_KEY),
            api_secret=env.get("LIVEKIT_API_SECRET", DEFAULT_API_SECRET),
            renderer=env.get("AVATAR_RENDERER", DEFAULT_RENDERER),
            source=Path(source).expanduser() if source else None,
            agent_name=env.get("AVATAR_AGENT_NAME", "avatar-agent"),
            avatar_mode=env.get("AVATAR_MODE", "inprocess"),
            avatar_worker_name=env.get("AVATAR_WORKER_NAME", "avatar-renderer"),
            worker_sessions=_int(env, "AVATAR_WORKER_SESSIONS", default_worker_sessions(), 1, 256),
            width=_int(env, "AVATAR_WIDTH", 512, 64, 1920),
            height=_int(env, "AVATAR_HEIGHT", 512, 64, 1080),
            fps=float(_int(env, "AVATAR_FPS", 30, 1, 60)),
            audio_sample_rate=_int(env, "AVATAR_AUDIO_RATE", 24000, 8000, 48000),
            greeting=env.get("AVATAR_GREETING", cls.greeting),
            render_timeout_s=_float(env, "AVATAR_RENDER_TIMEOUT_S", 3.0, 0.1, 600.0),
            extra_renderers=extra_renderers,
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        from renderers import available

        if self.renderer not in available():
            raise ConfigError(
                f"AVATAR_RENDERER={self.renderer!r} is not a renderer; "
                f"choose one of: {', '.join(available())}"
            )
        if self.source is not None and not self.source.exists():
            raise ConfigError(f"AVATAR_SOURCE={str(self.source)!r} does not exist")
        if self.avatar_mode not in AVATAR_MODES:
            raise ConfigError(
                f"AVATAR_MODE={self.avatar_mode!r} is not valid; choose one of: "
                + ", ".join(AVATAR_MODES)
            )
        if not self.livekit_url.startswith(("ws://", "wss://", "http://", "https://")):
            raise ConfigError(f"LIVEKIT_URL={self.livekit_url!r} must start with ws:// or wss://")
        if self.width % 2 or self.height % 2:
            raise ConfigError("AVATAR_WIDTH and AVATAR_HEIGHT must be even (video codecs need it)")


def register_renderers(spec: str) -> tuple[tuple[str, str], ...]:
    """Register the renderers `AVATAR_RENDERERS` names, `name=package.module:Class` separated
    by commas (a third-party renderer, or the tests' fault-injecting `faultcard`). Only the
    import path is recorded here; the class is imported when the renderer is chosen."""
    from renderers import register

    entries = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, path = item.partition("=")
        name, path = name.strip(), path.strip()
        module, _, cls = path.partition(":")
        if not name or not module or not cls:
            raise ConfigError(
                f"AVATAR_RENDERERS entry {item!r} must be name=package.module:ClassName"
            )
        register(name, path)
        entries.append((name, path))
    return tuple(entries)


def dotenv_path() -> str | None:
    """The `.env` to read, by the control API's rule: the checkout's when running from one,
    else the nearest from the current directory upwards (an installed worker)."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        return str(checkout / ".env")
    return find_dotenv(usecwd=True) or None


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} must be a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} must be between {low} and {high}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} must be a number") from None
    if not low <= value <= high:  # also refuses nan
        raise ConfigError(f"{name}={value:g} must be between {low:g} and {high:g}")
    return value


def http_url(livekit_url: str) -> str:
    return livekit_url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)


def check_livekit_reachable(livekit_url: str, timeout_s: float = 3.0) -> None:
    """livekit-server answers plain HTTP on its signalling port; fail fast when it does not."""
    try:
        with urllib.request.urlopen(http_url(livekit_url), timeout=timeout_s):
            return
    except urllib.error.HTTPError:
        return  # something answered: the server is there, whatever it thought of the request
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ConfigError(
            f"cannot reach LiveKit at {livekit_url} ({reason}); start livekit-server "
            "(make demo does) or set LIVEKIT_URL to a reachable server"
        ) from None
