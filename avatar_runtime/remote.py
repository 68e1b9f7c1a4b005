"""What an agent asks of the avatar worker it dispatches (remote mode), as job metadata.

In remote mode the agent's `AvatarSession` dispatches an avatar worker (the project's
`agent/avatar_worker.py`, registered as `avatar-renderer` by default) into its room with a
`RemoteAvatarRequest` as the dispatch's metadata (JSON). The worker joins as
`avatar_identity`, marked with `lk.publish_on_behalf` = `agent_identity` so front ends show it
as the agent's face, receives the agent's speech over LiveKit data streams and publishes the
avatar. Everything but the two identities is optional: what is left out, the worker takes from
its own configuration (`AVATAR_RENDERER`, `AVATAR_WIDTH`, ...). The avatar is named by its id
in the worker's avatar catalog, never by a path: paths are machine-local.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF

from .avatars import DEFAULT_AVATAR

PUBLISH_ON_BEHALF = ATTRIBUTE_PUBLISH_ON_BEHALF
"""`lk.publish_on_behalf`: set on the avatar worker's participant to the agent's identity."""
DEFAULT_WORKER_NAME = "avatar-renderer"
"""The agent name the avatar worker registers under unless told otherwise."""

_INTS = {"width": (64, 1920), "height": (64, 1080)}
_FPS = (1.0, 60.0)


@dataclass(frozen=True)
class RemoteAvatarRequest:
    agent_identity: str
    avatar_identity: str
    avatar_id: str = DEFAULT_AVATAR
    renderer: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    emotion: str | None = None
    intensity: float | None = None
    background: str | None = None
    name: str | None = None
    """The avatar participant's display name."""

    def __post_init__(self) -> None:
        for key in ("agent_identity", "avatar_identity", "avatar_id"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value:
                raise ValueError(f"avatar dispatch metadata needs {key} (a non-empty string)")
        for key in ("renderer", "emotion", "background", "name"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"avatar dispatch metadata: {key} must be a string")
        for key, (low, high) in _INTS.items():
            value = getattr(self, key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(
                    f"avatar dispatch metadata: {key} must be a whole number from {low} to {high}"
                )
            if value % 2:
                raise ValueError(f"avatar dispatch metadata: {key} must be even")
        for key, (least, most) in (("fps", _FPS), ("intensity", (0.0, 1.0))):
            value = getattr(self, key)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not least <= value <= most
            ):
                raise ValueError(
                    f"avatar dispatch metadata: {key} must be from {least:g} to {most:g}"
                )

    def to_metadata(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def from_metadata(cls, raw: str | None) -> RemoteAvatarRequest:
        """Parse a dispatch's metadata; ValueError naming what is wrong."""
        try:
            meta: Any = json.loads(raw or "{}")
        except ValueError:
            raise ValueError("avatar dispatch metadata is not JSON") from None
        if not isinstance(meta, dict):
            raise ValueError("avatar dispatch metadata must be a JSON object")
        known = set(cls.__dataclass_fields__)
        # Unknown keys are ignored: a newer agent may ask for more than this worker knows.
        return cls(**{k: v for k, v in meta.items() if k in known})


__all__ = ["DEFAULT_WORKER_NAME", "PUBLISH_ON_BEHALF", "RemoteAvatarRequest"]
