"""Which avatar a job shows: the `avatar_id` in its dispatch metadata, resolved on this machine.

The control API dispatches the agent with job metadata `{"avatar_id": ..., "session_id": ...}`;
in remote mode the agent forwards the id (not a path: paths are machine-local) to the avatar
worker in that worker's dispatch metadata. Both resolve it here, the same way: `default`, no id
at all or unreadable metadata give the configured `AVATAR_SOURCE`; an id from the avatar catalog
gives its portrait; an unknown id is logged as an error and the job goes on with the configured
source rather than failing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from avatar_runtime import DEFAULT_AVATAR, AvatarCatalog
from renderers import RendererError

logger = logging.getLogger("avatar-agent")

AVATAR_ID_KEY = "avatar_id"


def requested_avatar_id(metadata: str | None) -> str:
    """The `avatar_id` job metadata asks for; `default` when it names none or cannot be read."""
    if not metadata:
        return DEFAULT_AVATAR
    try:
        meta = json.loads(metadata)
    except ValueError:
        logger.error("job metadata is not JSON; using the default avatar")
        return DEFAULT_AVATAR
    if not isinstance(meta, dict) or meta.get(AVATAR_ID_KEY) is None:
        return DEFAULT_AVATAR
    avatar_id = meta[AVATAR_ID_KEY]
    if not isinstance(avatar_id, str):
        logger.error("job metadata's avatar_id is not a string; using the default avatar")
        return DEFAULT_AVATAR
    return avatar_id


def avatar_source(
    avatar_id: str, default: Path | None, catalog: AvatarCatalog | None = None
) -> Path | None:
    """The source to render for `avatar_id`: `default` (the configured AVATAR_SOURCE) for the
    `default` id and for ids the catalog does not know (logged), else the catalog's path."""
    catalog = catalog if catalog is not None else AvatarCatalog()
    try:
        source = catalog.resolve(avatar_id)
    except KeyError:
        logger.error(
            "unknown avatar_id %r (not in %s); using the default avatar",
            avatar_id[:80],
            catalog.directory,
        )
        return default
    return default if source is None else source


def job_avatar_source(metadata: str | None, default: Path | None) -> Path | None:
    """`avatar_source` of the id that job metadata asks for."""
    return avatar_source(requested_avatar_id(metadata), default)


T = TypeVar("T")


async def with_default_avatar(
    start: Callable[[Path | None], Awaitable[T]], source: Path | None, default: Path | None
) -> T:
    """`start(source)`; when the renderer cannot load `source` (RendererError), log it and
    `start(default)` instead, so a bad catalog entry does not end the session."""
    try:
        return await start(source)
    except RendererError as error:
        if source == default:
            raise
        logger.error("cannot load avatar %s (%s); using the default avatar", source, error)
        return await start(default)
