"""Control API: a small aiohttp service that mints LiveKit tokens and serves the demo page."""

from .app import create_app
from .config import Settings

__all__ = ["Settings", "create_app"]
