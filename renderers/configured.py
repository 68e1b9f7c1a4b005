"""Renderers configured by settings read from the environment (`AVATAR_<RENDERER>_*`): what
health checks ask of them (unavailable_reason, describe, checkpoints) comes from the settings
alone, without loading a model. A renderer names its settings class in `settings_type`."""

from __future__ import annotations

from typing import Any, ClassVar

from .base import Renderer, RendererError


class ConfiguredRenderer(Renderer):
    settings_type: ClassVar[Any]
    """The settings class: `from_env()`, `unavailable_reason()`, `checkpoints()`, and with no
    arguments the settings of nothing configured (what checkpoints() lists when a setting is
    bad)."""

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            settings = cls.settings_type.from_env()
        except RendererError as error:
            return error.message
        reason: str | None = settings.unavailable_reason()
        return reason

    @classmethod
    def describe(cls) -> dict[str, object]:
        """The configured back end and device, as health reports them (nothing is loaded)."""
        try:
            settings = cls.settings_type.from_env()
        except RendererError:
            return {}
        return cls.describe_settings(settings)

    @classmethod
    def describe_settings(cls, settings: Any) -> dict[str, object]:
        """What describe() reports of valid settings."""
        return dict(settings.describe())

    @classmethod
    def checkpoints(cls) -> dict[str, object] | None:
        try:
            found: dict[str, object] = cls.settings_type.from_env().checkpoints()
        except RendererError:  # a bad setting: unavailable_reason names it
            found = cls.settings_type().checkpoints()
        return found
