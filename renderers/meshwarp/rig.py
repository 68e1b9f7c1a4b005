"""The face rig: how each control moves the landmarks, and the dense warp field it implies.

Every control (jaw open, smile, blink, ...) is a displacement of the control landmarks at
weight 1, sized relative to the face. A triangulated warp mesh over those landmarks (and pinned
points on the region's border) spreads each displacement over the region around the face, so a
frame's whole warp is a weighted sum of precomputed fields: cheap enough for hundreds of frames
per second.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from . import landmarks as lm

CONTROLS = (
    "jaw_open",
    "lips_part",
    "mouth_wide",
    "mouth_round",
    "smile",
    "frown",
    "brow_raise",
    "brow_inner_up",
    "brow_lower",
    "blink_right",
    "blink_left",
    "eye_wide",
    "squint",
    "gaze_x",
    "gaze_y",
    "head_x",
    "head_y",
    "head_roll",
    "lips_press",
)
INDEX = {name: i for i, name in enumerate(CONTROLS)}
SHARP_CONTROLS = {"lips_part": 0.35, "lips_press": 0.5}
"""Controls whose fields are smoothed less than the others (a share of the usual blur)."""


@dataclass(frozen=True)
class Region:
    """The part of the frame the warp may touch: x0:x1, y0:y1."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def face_scale(points: np.ndarray) -> float:
    """Distance between the eye centres, the unit every displacement is sized in."""
    right = points[list(lm.RIGHT_EYE_CORNERS), :2].mean(axis=0)
    left = points[list(lm.LEFT_EYE_CORNERS), :2].mean(axis=0)
    return float(np.linalg.norm(left - right))


