"""Seed 004's configuration names (the Ditto talking-head API's `DITTO_*` variables) as aliases
of ours, so that an operator's `.env` for that API configures this one.

| seed 004 name | our name(s) | values |
| --- | --- | --- |
| `DITTO_INFERENCE_BACKEND` | `AVATAR_{DITTO,LIVEPORTRAIT,WAV2LIP}_BACKEND` | (below) |
| `DITTO_HOST` | `AVATAR_HOST` | bind address |
| `DITTO_PORT` | `AVATAR_PORT` | bind port |
| `DITTO_GPU_ID` | `AVATAR_GPU_ID` | the GPU's index (as nvidia-smi numbers them) |
| `DITTO_MAX_CONCURRENT_SESSIONS` | `AVATAR_STREAM_MAX_SESSIONS` | streaming sessions at once |
| `DITTO_CORS_ORIGINS` | `AVATAR_CORS_ORIGINS` | comma-separated origins |
| `DITTO_LOG_LEVEL` | `AVATAR_LOG_LEVEL` | DEBUG, INFO, WARNING, ERROR, CRITICAL |
| `DITTO_ENABLE_CONSOLE_LOGGING` | `AVATAR_LOG_CONSOLE` | true or false |
| `DITTO_ENABLE_FILE_LOGGING` | `AVATAR_LOG_FILE` | true or false |

The back end: `pytorch` (our `torch`) or `tensorrt`, as the seed has them; also our `torch`,
`onnx` and `auto`.

Our name wins when both are set (a warning names the two, once). `apply_aliases` writes our
names into an environment: `Settings.from_env` applies it to the process's own environment
(after `.env` is loaded), so the renderers' settings and every worker process read our names;
`jobs.runner.worker_env` applies it to a worker's environment too. docs/control-api.md has the
table ("Seed 004 configuration names").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field

log = logging.getLogger("control_api")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_BACKENDS = {
    "pytorch": "torch",
    "torch": "torch",
    "tensorrt": "tensorrt",
    "onnx": "onnx",
    "auto": "auto",
}
_FLAGS = ("1", "true", "yes", "on", "0", "false", "no", "off")


def _backend(value: str) -> str | None:
    return _BACKENDS.get(value.lower())


def _integer(low: int, high: int) -> Callable[[str], str | None]:
    def convert(value: str) -> str | None:
        try:
            number = int(value)
        except ValueError:
            return None
        return str(number) if low <= number <= high else None

    return convert


def _flag(value: str) -> str | None:
    return value.lower() if value.lower() in _FLAGS else None


def _level(value: str) -> str | None:
    upper = value.upper()
    upper = "WARNING" if upper == "WARN" else upper
    return upper if upper in LOG_LEVELS else None


def _same(value: str) -> str | None:
    return value


@dataclass(frozen=True)
class Alias:
    seed: str
    """Seed 004's name."""
    ours: tuple[str, ...]
    """The variable(s) it sets."""
    accepts: str
    """What it accepts, for the error message."""
    convert: Callable[[str], str | None] = _same
    """Its value in our terms; None for a value it does not accept."""


ALIASES: tuple[Alias, ...] = (
    Alias(
        "DITTO_INFERENCE_BACKEND",
        ("AVATAR_DITTO_BACKEND", "AVATAR_LIVEPORTRAIT_BACKEND", "AVATAR_WAV2LIP_BACKEND"),
        "pytorch or tensorrt (or torch, onnx, auto)",
        _backend,
    ),
    Alias("DITTO_HOST", ("AVATAR_HOST",), "a bind address"),
    Alias("DITTO_PORT", ("AVATAR_PORT",), "a port number (1 to 65535)", _integer(1, 65535)),
    Alias("DITTO_GPU_ID", ("AVATAR_GPU_ID",), "a GPU index (0, 1, ...)", _integer(0, 1023)),
    Alias(
        "DITTO_MAX_CONCURRENT_SESSIONS",
        ("AVATAR_STREAM_MAX_SESSIONS",),
        "a number of sessions (1 or more)",
        _integer(1, 1024),
    ),
    Alias("DITTO_CORS_ORIGINS", ("AVATAR_CORS_ORIGINS",), "comma-separated origins"),
    Alias("DITTO_LOG_LEVEL", ("AVATAR_LOG_LEVEL",), "one of " + ", ".join(LOG_LEVELS), _level),
    Alias("DITTO_ENABLE_CONSOLE_LOGGING", ("AVATAR_LOG_CONSOLE",), "true or false", _flag),
    Alias("DITTO_ENABLE_FILE_LOGGING", ("AVATAR_LOG_FILE",), "true or false", _flag),
)


@dataclass
class Applied:
    """What `apply_aliases` did."""

    assigned: dict[str, str] = field(default_factory=dict)
    """Our names it set, each to the seed name it came from."""
    overridden: dict[str, str] = field(default_factory=dict)
    """Seed names ignored because our name was set to something else, by our name."""
    errors: list[str] = field(default_factory=list)
    """Seed names whose value is not one they accept, as messages naming them."""


_warned: set[tuple[str, str, str, str]] = set()


def apply_aliases(env: MutableMapping[str, str]) -> Applied:
    """Set our names in `env` from the seed 004 names there, where ours are unset or empty.
    A seed value that is not valid is left out and reported in `errors`; our name set to
    something else wins, with a warning (once per pair of values)."""
    applied = Applied()
    for alias in ALIASES:
        raw = (env.get(alias.seed) or "").strip()
        if not raw:
            continue
        value = alias.convert(raw)
        if value is None:
            applied.errors.append(f"{alias.seed}={raw!r} is not valid; use {alias.accepts}")
            continue
        for ours in alias.ours:
            current = (env.get(ours) or "").strip()
            if not current:
                env[ours] = value
                applied.assigned[ours] = alias.seed
            elif current != value and current.lower() != value.lower():
                applied.overridden[ours] = alias.seed
                key = (alias.seed, raw, ours, current)
                if key not in _warned:
                    _warned.add(key)
                    log.warning(
                        "%s=%s and %s=%s are both set; using %s (our name wins over seed 004's)",
                        alias.seed,
                        raw,
                        ours,
                        current,
                        ours,
                    )
    return applied


def seed_names() -> dict[str, tuple[str, ...]]:
    """Each seed 004 name with the names of ours it sets (for docs and tests)."""
    return {alias.seed: alias.ours for alias in ALIASES}
