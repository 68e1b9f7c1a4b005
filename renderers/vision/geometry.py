"""Image plumbing shared by the models: input checks, rotated square crops, letterboxing.

Coordinates are continuous pixels: pixel (i, j) covers [j, j+1) x [i, i+1), so its centre
is (j + 0.5, i + 0.5), and a point at x = width lies on the right edge. numpy and Pillow
only (no OpenCV).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Check an image is HxWx3 (or HxWx4: alpha dropped) uint8 and return the RGB view."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(
            f"expected an HxWx3 uint8 RGB image, got {image.dtype} array of shape {image.shape}"
        )
    return image[:, :, :3]


@dataclass(frozen=True)
class Roi:
    """A square region turned by `angle` radians (clockwise on screen, y pointing down):
    unit coordinates (u, v) in [-0.5, 0.5]^2 map to
    centre + size * R(angle) (u, v)."""

    cx: float
    cy: float
    size: float
    angle: float = 0.0

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        """(N, 2) unit coordinates -> (N, 2) image pixels."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        u, v = uv[:, 0] * self.size, uv[:, 1] * self.size
        return np.stack([self.cx + c * u - s * v, self.cy + s * u + c * v], axis=1)

    def to_unit(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) image pixels -> (N, 2) unit coordinates (inverse of `to_image`)."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        dx, dy = xy[:, 0] - self.cx, xy[:, 1] - self.cy
        return np.stack([c * dx + s * dy, -s * dx + c * dy], axis=1) / self.size


def rotation(start: np.ndarray, end: np.ndarray) -> float:
    """Angle that turns the vector start->end onto the +x axis of a Roi (MediaPipe's
    `rotation_vector_*` with target angle 0), in image pixels."""
    return math.atan2(float(end[1] - start[1]), float(end[0] - start[0]))


def roi_around(points: np.ndarray, start: np.ndarray, end: np.ndarray, scale: float) -> Roi:
    """MediaPipe's DetectionsToRects + RectTransformation(square_long): the axis-aligned box
    of `points`, turned by the start->end vector, its long side times `scale`."""
    x0, y0 = points[:, 0].min(), points[:, 1].min()
    x1, y1 = points[:, 0].max(), points[:, 1].max()
    size = max(x1 - x0, y1 - y0) * scale
    return Roi(float(x0 + x1) / 2, float(y0 + y1) / 2, float(size), rotation(start, end))


def crop(rgb: np.ndarray, roi: Roi, out: int, *, flip: bool = False) -> np.ndarray:
    """Sample `roi` into an out x out float32 RGB image in [0, 1], bilinear, edges
    replicated. `flip` mirrors the result left-right. A roi much larger than `out` is first
    box-reduced so that the bilinear sampling does not alias."""
    h, w = rgb.shape[:2]
    # Axis-aligned bounds of the turned square, plus room for the bilinear neighbours.
    cos, sin = math.cos(roi.angle), math.sin(roi.angle)
    half = roi.size / 2 * (abs(cos) + abs(sin)) + 2
    bx0, bx1 = math.floor(roi.cx - half), math.ceil(roi.cx + half)
    by0, by1 = math.floor(roi.cy - half), math.ceil(roi.cy + half)
    # The part inside the image (at least its nearest pixel), padded out to the bounds by
    # repeating the edge pixels.
    x0, y0 = min(max(bx0, 0), w - 1), min(max(by0, 0), h - 1)
    x1, y1 = max(min(bx1, w), x0 + 1), max(min(by1, h), y0 + 1)
    pad = ((max(y0 - by0, 0), max(by1 - y1, 0)), (max(x0 - bx0, 0), max(bx1 - x1, 0)), (0, 0))
    patch = np.pad(rgb[y0:y1, x0:x1], pad, mode="edge")
    ox, oy = x0 - pad[1][0], y0 - pad[0][0]
    k = max(1, int(roi.size / out))
    image = Image.fromarray(np.ascontiguousarray(patch))
    if k > 1:
        image = image.reduce(k)
    # Output pixel centre (X, Y) -> unit (u, v) = (+-(X / out - 0.5), Y / out - 0.5) ->
    # image pixels through the roi -> the (reduced) patch's continuous coordinates. Pillow's
    # AFFINE takes that map as 6 coefficients and samples at pixel centres, as we do.
    sign = -1.0 if flip else 1.0
    b = roi.size / k
    coeffs = (
        b * cos * sign / out,
        -b * sin / out,
        (roi.cx - ox) / k + b * (-cos * sign + sin) / 2,
        b * sin * sign / out,
        b * cos / out,
        (roi.cy - oy) / k + b * (-sin * sign - cos) / 2,
    )
    sampled = image.transform(
        (out, out), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR
    )
    return np.asarray(sampled, dtype=np.float32) * (1.0 / 255.0)


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into a side x side square: scaled by (`scale_x`, `scale_y`)
    (equal but for rounding), then shifted by (`pad_x`, `pad_y`) tensor pixels."""

    side: int
    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) coordinates normalised to the square ([0, 1]) -> image pixels."""
        out = np.empty_like(xy, dtype=np.float32)
        out[..., 0] = (xy[..., 0] * self.side - self.pad_x) / self.scale_x
        out[..., 1] = (xy[..., 1] * self.side - self.pad_y) / self.scale_y
        return out


def letterbox(rgb: np.ndarray, side: int) -> tuple[np.ndarray, Letterbox]:
    """Fit `rgb` into a side x side square keeping its aspect ratio (black bars, centred),
    as float32 in [0, 1]. Pillow's resize filters when shrinking, so large images don't
    alias."""
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = Image.fromarray(np.ascontiguousarray(rgb)).resize((nw, nh), Image.Resampling.BILINEAR)
    pad_x, pad_y = (side - nw) // 2, (side - nh) // 2
    canvas = np.zeros((side, side, 3), dtype=np.float32)
    canvas[pad_y : pad_y + nh, pad_x : pad_x + nw] = np.asarray(resized, np.float32) / 255.0
    return canvas, Letterbox(side, nw / w, nh / h, float(pad_x), float(pad_y))
