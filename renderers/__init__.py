"""Renderers: one package per renderer behind one interface. Pure compute; imports nothing
from the rest of the project."""

from .base import (
    Expression,
    FrameRequest,
    Renderer,
    RendererCapabilities,
    RendererError,
    VideoFormat,
)
from .errors import CodedError
from .registry import (
    UnknownRendererError,
    available,
    create,
    register,
    renderer_class,
    unavailable_reason,
)

__all__ = [
    "CodedError",
    "Expression",
    "FrameRequest",
    "Renderer",
    "RendererCapabilities",
    "RendererError",
    "UnknownRendererError",
    "VideoFormat",
    "available",
    "create",
    "register",
    "renderer_class",
    "unavailable_reason",
]
