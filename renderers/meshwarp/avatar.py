"""Preparing a portrait for meshwarp: find the face, frame it, build the rig, cache it all.

Preparation costs a few hundred milliseconds (face mesh, segmentation, one spline solve per
control); the result is cached by the source's content hash and output size, so the second
start with the same avatar only reads one file.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..base import RendererError
from ..bundled import DEFAULT_PORTRAIT
from ..cache import cache_dir as project_cache_dir
from ..errors import short_reason
from ..vision import analyse_portrait, load_image, person_mask
from . import landmarks as lm
from .rig import INDEX, Region, control_displacements, face_scale, warp_fields, warp_region

logger = logging.getLogger("renderers.meshwarp")

RIG_VERSION = 3  # bump when the rig or framing changes, so old caches are rebuilt
VIDEO_SUFFIXES = {".mp4", ".mov", ".webm", ".mkv", ".avi"}
PACKAGE_PORTRAIT = "portrait.png"
"""The portrait in an avatar package made for meshwarp (prepare.py writes it)."""
WAV2LIP_FIRST_FRAME = "full_imgs/00000000.png"
FACE_HEIGHT = 0.40  # of the frame height, forehead to chin
FACE_CENTRE_Y = 0.46  # of the frame height


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
    package directory (see `package_portrait`); None: the bundled public-domain portrait."""
    path = source or DEFAULT_PORTRAIT
    if path.is_dir():
        path = package_portrait(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise RendererError("source_unreadable", f"cannot read {path}: {error}") from None
    key = hashlib.sha256(data).hexdigest()[:24]
    cached = cache_dir() / f"{key}-{width}x{height}-v{RIG_VERSION}.npz"
    if cached.exists():
        try:
            return _load(cached)
        except (OSError, ValueError, KeyError):
            logger.warning("ignoring unreadable meshwarp cache %s", cached)
    is_video = path.suffix.lower() in VIDEO_SUFFIXES
    rgb = _first_face_frame(path, data) if is_video else load_image(data)
    avatar = build_avatar(rgb, width, height)
    _save(avatar, cached)
    return avatar


def package_portrait(package: Path) -> Path:
    """The portrait of an extracted avatar package: its `portrait.png` (a meshwarp package),
    else the first frame of a wav2lip package (`full_imgs/00000000.png`)."""
    for name in (PACKAGE_PORTRAIT, WAV2LIP_FIRST_FRAME):
        if (package / name).is_file():
            return package / name
    raise RendererError(
        "invalid_package",
        f"{package} is not an avatar package meshwarp can use: it has no {PACKAGE_PORTRAIT}",
    )


def build_avatar(rgb: np.ndarray, width: int, height: int) -> MeshwarpAvatar:
    mesh = analyse_portrait(rgb)  # raises no_face, multiple_faces, face_too_small, ...
    framed, points = _frame(rgb, mesh.points, width, height)
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


def _frame(
    rgb: np.ndarray, points: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Scale and shift the portrait so the face sits at the same place in every avatar."""
    face_h = points[lm.CHIN, 1] - points[10, 1]
    scale = FACE_HEIGHT * height / max(face_h, 1.0)
    centre = points[:, :2].mean(axis=0)
    matrix = np.array(
        [
            [scale, 0.0, width / 2 - scale * centre[0]],
            [0.0, scale, FACE_CENTRE_Y * height - scale * centre[1]],
        ]
    )
    framed = cv2.warpAffine(
        rgb, matrix, (width, height), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REPLICATE,
    )  # fmt: skip
    moved = points.copy()
    moved[:, :2] = points[:, :2] * scale + matrix[:, 2]
    moved[:, 2] = points[:, 2] * scale
    return framed, moved.astype(np.float32)


def _closing_weight(points: np.ndarray) -> float:
    """Negative lips_part weight that brings the inner lips together (0 if already closed)."""
    gap = points[lm.LIP_BOTTOM, 1] - points[lm.LIP_TOP, 1]
    per_unit = 0.085 * face_scale(points)  # see rig.control_displacements("lips_part")
    return -max(0.0, float(gap)) / per_unit


def _first_face_frame(path: Path, data: bytes, max_frames: int = 60) -> np.ndarray:
    """The first frame of a video that holds exactly one usable face."""
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            last_error: RendererError | None = None
            for i, frame in enumerate(container.decode(video=0)):
                if i >= max_frames:
                    break
                rgb = frame.to_ndarray(format="rgb24")
                try:
                    analyse_portrait(rgb)
                    return rgb
                except RendererError as error:
                    last_error = error
    except (av.error.FFmpegError, ValueError) as error:
        reason = short_reason(error, "not a video this can decode")
        raise RendererError("corrupt_video", f"cannot decode video {path.name}: {reason}") from None
    if last_error is not None:
        raise last_error
    raise RendererError("corrupt_video", f"no frames in video {path.name}")


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
