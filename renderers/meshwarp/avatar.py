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
from typing import Any

import cv2
import numpy as np

from ..cache import cache_dir as project_cache_dir
from ..vision import analyse_portrait, person_mask
from ..vision.framing import frame_portrait
from ..vision.source import read_source
from . import landmarks as lm
from .loop import IdleLoop, read_loop
from .rig import INDEX, Region, control_displacements, face_scale, warp_fields, warp_region

logger = logging.getLogger("renderers.meshwarp")

RIG_VERSION = 5  # bump when the rig or framing changes, so old caches are rebuilt


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
    loop: IdleLoop | None = None
    """The video's own frames to play under the face, for an avatar made from a video."""

    @property
    def scale(self) -> float:
        return face_scale(self.points)

    @property
    def portrait_smile(self) -> float:
        """How much the portrait smiles by itself, in units of the smile control (0 for a
        neutral mouth): see `portrait_smile`."""
        return portrait_smile(self.points)


def cache_dir() -> Path:
    return project_cache_dir() / "avatars" / "meshwarp"


def prepare_avatar(source: Path | None, width: int, height: int) -> MeshwarpAvatar:
    """Load from cache or build. `source` is an image, a short video or an extracted avatar
    package directory (see vision/source.py); None: the bundled public-domain portrait."""
    source_file = read_source(source)
    video = source_file.data if source_file.is_video else _package_video(source)
    digest = hashlib.sha256(source_file.data)
    if video is not None and not source_file.is_video:
        digest.update(video)  # a package's idle clip is part of what is built
    key = digest.hexdigest()[:24]
    cached = cache_dir() / f"{key}-{width}x{height}-v{RIG_VERSION}.npz"
    if cached.exists():
        try:
            return _load(cached)
        except (OSError, ValueError, KeyError):
            logger.warning("ignoring unreadable meshwarp cache %s", cached)
    avatar = build_avatar(source_file.portrait(), width, height, video)
    _save(avatar, cached)
    return avatar


PACKAGE_VIDEO = "idle.mp4"
"""An avatar package's short clip for the idle loop (optional)."""


def _package_video(source: Path | None) -> bytes | None:
    clip = source / PACKAGE_VIDEO if source is not None and source.is_dir() else None
    return clip.read_bytes() if clip is not None and clip.is_file() else None


def build_avatar(
    rgb: np.ndarray, width: int, height: int, video: bytes | None = None
) -> MeshwarpAvatar:
    """`video`: the clip `rgb` came from, whose frames become the idle loop."""
    mesh = analyse_portrait(rgb)  # raises no_face, multiple_faces, face_too_small, ...
    framed, points = frame_portrait(rgb, mesh.points, width, height)
    loop = None
    if video is not None:
        loop = read_loop(video, _framing(mesh.points, points), framed, _face_box(points, framed),
                         width, height, (rgb.shape[1], rgb.shape[0]))  # fmt: skip
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
        loop=loop,
    )


def _framing(source: np.ndarray, framed: np.ndarray) -> np.ndarray:
    """The 2x3 scale-and-shift that `frame_portrait` applied (source → framed pixels)."""
    a, b = int(np.argmin(source[:, 0])), int(np.argmax(source[:, 0]))
    scale = float(framed[b, 0] - framed[a, 0]) / max(1e-6, float(source[b, 0] - source[a, 0]))
    shift = framed[a, :2] - scale * source[a, :2]
    return np.array([[scale, 0.0, shift[0]], [0.0, scale, shift[1]]], dtype=np.float64)


def _face_box(points: np.ndarray, image: np.ndarray) -> tuple[int, int, int, int]:
    h, w = image.shape[:2]
    (x0, y0), (x1, y1) = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    return max(0, int(x0)), max(0, int(y0)), min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))


GLASSES_EDGES = 32.0
"""Sum of the sharpest brightness steps (0..255) across the row profiles under the eyes and
over the nose bridge above which a portrait is taken to wear glasses (their rims and bridge
are horizontal bars there). Measured at 256 to 720 px: 11 to 25 without glasses (a broad
smile's cheeks the highest), 42 to 55 with."""
_PROFILE = (16, 24)
"""(w, h) every measured patch is resized to: the same sampling of the face at any size."""


def wears_glasses(image: np.ndarray, points: np.ndarray) -> bool:
    """Whether the portrait wears glasses: the brows sit against their frame, so moving the
    brows would bend it (see renderer.BROWS_UNDER_GLASSES)."""
    grey = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
    s = face_scale(points)

    def jump(x0: float, x1: float, y0: float, y1: float) -> float:
        """The largest step between neighbouring rows of the patch's mean brightness."""
        patch = grey[max(0, int(y0)) : int(y1), max(0, int(x0)) : int(x1)]
        if patch.shape[0] < 3 or patch.shape[1] < 3:
            return 0.0
        patch = cv2.resize(patch, _PROFILE, interpolation=cv2.INTER_AREA).astype(np.float32)
        return float(np.abs(np.diff(patch.mean(axis=1))).max())

    # Under each eye, where the lower rims cross the cheek.
    under = []
    for lid, (a, b) in ((145, lm.RIGHT_EYE_CORNERS), (374, lm.LEFT_EYE_CORNERS)):
        x0, x1 = sorted((float(points[a, 0]), float(points[b, 0])))
        y = float(points[lid, 1])
        under.append(jump(x0, x1, y + 0.05 * s, y + 0.5 * s))
    # Over the nose bridge, from between the brows to the eyes.
    x0, x1 = sorted((float(points[133, 0]), float(points[362, 0])))
    inset = 0.2 * (x1 - x0)
    bridge = jump(x0 + inset, x1 - inset, float(points[168, 1]) - 0.15 * s,
                  float(points[[133, 362], 1].mean()))  # fmt: skip
    return sum(under) / 2 + bridge > GLASSES_EDGES


SMILE_LIFT = 0.075
"""How far the smile control lifts the mouth corners at weight 1, over the face scale (see
rig.control_displacements("smile"))."""
NEUTRAL_LIFT = 0.03
"""Corner lift (over the face scale) that a neutral mouth may show without smiling."""


def portrait_smile(points: np.ndarray) -> float:
    """The portrait's own smile in smile-control units: how far its mouth corners sit above
    the middle of the lips' meeting line, beyond what a neutral mouth shows (0 for the
    closed-mouth portraits measured, about 1.1 to 1.4 for a broad smile with teeth)."""
    corners = points[list(lm.MOUTH_CORNERS), 1].mean()
    middle = (points[lm.LIP_TOP, 1] + points[lm.LIP_BOTTOM, 1]) / 2
    lift = float(middle - corners) / max(1e-6, face_scale(points))
    return max(0.0, lift - NEUTRAL_LIFT) / SMILE_LIFT


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
    loop: dict[str, Any] = {}  # Any: savez's stubs take the keyword arrays for its options
    if avatar.loop is not None:
        loop = {"loop_frames": avatar.loop.frames, "loop_offsets": avatar.loop.offsets}
    try:
        np.savez(
            tmp,
            image=avatar.image,
            points=avatar.points,
            region=np.array([r.x0, r.y0, r.x1, r.y1]),
            fields=avatar.fields.astype(np.float16),
            displacements=avatar.displacements,
            rest=avatar.rest,
            **loop,
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
            loop=(
                IdleLoop(data["loop_frames"], data["loop_offsets"])
                if "loop_frames" in data
                else None
            ),
        )
