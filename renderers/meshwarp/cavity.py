"""The inside of an open mouth: shaded cavity, teeth (the portrait's own when it shows them,
else drawn ones with a gum line), lower teeth riding on the jaw, and a hint of tongue.

A warp can only stretch the pixels between the lips; what a real mouth shows there is depth.
So the cavity is painted, but as shading rather than a flat fill: lit near the lips and darker
toward the back (never black), with its border softened so the lips' own edge carries the
outline. Everything is drawn in a small patch around the mouth, a fraction of a millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from . import landmarks as lm

UPPER_N = len(lm.UPPER_LIP_INNER)
INNER_LIPS = lm.UPPER_LIP_INNER + tuple(reversed(lm.LOWER_LIP_INNER))[1:-1]
"""The inner lip outline, upper lip left to right then lower lip back: the cavity polygon."""

_NEAR = np.array([0.58, 0.42, 0.42], dtype=np.float32)  # of the lips' colour, just inside
_FAR = np.array([0.24, 0.13, 0.14], dtype=np.float32)  # ... at the back: dark, not black
_FLOOR = np.array([30, 14, 16], dtype=np.float32)
_TONGUE = np.array([150, 72, 76], dtype=np.float32)
_TEETH = np.array([236, 224, 200], dtype=np.float32)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_LIPS_LUMA = 125.0
"""Luma of lips in a well-lit photo: drawn teeth are full white at this and above."""
_GUM = np.array([176, 96, 98], dtype=np.float32)
_TEETH_EDGES = (0.0, 0.19, 0.36, 0.5, 0.62)
"""Tooth boundaries as a share of the mouth's half width from its middle (incisors are wider)."""
SEAM_GAP = 3.0
"""Inner-lip gap (px) under which a portrait's own teeth are hidden between closed lips."""
_AFFINE_POINTS = (78, 13, 308)
"""Inner lip corners and the upper lip's middle: the upper teeth follow these three."""


@dataclass(frozen=True)
class PortraitTeeth:
    """The portrait's own upper teeth: colour and a soft mask, in the frame's coordinates of
    the rest (unwarped) portrait, within `box`."""

    box: tuple[int, int, int, int]
    rgb: np.ndarray
    alpha: np.ndarray
    anchors: np.ndarray
    """The three `_AFFINE_POINTS` in the portrait, relative to `box`."""


