"""The catalog of avatars a session may be started with, by id.

An avatar id names a portrait source for the renderer:

* `default`: whatever the agent is configured with (`AVATAR_SOURCE`, else the renderer's own
  default); `resolve` answers None for it;
* `<id>.png`, `<id>.jpg`, `<id>.jpeg` or `<id>.webp` in the avatars directory (a portrait), or
  `<id>/` there (an avatar package, as a preparation job makes one);
* the portraits bundled with the package (`renderers/assets/portraits/`: `astronaut`), unless the
  directory has an entry with the same id.

Renderers keep what they prepare from a portrait under `$AVATAR_CACHE/avatars/<renderer>/`
(meshwarp does), so a directory named after a registered renderer is not an avatar package.

The directory is `AVATAR_AVATARS_DIR`, else `$AVATAR_CACHE/avatars`, so every process pointed
at it (the control API that lists the ids, the workers that render them) sees the same set.
Ids are 1 to 64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit, so an id
can never name a path outside the directory; an entry that is a symbolic link is followed only
while it stays inside the directory it is listed in.

Ids are lower case, but a lookup takes them in any case (`canonical_id`): seed 000's avatar ids
are UUIDs, which clients write in upper case too ("3F2504E0-4F89-11D3-9A0C-0305E82C3301"), and a
preparation job installs such an avatar under its lower-case id, so either spelling finds it.
Only ASCII letters fold, and only in an id that already follows the rule but for case.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import renderers
from renderers.bundled import PORTRAITS_DIR
from renderers.cache import cache_dir

from .backgrounds import ID_PATTERN

DEFAULT_AVATAR = "default"
ANY_CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""An id in any case: `canonical_id` lower-cases these (control_api/jobs/storage.py repeats it)."""
BUNDLED_PORTRAITS_DIR = PORTRAITS_DIR
"""The portraits shipped inside the package (renderers' package data)."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
"""Portrait files, in the order `resolve` prefers them when one id has several; an avatar
package (`<id>/`) comes after all of them."""


def canonical_id(avatar_id: str) -> str:
    """The catalog's spelling of `avatar_id`: lower case when it is an id in any case
    (`ANY_CASE_ID`), else unchanged (and then no id the catalog has)."""
    if isinstance(avatar_id, str) and ANY_CASE_ID.fullmatch(avatar_id):
        return avatar_id.lower()
    return avatar_id


def default_avatars_dir() -> Path:
    """`AVATAR_AVATARS_DIR`, else `$AVATAR_CACHE/avatars`."""
    explicit = os.environ.get("AVATAR_AVATARS_DIR")
    if explicit:
        return Path(explicit).expanduser()
    return cache_dir() / "avatars"


class AvatarCatalog:
    """Avatar ids and the sources they name: `directory` (default `default_avatars_dir()`)
    first, then `bundled_dir` (default: the portraits shipped in the package).

    Nothing is cached: every call reads the directories, so an avatar added by another process
    is there on the next call.
    """

    def __init__(self, directory: Path | None = None, bundled_dir: Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_avatars_dir()
        self.bundled_dir = Path(bundled_dir) if bundled_dir is not None else BUNDLED_PORTRAITS_DIR

    def ids(self) -> list[str]:
        """Every id `resolve` accepts: `default` first, then the others sorted."""
        found: set[str] = set()
        for root in (self.directory, self.bundled_dir):
            try:
                names = [path.name for path in root.iterdir()]
            except OSError:  # missing, or not a directory
                continue
            for name in names:
                avatar_id = _id_of(name)
                if avatar_id is not None and avatar_id not in found:
                    if _entry(root, avatar_id) is not None:
                        found.add(avatar_id)
        found.discard(DEFAULT_AVATAR)
        return [DEFAULT_AVATAR, *sorted(found)]

    def __contains__(self, avatar_id: object) -> bool:
        try:
            self.resolve(avatar_id)  # type: ignore[arg-type]
        except KeyError:
            return False
        return True

    def resolve(self, avatar_id: str) -> Path | None:
        """The source `avatar_id` names (a file, or a package directory), as a real path inside
        the directory it was found in; None for `default`. KeyError for any other id. The id may
        be in any case (`canonical_id`)."""
        avatar_id = canonical_id(avatar_id)
        if avatar_id == DEFAULT_AVATAR:
            return None
        if not isinstance(avatar_id, str) or not ID_PATTERN.fullmatch(avatar_id):
            raise KeyError(avatar_id)
        for root in (self.directory, self.bundled_dir):
            source = _entry(root, avatar_id)
            if source is not None:
                return source
        raise KeyError(avatar_id)


def _id_of(name: str) -> str | None:
    """The id a directory entry's name would give, when it is one the catalog reads."""
    stem, dot, suffix = name.rpartition(".")
    if dot and "." + suffix in IMAGE_SUFFIXES:
        name = stem
    return name if ID_PATTERN.fullmatch(name) else None


def _entry(root: Path, avatar_id: str) -> Path | None:
    """The real path of `avatar_id`'s portrait or package in `root`, or None when there is none
    there or it leads out of `root`."""
    try:
        real_root = root.resolve(strict=True)
    except OSError:
        return None
    candidates = [root / f"{avatar_id}{suffix}" for suffix in IMAGE_SUFFIXES]
    if avatar_id not in renderers.available():  # else it is that renderer's cache
        candidates.append(root / avatar_id)
    for candidate in candidates:
        try:
            real = candidate.resolve(strict=True)
        except (OSError, RuntimeError):  # missing, or a symbolic link loop
            continue
        if real_root not in real.parents:
            continue  # a symbolic link out of the directory (or to the directory itself)
        is_package = candidate.name == avatar_id
        if real.is_dir() if is_package else real.is_file():
            return real
    return None


__all__ = [
    "ANY_CASE_ID",
    "BUNDLED_PORTRAITS_DIR",
    "DEFAULT_AVATAR",
    "IMAGE_SUFFIXES",
    "AvatarCatalog",
    "canonical_id",
    "default_avatars_dir",
]
