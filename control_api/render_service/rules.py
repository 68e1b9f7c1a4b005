"""What a render request may ask for: the validators (routes.py) and the OpenAPI document
(openapi.py) are both built from these."""

from __future__ import annotations

FORMATS = ("png", "jpeg", "webp")
MIN_SIZE = 64
MAX_SIZE = 1024
DEFAULT_SIZE = 512
DEFAULT_INTENSITY = 0.7
DEFAULT_EMOTION = "neutral"
DEFAULT_FORMAT = "png"
DEFAULT_MAX_BATCH = 16
"""`AVATAR_RENDER_SERVICE_MAX_BATCH`'s default, which the OpenAPI document states."""
