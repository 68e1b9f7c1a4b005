"""Control API: a small aiohttp service that mints LiveKit tokens and serves the demo page."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .config import Settings

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    # Imported on first use: job worker processes (`python -m control_api.jobs.worker`) import
    # this package too, and must not pay for the web app and LiveKit imports on every job.
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "Settings":
        from .config import Settings

        return Settings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