def warp_region(points: np.ndarray, width: int, height: int) -> Region:
    """Face box grown to hold the head's motion, the jaw's drop and some neck."""
    xy = points[:, :2]
    (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
    w, h = x1 - x0, y1 - y0
    return Region(
        max(0, int(x0 - 0.35 * w)),
        max(0, int(y0 - 0.45 * h)),
        min(width, int(np.ceil(x1 + 0.35 * w))),
        min(height, int(np.ceil(y1 + 0.45 * h))),
    )


def control_displacements(points: np.ndarray) -> np.ndarray:
    """(len(CONTROLS), len(CONTROL_POINTS), 2): where each control moves each control point."""
    xy = points[:, :2].astype(np.float64)
    s = face_scale(points)
    row = {index: i for i, index in enumerate(lm.CONTROL_POINTS)}
    out = np.zeros((len(CONTROLS), len(lm.CONTROL_POINTS), 2))

    def move(control: str, indices, dx, dy) -> None:  # noqa: ANN001
        for k, index in enumerate(indices):
            out[INDEX[control], row[index]] += (
                dx[k] if np.ndim(dx) else dx,
                dy[k] if np.ndim(dy) else dy,
            )

    corners = xy[list(lm.MOUTH_CORNERS)]
    mouth_cx = corners[:, 0].mean()
    half_width = max(1.0, abs(corners[1, 0] - corners[0, 0]) / 2)
    mouth_y = corners[:, 1].mean()
    chin_y = xy[lm.CHIN, 1]

    def across(indices) -> np.ndarray:  # noqa: ANN001 - -1 at the right corner .. +1 left
        return np.clip((xy[list(indices), 0] - mouth_cx) / half_width, -1.2, 1.2)

    lips = tuple(dict.fromkeys(lm.UPPER_LIP_OUTER + lm.LOWER_LIP_OUTER
                               + lm.UPPER_LIP_INNER + lm.LOWER_LIP_INNER))  # fmt: skip
    lower_lips = tuple(dict.fromkeys(lm.LOWER_LIP_OUTER + lm.LOWER_LIP_INNER))
    lower_only = tuple(i for i in lower_lips if i not in lm.MOUTH_CORNERS + lm.INNER_CORNERS)

    # Jaw: the chin drops, the lower lip rides on it, the jaw line follows by height (the
    # neck under it is pinned in `warp_fields`, so the skin between stretches, the neck
    # line stays).
    jaw_t = np.clip((xy[list(lm.JAW), 1] - mouth_y) / max(1.0, chin_y - mouth_y), 0, 1)
    move("jaw_open", lm.JAW, 0.0, 0.34 * s * jaw_t**0.8)
    move("jaw_open", lower_only, 0.0, 0.24 * s * (1 - 0.35 * np.abs(across(lower_only))))
    move("jaw_open", lm.MOUTH_CORNERS + lm.INNER_CORNERS, 0.0, 0.07 * s)
    move("jaw_open", lm.UPPER_LIP_INNER[1:-1], 0.0, -0.015 * s)

    # Lips part without the jaw (also closes a portrait's open mouth at negative weight).
    upper_inner, lower_inner = lm.UPPER_LIP_INNER[1:-1], lm.LOWER_LIP_INNER[1:-1]
    move("lips_part", upper_inner, 0.0, -0.035 * s * (1 - 0.5 * np.abs(across(upper_inner))))
    move("lips_part", lower_inner, 0.0, 0.05 * s * (1 - 0.5 * np.abs(across(lower_inner))))
    move("lips_part", lm.UPPER_LIP_OUTER[1:-1], 0.0, -0.012 * s)
    move("lips_part", lm.LOWER_LIP_OUTER[1:-1], 0.0, 0.02 * s)

    # Pressed lips (m, b, p): the lips' outer edges come toward each other, so they thin.
    move("lips_press", lm.UPPER_LIP_OUTER[1:-1], 0.0, 0.02 * s)
    move("lips_press", lm.LOWER_LIP_OUTER[1:-1], 0.0, -0.03 * s)
    move("lips_press", lower_inner, 0.0, -0.006 * s)
    move("lips_press", upper_inner, 0.0, 0.004 * s)

    # Spread and pucker: lip points slide along the mouth's width.
    move("mouth_wide", lips, 0.09 * s * across(lips), 0.0)
    move("mouth_wide", lm.CHEEKS, 0.03 * s * np.sign(xy[list(lm.CHEEKS), 0] - mouth_cx), 0.0)
    # Rounded: the corners come well in and the lips' middle pushes out (up and down).
    move("mouth_round", lips, -0.13 * s * across(lips), 0.0)
    move("mouth_round", lm.UPPER_LIP_OUTER[2:-2], 0.0, -0.03 * s)
    move("mouth_round", lm.LOWER_LIP_OUTER[2:-2], 0.0, 0.03 * s)

    # Corners up and out (smile) or down (frown); the middle of the lips barely moves.
    weight = np.abs(across(lips)) ** 1.5
    move("smile", lips, 0.04 * s * across(lips), -0.075 * s * weight)
    move("smile", lm.CHEEKS, 0.0, -0.045 * s)
    move("smile", lm.RIGHT_EYE_LOWER[1:-1] + lm.LEFT_EYE_LOWER[1:-1], 0.0, -0.012 * s)
    move("frown", lips, -0.01 * s * across(lips), 0.06 * s * weight)

    brows = lm.RIGHT_BROW + lm.LEFT_BROW
    move("brow_raise", brows, 0.0, -0.09 * s)
    upper_lids = lm.RIGHT_EYE_UPPER + lm.LEFT_EYE_UPPER
    move("brow_raise", upper_lids, 0.0, -0.015 * s)
    inner = lm.RIGHT_BROW_INNER + lm.LEFT_BROW_INNER
    move("brow_inner_up", inner, 0.0, -0.08 * s)
    move("brow_inner_up", (105, 52, 334, 282), 0.0, -0.035 * s)
    face_cx = xy[list(lm.NOSE), 0].mean()
    move("brow_lower", brows, 0.0, 0.05 * s)
    move("brow_lower", inner, 0.035 * s * np.sign(face_cx - xy[list(inner), 0]), 0.015 * s)
    move("brow_lower", upper_lids, 0.0, 0.008 * s)

    for side, upper, lower in (
        ("right", lm.RIGHT_EYE_UPPER, lm.RIGHT_EYE_LOWER),
        ("left", lm.LEFT_EYE_UPPER, lm.LEFT_EYE_LOWER),
    ):
        lower_xy = xy[list(lower)]
        order = np.argsort(lower_xy[:, 0])
        lid_floor = np.interp(xy[list(upper), 0], lower_xy[order, 0], lower_xy[order, 1])
        gap = lid_floor - xy[list(upper), 1]
        move(f"blink_{side}", upper, 0.0, 0.92 * gap)
        move(f"blink_{side}", lower[1:-1], 0.0, -0.06 * gap.mean())
        move("eye_wide", upper, 0.0, -0.3 * gap)
        move("squint", upper, 0.0, 0.22 * gap)
        move("squint", lower[1:-1], 0.0, -0.12 * gap.mean())

    for iris, eye_corners in (
        (lm.RIGHT_IRIS, lm.RIGHT_EYE_CORNERS),
        (lm.LEFT_IRIS, lm.LEFT_EYE_CORNERS),
    ):
        eye_width = float(np.linalg.norm(xy[eye_corners[0]] - xy[eye_corners[1]]))
        move("gaze_x", iris, 0.1 * eye_width, 0.0)
        move("gaze_y", iris, 0.0, 0.06 * eye_width)

    # Rigid head motion, unit: 1 % of the face scale, and 1 degree of roll about the neck.
    face = tuple(i for i in lm.CONTROL_POINTS)
    move("head_x", face, 0.01 * s, 0.0)
    move("head_y", face, 0.0, 0.01 * s)
    pivot = np.array([xy[list(lm.NOSE), 0].mean(), chin_y + 0.4 * s])
    rel = xy[list(face)] - pivot
    theta = np.deg2rad(1.0)
    move("head_roll", face, -theta * rel[:, 1], theta * rel[:, 0])
    return out.astype(np.float32)


def triangulate(vertices: np.ndarray, region: Region) -> np.ndarray:
    """Delaunay triangles (T x 3 vertex indices) over the control landmarks and the pinned
    points along the region's border: the warp mesh."""
    subdiv = cv2.Subdiv2D((region.x0 - 1, region.y0 - 1, region.width + 2, region.height + 2))
    for x, y in vertices:
        subdiv.insert((float(x), float(y)))
    corners = np.asarray(subdiv.getTriangleList()).reshape(-1, 3, 2)
    # Map each corner back to its vertex (Subdiv2D returns coordinates, not indices).
    distance = np.linalg.norm(corners[:, :, None, :] - vertices[None, None, :, :], axis=-1)
    triangles = distance.argmin(axis=-1)
    inside = (distance.min(axis=-1) < 0.5).all(axis=1)  # drop the virtual outer triangles
    triangles = triangles[inside]
    return triangles[np.array([len(set(t)) == 3 for t in triangles], dtype=bool)]


def warp_fields(
    points: np.ndarray, region: Region, smoothing_px: float | None = None
) -> np.ndarray:
    """(len(CONTROLS), region.height, region.width, 2) float32 displacement fields.

    Each control's landmark displacements are spread over the region by the triangulated warp
    mesh (linear inside each triangle; the border points are held still so the warp fades out
    before the region's edge), then smoothed so no triangle edge shows as a crease.
    """
    controls_xy = points[list(lm.CONTROL_POINTS), :2].astype(np.float64)
    vertices = np.vstack([controls_xy, _border_points(region), _neck_points(points, region)])
    values = np.zeros((len(CONTROLS), len(vertices), 2), dtype=np.float32)
    values[:, : len(controls_xy)] = control_displacements(points)
    triangles = triangulate(vertices, region)

    # Which triangle covers each pixel, and the pixel's barycentric weights in it.
    owner = np.full((region.height, region.width), -1, dtype=np.int32)
    local = vertices - [region.x0, region.y0]
    for t, tri in enumerate(triangles):
        cv2.fillConvexPoly(owner, np.round(local[tri]).astype(np.int32), t)
    owner = _fill_gaps(owner)
    corners = local[triangles]  # (T, 3, 2)
    basis = np.concatenate([corners, np.ones((len(triangles), 3, 1))], axis=2)  # rows [x y 1]
    inverse = np.linalg.pinv(basis.transpose(0, 2, 1))  # maps [x y 1] to barycentric weights
    gy, gx = np.mgrid[0 : region.height, 0 : region.width]
    pixel = np.stack([gx, gy, np.ones_like(gx)], axis=-1).astype(np.float64)
    weights = np.einsum("hwij,hwj->hwi", inverse[owner], pixel).astype(np.float32)

    sigma = smoothing_px if smoothing_px is not None else 0.012 * max(region.width, region.height)
    fields = np.empty((len(CONTROLS), region.height, region.width, 2), dtype=np.float32)
    for i in range(len(CONTROLS)):
        per_vertex = values[i][triangles]  # (T, 3, 2)
        field = np.einsum("hwk,hwkc->hwc", weights, per_vertex[owner])
        # The lips meet along one line: a blur as wide as the others' would average the upper
        # lip's way down with the lower lip's way up there, and a smile's teeth would show
        # through the closed lips.
        k = SHARP_CONTROLS.get(CONTROLS[i], 1.0) * sigma
        fields[i] = cv2.GaussianBlur(field, (0, 0), k) if k > 0 else field
    return fields


def _fill_gaps(owner: np.ndarray) -> np.ndarray:
    """Give the odd pixel that rounding left uncovered the triangle of a covered neighbour."""
    missing = owner < 0
    if missing.any():
        _, nearest = cv2.distanceTransformWithLabels(
            missing.astype(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL
        )
        covered = ~missing
        labels_of_covered = np.zeros(nearest.max() + 1, dtype=np.int32)
        labels_of_covered[nearest[covered]] = owner[covered]
        owner = np.where(missing, labels_of_covered[nearest], owner)
    return owner


def _neck_points(points: np.ndarray, region: Region) -> np.ndarray:
    """Held-still points under the jaw line: the neck does not drop with the chin."""
    s = face_scale(points)
    jaw = points[list(lm.JAW[2:-2]), :2].astype(np.float64) + [0.0, 0.5 * s]
    inside = (jaw[:, 1] < region.y1 - 2) & (jaw[:, 0] > region.x0 + 1) & (jaw[:, 0] < region.x1 - 2)
    return jaw[inside]


def _border_points(region: Region, spacing: float = 24.0) -> np.ndarray:
    xs = np.linspace(region.x0, region.x1 - 1, max(2, int(region.width / spacing)))
    ys = np.linspace(region.y0, region.y1 - 1, max(2, int(region.height / spacing)))
    top = np.stack([xs, np.full_like(xs, region.y0)], 1)
    bottom = np.stack([xs, np.full_like(xs, region.y1 - 1)], 1)
    left = np.stack([np.full_like(ys, region.x0), ys], 1)
    right = np.stack([np.full_like(ys, region.x1 - 1), ys], 1)
    return np.unique(np.vstack([top, bottom, left, right]), axis=0)
