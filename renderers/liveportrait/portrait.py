"""A portrait as LivePortrait's networks take it and give it back: framed into the video,
cropped for the networks, and the painted crop pasted back through a feathered mask.

Shared by every renderer that paints with these networks (liveportrait, ditto): they differ
in how they drive the keypoints, not in how the picture goes in and comes out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..vision import analyse_portrait
from ..vision.framing import frame_portrait
from ..vision.source import read_source
from .crop import CROP_SIZE, NETWORK_SIZE, Crop, paste_mask, source_crop


@dataclass(frozen=True)
class FramedPortrait:
    framed: np.ndarray
    """The portrait framed into the video, HxWx3 uint8."""
    points: np.ndarray
    """Its 478 face-mesh points in the framed picture (x, y in pixels, z)."""
    crop: Crop
    batch: np.ndarray
    """The networks' input: the crop at NETWORK_SIZE, (1, 3, 256, 256) float32 in 0..1."""
    mask: np.ndarray
    """Where the painted crop shows, HxWx1 float32 (feathered at its edge)."""
    backdrop: np.ndarray
    """The framed portrait outside the mask, HxWx3 float32: the part no frame repaints."""

    @classmethod
    def from_source(cls, source: Path | None, width: int, height: int) -> FramedPortrait:
        """Read `source` (None: the bundled portrait), find its face (no_face,
        multiple_faces, ... as RendererErrors) and frame it into width x height."""
        rgb = read_source(source).portrait()
        mesh = analyse_portrait(rgb)
        framed, points = frame_portrait(rgb, mesh.points, width, height)
        crop = source_crop(points)
        image = crop.cut(framed, NETWORK_SIZE).astype(np.float32) / 255.0
        mask = cv2.warpAffine(
            paste_mask(CROP_SIZE),
            crop.to_image,
            (width, height),
            flags=cv2.INTER_LINEAR,
            borderValue=0,
        )[..., None]
        return cls(
            framed=framed,
            points=points,
            crop=crop,
            batch=np.ascontiguousarray(image.transpose(2, 0, 1)[None]),
            mask=mask,
            backdrop=(framed * (1.0 - mask)).astype(np.float32),
        )

    def paste(self, painted_crop: np.ndarray) -> np.ndarray:
        """The video frame (HxWx4 uint8, opaque) with `painted_crop` (SxSx3, any size S)
        warped back into place over the portrait."""
        height, width = self.framed.shape[:2]
        to_image = self.crop.to_image * (CROP_SIZE / painted_crop.shape[0])
        to_image[:, 2] = self.crop.to_image[:, 2]
        painted = cv2.warpAffine(
            painted_crop,
            to_image,
            (width, height),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        blended = self.backdrop + painted * self.mask
        frame = np.empty((height, width, 4), dtype=np.uint8)
        frame[..., :3] = np.clip(blended + 0.5, 0, 255)
        frame[..., 3] = 255
        return frame


__all__ = ["FramedPortrait"]
