"""LivePortrait's face crop, from MediaPipe's 478 points instead of InsightFace's 106.

LivePortrait crops its source with `crop_image(img, lmk106, dsize=512, scale=2.3, vx_ratio=0,
vy_ratio=-0.125)`: it takes an up axis through two points (the eyes' centre and the lips'
centre), rotates the landmark cloud upright along it, takes the cloud's bounding box, makes it
square, scales it by 2.3 and moves it up by 0.125 of its size to take in the forehead. The
networks were trained on crops framed that way, so the framing is what has to match.

InsightFace's models may not be used commercially (LivePortrait#193) and cannot be downloaded
here, so the landmarks come from MediaPipe's face mesh, which the project already runs. The
mapping (see docs/liveportrait-renderer.md):

* up axis: the eyes' centre is the midpoint of the two iris centres (468, 473); the lips'
  centre is the midpoint of the inner lips (13, 14), where InsightFace's (52 + 61) / 2 falls.
* cloud: MediaPipe's whole mesh reaches up to the hairline (point 10), which makes its box
  taller than InsightFace's 106 points (jaw contour from ear to ear, brows, eyes, nose, lips),
  and LivePortrait's 2.3 / -0.125 would then frame too much above the head. So the box is
  taken over the MediaPipe points that cover what the 106 points cover: the face oval from
  one temple down round the chin to the other (not its forehead arc), both brows, the eye
  corners and lids, the nose and the lips. With the cloud matched, the published scale and
  offset apply unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

CROP_SIZE = 512
"""The crop LivePortrait cuts and its decoder paints (the networks read it at 256)."""
NETWORK_SIZE = 256
SOURCE_SCALE = 2.3
SOURCE_VY = -0.125
SOURCE_VX = 0.0

_IRIS_CENTRES = (468, 473)
_INNER_LIPS = (13, 14)
FRAMING_POINTS: tuple[int, ...] = (
    # face oval, right temple round the chin to the left temple (the 106 points' jaw contour)
    127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152,
    377, 400, 378, 379, 365, 397, 288, 361, 323, 454, 356,
    # brows, upper and lower edges
    70, 63, 105, 66, 107, 46, 53, 52, 65, 55,
    300, 293, 334, 296, 336, 276, 283, 282, 295, 285,
    # eye corners and lids
    33, 133, 159, 145, 263, 362, 386, 374,
    # nose bridge to tip and wings
    168, 6, 197, 195, 5, 4, 1, 2, 98, 327,
    # lips: corners, outer and inner middle
    61, 291, 0, 17, 13, 14, 37, 267, 84, 314,
)  # fmt: skip


@dataclass(frozen=True)
class Crop:
    """Where LivePortrait's crop sits in an image."""

    to_crop: np.ndarray
    """2x3 affine: image pixels -> crop pixels (CROP_SIZE square)."""
    to_image: np.ndarray
    """2x3 affine: crop pixels -> image pixels (its inverse, for the paste-back)."""
    centre: tuple[float, float]
    size: float
    """Side of the square in image pixels."""
    angle: float
    """Roll of the up axis in radians (image coordinates, clockwise positive)."""

    def cut(self, rgb: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
        """The crop of `rgb`, `size` pixels square (INTER_AREA when shrinking, as upstream)."""
        matrix = self.to_crop * (size / CROP_SIZE)
        interpolation = cv2.INTER_AREA if size / self.size < 1 else cv2.INTER_LINEAR
        return cv2.warpAffine(
            rgb, matrix, (size, size), flags=interpolation, borderMode=cv2.BORDER_REPLICATE
        )

    def points_in_crop(self, points: np.ndarray) -> np.ndarray:
        """Image points (N, 2+) in crop pixels (N, 2)."""
        xy = np.asarray(points, dtype=np.float64)[:, :2]
        return xy @ self.to_crop[:, :2].T + self.to_crop[:, 2]


def source_crop(
    points: np.ndarray,
    *,
    scale: float = SOURCE_SCALE,
    vx_ratio: float = SOURCE_VX,
    vy_ratio: float = SOURCE_VY,
) -> Crop:
    """The crop of a source portrait from its 478 MediaPipe points (x, y in pixels)."""
    xy = np.asarray(points, dtype=np.float64)[:, :2]
    eyes = xy[list(_IRIS_CENTRES)].mean(axis=0)
    lips = xy[list(_INNER_LIPS)].mean(axis=0)
    uy = lips - eyes
    length = float(np.linalg.norm(uy))
    uy = np.array([0.0, 1.0]) if length <= 1e-3 else uy / length
    ux = np.array([uy[1], -uy[0]])
    angle = math.acos(float(np.clip(ux[0], -1.0, 1.0)))
    if ux[1] < 0:
        angle = -angle

    cloud = xy[list(FRAMING_POINTS)]
    mean = cloud.mean(axis=0)
    upright = (cloud - mean) @ np.stack([ux, uy]).T
    low, high = upright.min(axis=0), upright.max(axis=0)
    side = float(max(high - low)) * scale
    middle = (low + high) / 2
    centre = mean + ux * middle[0] + uy * middle[1]
    centre = centre + ux * (vx_ratio * side) + uy * (vy_ratio * side)

    s = CROP_SIZE / side
    cos, sin = math.cos(angle), math.sin(angle)
    # Rotate by -angle about the centre (the crop is upright), scale, then move the centre
    # to the crop's middle.
    linear = s * np.array([[cos, sin], [-sin, cos]])
    shift = np.array([CROP_SIZE / 2, CROP_SIZE / 2]) - linear @ centre
    to_crop = np.hstack([linear, shift[:, None]])
    return Crop(
        to_crop=to_crop,
        to_image=cv2.invertAffineTransform(to_crop),
        centre=(float(centre[0]), float(centre[1])),
        size=side,
        angle=angle,
    )


def paste_mask(size: int = CROP_SIZE, margin: float = 0.06, feather: float = 0.12) -> np.ndarray:
    """The paste-back mask in crop pixels, float32 in [0, 1]: 1 over the middle of the crop,
    falling smoothly to 0 before its edges, so the animated crop melts into the portrait
    where the stitching network has kept the two aligned (LivePortrait ships an image for
    this, mask_template.png; a smooth rounded square does the same job)."""
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    edge = np.minimum(ramp, 1.0 - ramp)  # distance to the nearest edge, 0 .. 0.5
    t = np.clip((edge - margin) / feather, 0.0, 1.0)
    t = t * t * (3.0 - 2.0 * t)
    return np.outer(t, t).astype(np.float32)


@dataclass(frozen=True)
class Ratios:
    """Openness ratios LivePortrait's retargeting networks take (section 2.5 of the notes),
    from MediaPipe points: inner-lip gap over mouth width, lid gap over eye width."""

    lip: float
    eye_left: float
    """The eye on the image's left (the person's right eye)."""
    eye_right: float


def openness_ratios(points: np.ndarray) -> Ratios:
    xy = np.asarray(points, dtype=np.float64)[:, :2]

    def ratio(a: int, b: int, c: int, d: int) -> float:
        width = max(float(np.linalg.norm(xy[c] - xy[d])), 1e-6)
        return float(np.linalg.norm(xy[a] - xy[b])) / width

    return Ratios(
        lip=ratio(13, 14, 61, 291),
        eye_left=ratio(159, 145, 33, 133),
        eye_right=ratio(386, 374, 263, 362),
    )