def find_teeth(image: np.ndarray, points: np.ndarray) -> PortraitTeeth | None:
    """The portrait's visible teeth, if its lips are apart and what shows between them is
    light and unsaturated (enamel, not lips or a dark open mouth)."""
    inner = points[list(INNER_LIPS), :2]
    gap = float(points[lm.LIP_BOTTOM, 1] - points[lm.LIP_TOP, 1])
    if gap < 3.0:
        return None
    x0, y0 = np.floor(inner.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(inner.max(axis=0)).astype(int) + 2
    x0, y0 = max(x0, 0), max(y0, 0)
    rgb = image[y0:y1, x0:x1, :3].astype(np.float32)
    filled = np.zeros(rgb.shape[:2], dtype=np.uint8)
    cv2.fillPoly(filled, [np.round(inner - [x0, y0]).astype(np.int32)], 255)
    # Eroded: the lip's own edge pixels are not teeth.
    inside = cv2.erode(filled, np.ones((3, 3), np.uint8)) > 0
    if inside.sum() < 12:
        return None
    luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    chroma = rgb.max(axis=2) - rgb.min(axis=2)
    lips = np.median(luma[~inside]) if (~inside).any() else 0.0
    enamel = inside & (luma > lips + 25) & (chroma < 0.45 * luma)
    if enamel.sum() < 0.3 * inside.sum():
        return None
    alpha = cv2.GaussianBlur(enamel.astype(np.float32), (0, 0), 0.8) * inside
    anchors = (points[list(_AFFINE_POINTS), :2] - [x0, y0]).astype(np.float32)
    # The teeth's top edge sits a little under the lip's landmark; hang it from the lip.
    middle = enamel[:, max(0, int(anchors[1, 0]) - 3) : int(anchors[1, 0]) + 4].any(axis=1)
    rows = np.flatnonzero(middle)
    if rows.size:
        anchors[:, 1] += max(0.0, float(rows[0]) - float(anchors[1, 1]))
    return PortraitTeeth((x0, y0, x1, y1), rgb, alpha.astype(np.float32), anchors)


class MouthInterior:
    """Paints the cavity between the inner lips of a frame."""

    def __init__(
        self, scale: float, teeth: PortraitTeeth | None, own_opening: bool = False
    ) -> None:
        self.scale = scale
        self.teeth = teeth
        self.own_opening = own_opening or teeth is not None
        """The portrait's lips are apart: closed, they squeeze what showed between them."""

    def draw(self, frame: np.ndarray, inner: np.ndarray) -> None:
        """`inner`: the `INNER_LIPS` outline where this frame draws it."""
        upper, lower = inner[:UPPER_N], inner[UPPER_N:]
        gap = float(np.median(lower[: UPPER_N - 2, 1] - upper[1:-1, 1]))
        if self.own_opening and gap < SEAM_GAP:
            self._close_over_teeth(frame, inner, 1.0 - max(0.0, gap) / SEAM_GAP)
        if gap < 1.0:
            return  # lips together
        opening = min(1.0, (gap - 1.0) / 3.0)  # fade the inside in over the first pixels
        s = self.scale
        x0, y0 = np.floor(inner.min(axis=0)).astype(int) - 3
        x1, y1 = np.ceil(inner.max(axis=0)).astype(int) + 4
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, frame.shape[1]), min(y1, frame.shape[0])
        if x1 - x0 < 3 or y1 - y0 < 3:
            return
        patch = frame[y0:y1, x0:x1, :3].astype(np.float32)
        offset = np.array([x0, y0], dtype=np.float32)
        shape = patch.shape[:2]

        hard = _fill(shape, inner - offset)
        # Soft border: the lips' own edge outlines the mouth, the paint fades in under it.
        soft = cv2.GaussianBlur(hard, (0, 0), 0.7 + 0.03 * gap)
        cavity_a = (np.minimum(soft, hard + 0.35) * opening)[..., None]

        # Depth: distance from the lips, so the middle of a wide opening is the darkest.
        depth = cv2.distanceTransform((hard > 0.5).astype(np.uint8), cv2.DIST_L2, 3)
        depth = np.clip(depth / max(1.5, 0.45 * gap), 0.0, 1.0)[..., None]
        # Shaded from the lips' own colour, so every skin tone and light gets its own mouth.
        ij = np.clip(np.round(inner - offset).astype(int), 0, [shape[1] - 1, shape[0] - 1])
        lips = patch[ij[:, 1], ij[:, 0]].mean(axis=0)
        # Drawn teeth take the portrait's light: as bright as its lips allow, a little of
        # their colour (white teeth in a dim, warm photo stand out as pasted on).
        light = float(np.clip(float(lips @ _LUMA) / _LIPS_LUMA, 0.6, 1.0))
        enamel = (_TEETH * 0.82 + lips * 0.18) * light
        near, far = np.maximum(lips * _NEAR, _FLOOR), np.maximum(lips * _FAR, _FLOOR)
        inside = near + (far - near) * depth

        # Per column (1 x w) and per row (h x 1): the 2-D terms below come from broadcasting.
        xs = np.arange(x0, x1, dtype=np.float32)
        xx = xs[None, :]
        yy = np.arange(y0, y1, dtype=np.float32)[:, None]
        mid_x = float(inner[:, 0].mean())
        half_w = max(1.0, float(np.ptp(upper[:, 0])) / 2)
        across = np.clip(np.abs(xx - mid_x) / half_w, 0.0, 1.0)
        upper_y = np.interp(xs, upper[:, 0], upper[:, 1])[None, :]
        lower_y = np.interp(
            xs, np.r_[upper[0, 0], lower[::-1, 0], upper[-1, 0]],
            np.r_[upper[0, 1], lower[::-1, 1], upper[-1, 1]],
        )[None, :]  # fmt: skip

        # A hint of tongue low in a wide opening.
        wide = float(np.clip((gap - 0.12 * s) / (0.12 * s), 0.0, 1.0))
        if wide > 0:
            top = lower_y - 0.3 * gap * (1 - across**2)
            tongue_a = np.clip((yy - top) / 2.0, 0.0, 1.0) * (1 - across) * 0.8 * wide
            shade = 0.75 + 0.25 * np.clip((yy - top) / max(1.0, 0.3 * gap), 0, 1)
            # In the mouth's own light: a tongue as bright as the photo's lips allow.
            tongue = _TONGUE * light
            inside = inside + (tongue * shade[..., None] - inside) * tongue_a[..., None]

        # Lower teeth: on the jaw, mostly in the lower lip's shadow.
        low_h = min(0.28 * gap, 0.045 * s) * (1 - across**2)
        low_a = np.clip((yy - (lower_y - low_h)) / 1.2, 0.0, 1.0) * (1 - across) ** 0.7
        inside = inside + (enamel * 0.55 - inside) * (low_a * 0.5)[..., None]

        # Upper teeth: the portrait's own when it shows them, else drawn.
        teeth_h = min(0.5 * gap, 0.085 * s)
        if self.teeth is not None:
            rgb, real_a = self._portrait_teeth(upper, (x0, y0), shape)
            teeth_a = real_a[..., 0]
        else:
            rgb, teeth_a = self._drawn_teeth(xx, yy, mid_x, half_w, across, upper_y, teeth_h)
            rgb = rgb * (enamel / _TEETH)
        teeth_a = teeth_a[..., None]
        inside = inside * (1 - teeth_a) + rgb * teeth_a

        patch = patch * (1 - cavity_a) + inside * cavity_a
        frame[y0:y1, x0:x1, :3] = np.clip(patch, 0, 255).astype(np.uint8)

    def _close_over_teeth(self, frame: np.ndarray, inner: np.ndarray, strength: float) -> None:
        """Lips closed over a smile's teeth: the warp squeezes the teeth into a thin light
        line between the lips, which still reads as a smile. Tint what is light there to
        the lips' colour, darker along the seam where they meet."""
        pad = max(2, int(round(0.04 * self.scale)))
        x0, y0 = np.floor(inner.min(axis=0)).astype(int) - pad
        x1, y1 = np.ceil(inner.max(axis=0)).astype(int) + pad + 1
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, frame.shape[1]), min(y1, frame.shape[0])
        if x1 - x0 < 3 or y1 - y0 < 3:
            return
        patch = frame[y0:y1, x0:x1, :3].astype(np.float32)
        seam = np.zeros(patch.shape[:2], np.uint8)
        line = np.round(inner[:UPPER_N] - [x0, y0]).astype(np.int32)
        cv2.polylines(seam, [line], False, 255, thickness=2 * pad + 1)  # where the lips meet
        luma = patch @ _LUMA
        chroma = patch.max(axis=2) - patch.min(axis=2)
        near = seam > 0
        lips = np.median(patch[near & (chroma >= 0.2 * luma)], axis=0) if near.any() else None
        if lips is None or not np.isfinite(lips).all():
            return
        light = near & (luma > float(lips @ _LUMA) + 18) & (chroma < 0.5 * luma)
        alpha = np.minimum(1.0, 1.2 * cv2.GaussianBlur(light.astype(np.float32), (0, 0), 1.0))
        alpha *= strength
        # Nothing past the inner corners: the skin beside the mouth keeps its highlights.
        xs = np.arange(x0, x1, dtype=np.float32)
        left, right = float(inner[0, 0]), float(inner[UPPER_N - 1, 0])
        alpha *= (np.clip((xs - left) / pad, 0, 1) * np.clip((right - xs) / pad, 0, 1))[None, :]
        # The lips' colour in the shadow where they meet, keeping some of the texture.
        shade = np.clip(
            luma / max(1.0, float(luma[light].mean()) if light.any() else 1.0), 0.8, 1.2
        )
        paint = lips[None, None, :] * (0.75 * shade)[..., None]
        patch += (paint - patch) * alpha[..., None]
        frame[y0:y1, x0:x1, :3] = np.clip(patch, 0, 255).astype(np.uint8)

    def _drawn_teeth(
        self,
        xx: np.ndarray,
        yy: np.ndarray,
        mid_x: float,
        half_w: float,
        across: np.ndarray,
        upper_y: np.ndarray,
        height: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """A row of upper teeth hanging from the upper lip: gum line at the top, lit in the
        middle, falling into shadow toward the corners, faint gaps between the teeth."""
        below = yy - upper_y  # pixels under the upper lip
        along = np.abs(xx - mid_x) / half_w
        # Where each pixel is within its tooth: 0 at a tooth's middle .. 1 at its edges.
        edges = np.array(_TEETH_EDGES + (1.0,))
        k = np.clip(np.searchsorted(edges, along) - 1, 0, len(edges) - 2)
        within = np.abs((along - edges[k]) / (edges[k + 1] - edges[k]) * 2 - 1)
        # The side teeth recede into the mouth; each tooth's biting edge is rounded.
        h = height * (1 - 0.45 * across**2) * (1 - 0.12 * within**4)
        alpha = np.clip((below + 1.0) / 1.5, 0, 1) * np.clip((h - below) / 1.2 + 0.5, 0, 1)
        alpha *= np.clip(1.15 - across, 0.0, 1.0)
        # Shading: down each tooth a little darker, toward the corners much darker, a faint
        # shadow between neighbours.
        shade = (1.0 - 0.1 * np.clip(below / max(1.0, h.max()), 0, 1)) * (1 - 0.35 * across)
        to_edge_px = (1 - within) * half_w * (edges[k + 1] - edges[k]) / 2
        shade *= 1 - 0.1 * np.clip(1 - to_edge_px / 0.8, 0, 1)
        rgb = _TEETH * shade[..., None]
        gum = np.clip(1.0 - below / max(0.8, 0.14 * h.max()), 0, 1)[..., None] * 0.7
        rgb = rgb * (1 - gum) + _GUM * gum
        return rgb, alpha

    def _portrait_teeth(
        self, upper: np.ndarray, origin: tuple[int, int], shape: tuple[int, ...]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The portrait's teeth carried by the upper lip: scaled with the mouth's width (no
        shear: the teeth are rigid), hanging from the upper lip's middle."""
        teeth = self.teeth
        assert teeth is not None
        rows = [lm.UPPER_LIP_INNER.index(i) for i in _AFFINE_POINTS]
        target = upper[rows] - np.array(origin)
        a = teeth.anchors
        k = float(np.ptp(target[[0, 2], 0])) / max(1.0, float(np.ptp(a[[0, 2], 0])))
        k = min(1.3, max(0.8, k))
        shift = target[1] - k * a[1]
        m = np.array([[k, 0.0, shift[0]], [0.0, k, shift[1]]], dtype=np.float32)
        size = (shape[1], shape[0])
        rgb = cv2.warpAffine(teeth.rgb, m, size, flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        alpha = cv2.warpAffine(teeth.alpha, m, size, flags=cv2.INTER_LINEAR)
        return rgb, alpha[..., None]


def _fill(shape: tuple[int, ...], polygon: np.ndarray) -> np.ndarray:
    """Anti-aliased polygon coverage, 0..1 float32 (quarter-pixel edges)."""
    mask = np.zeros(shape[:2], dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * 4).astype(np.int32)], 255,
                 lineType=cv2.LINE_AA, shift=2)  # fmt: skip
    return mask.astype(np.float32) / 255.0
