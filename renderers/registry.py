"""Renderers by name. Entries are import paths, so a renderer's heavy dependencies (torch,
onnxruntime, mediapipe) are imported only when that renderer is chosen."""

from __future__ import annotations

import importlib

from .base import Renderer, RendererError, VideoFormat

_REGISTRY: dict[str, str] = {
    "ditto": "renderers.ditto.renderer:DittoRenderer",
    "liveportrait": "renderers.liveportrait.renderer:LivePortraitRenderer",
    "meshwarp": "renderers.meshwarp:MeshwarpRenderer",
    "musetalk": "renderers.musetalk.renderer:MuseTalkRenderer",
    "testcard": "renderers.testcard:TestcardRenderer",
    "wav2lip": "renderers.wav2lip.renderer:Wav2LipRenderer",
}


class UnknownRendererError(RendererError):
    def __init__(self, name: str) -> None:
        super().__init__(
            "unknown_renderer",
            f"unknown renderer '{name}'; available: {', '.join(available())}",
        )


def register(name: str, import_path: str) -> None:
    """Register a renderer as 'package.module:ClassName' (third-party renderers too)."""
    _REGISTRY[name] = import_path


def available() -> list[str]:
    return sorted(_REGISTRY)


def renderer_class(name: str) -> type[Renderer]:
    try:
        import_path = _REGISTRY[name]
    except KeyError:
        raise UnknownRendererError(name) from None
    module_name, _, class_name = import_path.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Renderer)):
        raise RendererError("invalid_renderer", f"{import_path} is not a Renderer subclass")
    return cls


def unavailable_reason(name: str) -> str | None:
    """Why renderer `name` cannot load here, or None when it can (see Renderer)."""
    try:
        return renderer_class(name).unavailable_reason()
    except RendererError as error:
        return error.message
    except ImportError as error:  # an optional dependency of that renderer is missing
        return f"cannot import renderer '{name}': {error}"


def create(name: str, video: VideoFormat | None = None) -> Renderer:
    return renderer_class(name)(video or VideoFormat())
