"""Preparing a portrait for meshwarp: find the face, frame it, build the rig, cache it all.

Preparation costs a few hundred milliseconds (face mesh, segmentation, one spline solve per
control); the result is cached by the source's content hash and output size, so the second
start with the same avatar only reads one file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache import cache_dir as project_cache_dir
from ..vision import analyse_portrait, person_mask
from ..vision.framing import frame_portrait
from ..vision.source import read_source
from . import landmarks as lm
from .rig import INDEX, Region, control_displacements, face_scale, warp_fields, warp_region

logger = logging.getLogger("renderers.meshwarp")

RIG_VERSION = 3  # bump when the rig or framing changes, so old caches are rebuilt


@dataclass(frozen=True)
class MeshwarpAvatar:
    image: np.ndarray
    """The framed portrait, RGBA uint8 at the output size; alpha is the person mask."""
    points: np.ndarray
    """478 x 3 landmarks in frame pixels."""
    region: Region
    fields: np.ndarray
    """(controls, region h, region w, 2) float32 warp fields."""
    displacements: np.ndarray
    """(controls, control points, 2): how each control moves the control landmarks."""
    rest: np.ndarray
    """Control weights of the closed, neutral mouth (closes a portrait's open mouth)."""

    @property
    def scale(self) -> float:
        return face_scale(self.points)


def cache_dir() -> Path:
    return project_cache_dir() / "avatars" / "meshwarp"


def prepare_avatar(source: Path | None, width: int, height: int) -> MeshwarpAvatar:
    """Load from cache or build. `source` is an image, a short video or an extracted avatar
    package directory (see vision/source.py); None: the bundled public-domain portrait."""
    source_file = read_source(source)
    key = hashlib.sha256(source_file.data).hexdigest()[:24]
    cached = cache_dir() / f"{key}-{width}x{height}-v{RIG_VERSION}.npz"
    if cached.exists():
        try:
            return _load(cached)
        except (OSError, ValueError, KeyError):
            logger.warning("ignoring unreadable meshwarp cache %s", cached)
    avatar = build_avatar(source_file.portrait(), width, height)
    _save(avatar, cached)
    return avatar


def build_avatar(rgb: np.ndarray, width: int, height: int) -> MeshwarpAvatar:
    mesh = analyse_portrait(rgb)  # raises no_face, multiple_faces, face_too_small, ...
    framed, points = frame_portrait(rgb, mesh.points, width, height)
    mask = person_mask(framed)
    image = np.dstack([framed, (np.clip(mask, 0, 1) * 255).astype(np.uint8)])
    region = warp_region(points, width, height)
    rest = np.zeros(len(INDEX), dtype=np.float32)
    rest[INDEX["lips_part"]] = _closing_weight(points)
    return MeshwarpAvatar(
        image=image,
        points=points,
        region=region,
        fields=warp_fields(points, region),
        displacements=control_displacements(points),
        rest=rest,
    )


def _closing_weight(points: np.ndarray) -> float:
    """Negative lips_part weight that brings the inner lips together (0 if already closed)."""
    gap = points[lm.LIP_BOTTOM, 1] - points[lm.LIP_TOP, 1]
    per_unit = 0.085 * face_scale(points)  # see rig.control_displacements("lips_part")
    return -max(0.0, float(gap)) / per_unit


def _save(avatar: MeshwarpAvatar, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of this writer's own: two sessions preparing the same portrait at once must not
    # write (and rename away) one temporary file between them.
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp.npz")
    r = avatar.region
    try:
        np.savez(
            tmp,
            image=avatar.image,
            points=avatar.points,
            region=np.array([r.x0, r.y0, r.x1, r.y1]),
            fields=avatar.fields.astype(np.float16),
            displacements=avatar.displacements,
            rest=avatar.rest,
        )
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _load(path: Path) -> MeshwarpAvatar:
    with np.load(path) as data:
        return MeshwarpAvatar(
            image=data["image"],
            points=data["points"],
            region=Region(*(int(v) for v in data["region"])),
            fields=data["fields"].astype(np.float32),
            displacements=data["displacements"],
            rest=data["rest"],
        )
