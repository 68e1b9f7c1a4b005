"""Draws the background images bundled with the runtime, for the ids of the seed's list.

    python scripts/make_backgrounds.py [--out avatar_runtime/assets/backgrounds] [--only ID]

writes `medical_office.jpg`, `clinic_room.jpg`, `hospital_room.jpg` and
`consultation_room.jpg`: 1280x720 rooms drawn procedurally (walls, floor, window light and
furniture shapes that say which room it is), then defocused the way a camera focused on a
person a metre away blurs the room behind them, lit, graded and given a little grain so the
JPEG has no banding. Everything is deterministic (fixed seeds), so running it again gives the
same pictures. A few seconds on two CPU cores; needs numpy, OpenCV and Pillow (the project
venv).

The camera sits at a seated person's eye height facing the back wall (one-point perspective,
vanishing point `VP`). Seen behind a 512x512 portrait the Compositor shows the middle
720x720 of the picture, and the head and shoulders cover its centre, so each room keeps what
tells it apart (the bookshelf, the exam couch, the monitor, the armchairs) at the sides of
that square and above head height.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

W, H = 1280, 720
VP = (620.0, 290.0)
"""The vanishing point: straight ahead at the camera's height."""
BACK = (150.0, 40.0, 1130.0, 490.0)
"""The back wall (x0, y0, x1, y1); the side walls, floor and ceiling run from it to the
edges of the picture."""
OUT = Path(__file__).resolve().parents[1] / "avatar_runtime" / "assets" / "backgrounds"
JPEG_QUALITY = 86

Color = Sequence[float]
Point = tuple[float, float]
Fill = Color | Callable[[np.ndarray, np.ndarray], np.ndarray]
"""A colour (0-255 RGB), or a function of the pixel grids (ys, xs) of the shape's bounding
box that gives an HxWx3 array of colours."""


# --- drawing -------------------------------------------------------------------------------


def toward(point: Point, k: float, vp: Point = VP) -> Point:
    """`point` moved the fraction `k` of the way to the vanishing point: what lies `k` of the
    way from the picture plane to infinity straight behind it."""
    return (point[0] + (vp[0] - point[0]) * k, point[1] + (vp[1] - point[1]) * k)


def edge_at_x(a: Point, b: Point, x: float) -> Point:
    """The point of the line through a and b at x."""
    t = (x - a[0]) / (b[0] - a[0])
    return (x, a[1] + (b[1] - a[1]) * t)


def vgrad(top: Color, bottom: Color, y0: float, y1: float) -> Fill:
    def fill(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        t = np.clip((ys - y0) / max(1.0, y1 - y0), 0.0, 1.0)[..., None]
        return np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t

    return fill


def hgrad(left: Color, right: Color, x0: float, x1: float) -> Fill:
    def fill(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        t = np.clip((xs - x0) / max(1.0, x1 - x0), 0.0, 1.0)[..., None]
        return np.asarray(left, np.float32) * (1 - t) + np.asarray(right, np.float32) * t

    return fill


class Canvas:
    """A float RGB picture (0-255) that shapes are painted on, antialiased."""

    def __init__(self, seed: int) -> None:
        self.img = np.zeros((H, W, 3), np.float32)
        self.rng = np.random.default_rng(seed)
        self.clip: tuple[int, int, int, int] | None = None
        """While set, (x0, y0, x1, y1): nothing is painted outside it (a view out of a
        window)."""
        self.dx = 0.0
        """Added to every x while set (`shifted`): moves a group of things sideways."""

    @contextmanager
    def shifted(self, dx: float) -> Iterator[None]:
        self.dx, before = self.dx + dx, self.dx
        try:
            yield
        finally:
            self.dx = before

    # masks

    @staticmethod
    def _box(pts: np.ndarray, pad: int = 2) -> tuple[int, int, int, int] | None:
        x0 = max(0, int(math.floor(pts[:, 0].min())) - pad)
        y0 = max(0, int(math.floor(pts[:, 1].min())) - pad)
        x1 = min(W, int(math.ceil(pts[:, 0].max())) + pad)
        y1 = min(H, int(math.ceil(pts[:, 1].max())) + pad)
        if x1 <= x0 or y1 <= y0:
            return None
        return x0, y0, x1, y1

    def _poly_mask(self, pts: Sequence[Point]) -> tuple[tuple[int, int, int, int], np.ndarray]:
        array = np.asarray(pts, np.float64) + (self.dx, 0.0)
        box = self._box(array)
        if box is None:
            return (0, 0, 0, 0), np.zeros((0, 0), np.float32)
        x0, y0, x1, y1 = box
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        fixed = np.round((array - (x0, y0)) * 16).astype(np.int32)
        cv2.fillPoly(mask, [fixed], 255, cv2.LINE_AA, shift=4)
        return box, mask.astype(np.float32) * (1.0 / 255.0)

    def _paint(
        self, box: tuple[int, int, int, int], mask: np.ndarray, fill: Fill, alpha: float
    ) -> None:
        x0, y0, x1, y1 = box
        if mask.size == 0:
            return
        if self.clip is not None:
            cx0, cy0, cx1, cy1 = self.clip
            nx0, ny0, nx1, ny1 = max(x0, cx0), max(y0, cy0), min(x1, cx1), min(y1, cy1)
            if nx1 <= nx0 or ny1 <= ny0:
                return
            mask = mask[ny0 - y0 : ny1 - y0, nx0 - x0 : nx1 - x0]
            x0, y0, x1, y1 = nx0, ny0, nx1, ny1
        region = self.img[y0:y1, x0:x1]
        if callable(fill):
            ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            color = fill(ys, xs)
        else:
            color = np.asarray(fill, np.float32)
        m = (mask * alpha)[..., None]
        region *= 1.0 - m
        region += color * m

    # shapes

    def poly(self, pts: Sequence[Point], fill: Fill, alpha: float = 1.0) -> None:
        box, mask = self._poly_mask(pts)
        self._paint(box, mask, fill, alpha)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: Fill, alpha: float = 1.0):
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], fill, alpha)

    def ellipse(
        self,
        cx: float,
        cy: float,
        rx: float,
        ry: float,
        fill: Fill,
        alpha: float = 1.0,
        angle: float = 0.0,
    ) -> None:
        t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        x, y = rx * np.cos(t), ry * np.sin(t)
        pts = np.stack([cx + x * c - y * s, cy + x * s + y * c], axis=1)
        self.poly([tuple(p) for p in pts], fill, alpha)

    def line(self, a: Point, b: Point, width: float, fill: Fill, alpha: float = 1.0) -> None:
        dx, dy = b[0] - a[0], b[1] - a[1]
        length = math.hypot(dx, dy) or 1.0
        nx, ny = -dy / length * width / 2, dx / length * width / 2
        self.poly(
            [
                (a[0] + nx, a[1] + ny),
                (b[0] + nx, b[1] + ny),
                (b[0] - nx, b[1] - ny),
                (a[0] - nx, a[1] - ny),
            ],
            fill,
            alpha,
        )

    def box(
        self,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        depth: float,
        front: Fill,
        side: Fill,
        top: Fill,
        bottom: Fill | None = None,
    ) -> None:
        """A box whose front face is the rectangle (x0, y0)-(x1, y1) and which reaches the
        fraction `depth` of the way back to the vanishing point: the faces the camera sees."""
        x0, x1 = x0 + self.dx, x1 + self.dx  # (the perspective is that of where it ends up)
        a, b, c, d = (x0, y0), (x1, y0), (x1, y1), (x0, y1)
        ka, kb, kc, kd = (toward(p, depth) for p in (a, b, c, d))
        with self.shifted(-self.dx):
            if y0 > VP[1]:  # below eye level: the top shows
                self.poly([a, b, kb, ka], top)
            elif y1 < VP[1] and bottom is not None:
                self.poly([d, c, kc, kd], bottom)
            if x1 < VP[0]:  # left of the camera: the right side shows
                self.poly([b, c, kc, kb], side)
            elif x0 > VP[0]:
                self.poly([a, d, kd, ka], side)
            self.rect(x0, y0, x1, y1, front)

    # light

    def shade(self, pts: Sequence[Point], strength: float, blur: float) -> None:
        """Darken inside a polygon (a cast or contact shadow), its edge blurred by `blur`."""
        mask = np.zeros((H, W), np.float32)
        box, small = self._poly_mask(pts)
        x0, y0, x1, y1 = box
        mask[y0:y1, x0:x1] = small
        if blur > 0:
            mask = cv2.GaussianBlur(mask, (0, 0), blur)
        self.img *= (1.0 - strength * mask)[..., None]

    def glow(self, cx: float, cy: float, rx: float, ry: float, color: Color, gain: float):
        """Add light: a soft elliptical pool of `color` (a lamp, window light on a wall)."""
        ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
        d2 = ((xs - cx - self.dx) / rx) ** 2 + ((ys - cy) / ry) ** 2
        self.img += (np.exp(-d2)[..., None] * np.asarray(color, np.float32) * gain).astype(
            np.float32
        )

    def texture(self, amount: float, scale: float, pts: Sequence[Point] | None = None) -> None:
        """Low-frequency mottling (plaster, fabric, vinyl): multiplies by 1 +- amount."""
        small = self.rng.normal(0, 1, (max(2, int(H / scale)), max(2, int(W / scale))))
        noise = cv2.resize(small.astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC)
        noise = noise / (noise.std() + 1e-6)
        if pts is not None:
            mask = np.zeros((H, W), np.float32)
            box, small_mask = self._poly_mask(pts)
            bx0, by0, bx1, by1 = box
            mask[by0:by1, bx0:bx1] = small_mask
            noise *= mask
        self.img *= (1.0 + amount * noise)[..., None]


# --- the room ------------------------------------------------------------------------------


def shell(
    c: Canvas,
    wall: Color,
    side_wall: Color,
    floor_near: Color,
    floor_far: Color,
    ceiling: Color,
    skirting: Color,
    planks: Color | None = None,
) -> None:
    """Back wall, side walls, ceiling and floor, with skirting boards and, for a wooden
    floor, planks running toward the back wall."""
    bx0, by0, bx1, by1 = BACK
    tl, tr, br, bl = (bx0, by0), (bx1, by0), (bx1, by1), (bx0, by1)
    far_l_top = edge_at_x(VP, tl, 0)
    far_l_bot = edge_at_x(VP, bl, 0)
    far_r_top = edge_at_x(VP, tr, W)
    far_r_bot = edge_at_x(VP, br, W)
    c.poly([(0, 0), (W, 0), far_r_top, tr, tl, far_l_top], ceiling)
    c.poly([bl, br, far_r_bot, (W, H), (0, H), far_l_bot], vgrad(floor_far, floor_near, by1, H))
    c.poly([far_l_top, tl, bl, far_l_bot], hgrad(side_wall, wall, 0, bx0))
    c.poly([tr, far_r_top, far_r_bot, br], hgrad(wall, side_wall, bx1, W))
    c.rect(bx0, by0, bx1, by1, wall)
    c.texture(0.018, 40)
    if planks is not None:
        # Boards run from the back wall toward the camera, on lines through the vanishing
        # point; their ends are staggered, further apart as they come closer.
        spacing = 34.0
        grow = (H - VP[1]) / (by1 - VP[1])
        for i in range(-40, 41):
            x = VP[0] + i * spacing
            if not bx0 <= x <= bx1:  # (the lines through the back wall's width cover the floor)
                continue
            end = (VP[0] + (x - VP[0]) * grow, H)
            c.line((x, by1), end, 1.3, planks, 0.55)
            for j in range(1, 8):
                t = ((j + (i % 3) / 3) / 8) ** 1.5  # 0 at the wall, 1 at the bottom
                y = by1 + (H - by1) * t
                scale = (y - VP[1]) / (by1 - VP[1])
                left = VP[0] + (x - VP[0]) * scale
                c.line((left, y), (left + spacing * scale, y), 1.0, planks, 0.4)
    # Skirting boards along the back wall and up the sides.
    sk = 12.0
    c.rect(bx0, by1 - sk, bx1, by1, skirting)
    c.poly([far_l_bot, bl, (bx0, by1 - sk), edge_at_x(VP, (bx0, by1 - sk), 0)], skirting)
    c.poly([br, far_r_bot, edge_at_x(VP, (bx1, by1 - sk), W), (bx1, by1 - sk)], skirting)
    # Ambient occlusion in the corners where walls meet.
    c.shade([(bx0 - 6, by0), (bx0 + 6, by0), (bx0 + 6, by1), (bx0 - 6, by1)], 0.10, 10)
    c.shade([(bx1 - 6, by0), (bx1 + 6, by0), (bx1 + 6, by1), (bx1 - 6, by1)], 0.10, 10)
    c.shade([(bx0, by1 - 3), (bx1, by1 - 3), (bx1, by1 + 8), (bx0, by1 + 8)], 0.12, 8)
    c.shade([(bx0, by0 - 6), (bx1, by0 - 6), (bx1, by0 + 5), (bx0, by0 + 5)], 0.10, 10)


def window(
    c: Canvas,
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    frame: Color,
    outside: str = "trees",
    blinds: float = 0.0,
    slat: Color = (228, 224, 214),
) -> None:
    """A window in the back wall: the bright view (sky over trees or buildings), mullions, a
    sill, and venetian blinds lowered over the top `blinds` fraction."""
    c.rect(x0 - 10, y0 - 10, x1 + 10, y1 + 10, frame)
    sky = vgrad((196, 218, 240), (240, 244, 244), y0, y1)
    c.rect(x0, y0, x1, y1, sky)
    rng = c.rng
    c.clip = (int(x0), int(y0), int(x1), int(y1))
    if outside == "trees":
        for _ in range(26):
            cx = rng.uniform(x0 - 20, x1 + 20)
            cy = rng.uniform(y0 + (y1 - y0) * 0.45, y1 + 10)
            r = rng.uniform(25, 60)
            green = np.array([112, 146, 96]) * rng.uniform(0.8, 1.15)
            c.ellipse(cx, cy, r, r * 0.8, np.clip(green, 0, 255), 0.85)
    elif outside == "buildings":
        for _ in range(6):
            bx = rng.uniform(x0 - 30, x1)
            bw = rng.uniform(50, 110)
            top = rng.uniform(y0 + (y1 - y0) * 0.25, y0 + (y1 - y0) * 0.6)
            tone = rng.uniform(150, 205)
            c.rect(bx, top, bx + bw, y1, (tone, tone * 0.96, tone * 0.9))
            for wy in np.arange(top + 10, y1, 18):  # rows of windows
                c.rect(bx + 6, wy, bx + bw - 6, wy + 7, (tone * 0.7, tone * 0.78, tone * 0.86))
        for _ in range(10):
            cx = rng.uniform(x0, x1)
            c.ellipse(cx, y1, rng.uniform(25, 45), rng.uniform(20, 35), (104, 138, 90), 0.9)
    c.clip = None
    mid = (x0 + x1) / 2
    c.rect(mid - 4, y0, mid + 4, y1, frame)
    c.rect(x0, y0 + (y1 - y0) * 0.62 - 3, x1, y0 + (y1 - y0) * 0.62 + 3, frame)
    c.rect(x0 - 18, y1 + 8, x1 + 18, y1 + 18, frame)  # sill
    c.shade(
        [(x0 - 18, y1 + 18), (x1 + 18, y1 + 18), (x1 + 18, y1 + 30), (x0 - 18, y1 + 30)], 0.12, 5
    )
    if blinds > 0:
        bottom = y0 + (y1 - y0) * blinds
        c.rect(x0 - 6, y0 - 14, x1 + 6, y0 - 2, slat)  # head rail
        y = y0
        while y < bottom:
            c.rect(x0 - 4, y, x1 + 4, y + 8, slat)
            c.rect(x0 - 4, y + 8, x1 + 4, y + 9.5, np.asarray(slat) * 0.8)
            y += 13
        c.rect(x0 - 6, bottom, x1 + 6, bottom + 5, np.asarray(slat) * 0.85)  # bottom rail


def frame_on_wall(
    c: Canvas,
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    border: Color,
    inner: Fill,
    mat: Color | None = (240, 238, 232),
    certificate: bool = False,
) -> None:
    """A framed picture on a mat; `certificate`: a diploma (a title, lines of text, a seal)."""
    c.shade([(x0 + 4, y0 + 6), (x1 + 6, y0 + 6), (x1 + 6, y1 + 8), (x0 + 4, y1 + 8)], 0.18, 4)
    c.rect(x0, y0, x1, y1, border)
    inset = 6
    if mat is not None:
        c.rect(x0 + inset, y0 + inset, x1 - inset, y1 - inset, mat)
        inset += 10
    c.rect(x0 + inset, y0 + inset, x1 - inset, y1 - inset, inner)
    if certificate:
        ix0, iy0, ix1, iy1 = x0 + inset, y0 + inset, x1 - inset, y1 - inset
        w, h = ix1 - ix0, iy1 - iy0
        c.rect(ix0 + w * 0.2, iy0 + h * 0.14, ix1 - w * 0.2, iy0 + h * 0.24, (70, 56, 40))
        for k in range(3):
            y = iy0 + h * (0.38 + k * 0.13)
            c.rect(ix0 + w * 0.12, y, ix1 - w * 0.12, y + max(1.5, h * 0.04), (120, 110, 96))
        c.ellipse(ix1 - w * 0.2, iy1 - h * 0.17, h * 0.12, h * 0.12, (190, 150, 60))


def plant(
    c: Canvas,
    cx: float,
    base: float,
    height: float,
    spread: float,
    pot: Color,
    pot_w: float,
    pot_h: float,
    leaf: Color = (74, 112, 62),
) -> None:
    """A potted plant: a tapered pot and a crown of overlapping leaves."""
    c.shade(
        [
            (cx - pot_w * 0.7, base - 6),
            (cx + pot_w * 0.9, base - 6),
            (cx + pot_w * 1.1, base + 10),
            (cx - pot_w * 0.8, base + 10),
        ],
        0.3,
        8,
    )
    rng = c.rng
    top = base - pot_h
    for _ in range(70):
        t = rng.uniform(0, 1) ** 0.8
        ly = top - t * (height - pot_h)
        lx = cx + rng.normal(0, spread * (0.35 + 0.4 * (1 - abs(t - 0.55) * 1.4)))
        tone = np.asarray(leaf, np.float32) * rng.uniform(0.65, 1.25)
        angle = rng.uniform(-70, 70) + (lx - cx) * 0.6
        c.line((cx + (lx - cx) * 0.2, top), (lx, ly), 2.0, (60, 80, 45), 0.6)
        c.ellipse(
            lx, ly, rng.uniform(14, 30), rng.uniform(7, 13), np.clip(tone, 0, 255), 1.0, angle
        )
    c.poly(
        [
            (cx - pot_w / 2, top),
            (cx + pot_w / 2, top),
            (cx + pot_w * 0.4, base),
            (cx - pot_w * 0.4, base),
        ],
        hgrad(pot, np.asarray(pot) * 0.75, cx - pot_w / 2, cx + pot_w / 2),
    )
    c.rect(cx - pot_w / 2 - 3, top - 4, cx + pot_w / 2 + 3, top + 6, np.asarray(pot) * 1.05)


def window_light(c: Canvas, x0: float, x1: float, y0: float, y1: float, warm: Color) -> None:
    """Daylight from a back-wall window: a glow on the wall around it and a pool on the
    floor in front of it."""
    cx = (x0 + x1) / 2
    c.glow(cx, (y0 + y1) / 2, (x1 - x0) * 1.1, (y1 - y0) * 0.9, warm, 0.16)
    by1 = BACK[3]
    pool = Canvas(0)
    pool.poly([(x0 - 10, by1 + 8), (x1 + 10, by1 + 8), (x1 + 150, H), (x0 - 130, H)], (1, 1, 1))
    light = cv2.GaussianBlur(pool.img[..., 0], (0, 0), 28)
    c.img += light[..., None] * np.asarray(warm, np.float32) * 0.12


def on_top(x0: float, x1: float, y: float, k0: float, k1: float) -> list[Point]:
    """The part of a horizontal surface whose front edge is (x0..x1, y) that lies between the
    depth fractions k0 and k1 (as `Canvas.box` measures depth)."""
    return [toward((x0, y), k0), toward((x1, y), k0), toward((x1, y), k1), toward((x0, y), k1)]


# --- finishing -----------------------------------------------------------------------------


def defocus(img: np.ndarray, radius: float) -> np.ndarray:
    """A lens's out-of-focus blur: a disc kernel (bright spots become soft discs, as bokeh),
    softened by a small Gaussian, in linear light so highlights bloom as a camera's do."""
    r = int(math.ceil(radius))
    ys, xs = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    disc = np.clip(radius + 0.5 - np.sqrt(xs**2 + ys**2), 0.0, 1.0)
    disc /= disc.sum()
    linear = (np.clip(img, 0, 255) / 255.0) ** 2.2
    blurred = cv2.filter2D(linear, -1, disc, borderType=cv2.BORDER_REFLECT)
    blurred = cv2.GaussianBlur(blurred, (0, 0), radius * 0.25)
    return (blurred ** (1 / 2.2)) * 255.0


def finish(
    c: Canvas,
    grade: Color,
    key: tuple[float, float, float] = (640.0, 250.0, 0.0),
    radius: float = 11.0,
    vignette: float = 0.16,
) -> np.ndarray:
    """Light falling off away from the room's main light (`key`: x, y, strength), defocus, a
    light vignette, a colour grade and grain; uint8 RGB."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    kx, ky, strength = key
    if strength:
        d = np.sqrt((xs - kx) ** 2 + (ys - ky) ** 2) / W
        c.img *= (1.0 - strength * np.clip(d, 0, 1))[..., None]
    img = defocus(c.img, radius)
    d2 = ((xs - W / 2) / (W * 0.62)) ** 2 + ((ys - H * 0.45) / (H * 0.75)) ** 2
    img *= (1.0 - vignette * np.clip(d2, 0, 1.6))[..., None]
    img *= np.asarray(grade, np.float32)[None, None, :]
    img += c.rng.normal(0, 1.6, (H, W, 1)).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


# --- the rooms -----------------------------------------------------------------------------


def books(c: Canvas, x0: float, x1: float, base: float, max_h: float) -> None:
    """A shelf's worth of book spines standing on `base`, with a gap now and then."""
    palette = [
        (122, 40, 38),
        (40, 58, 92),
        (46, 84, 62),
        (176, 140, 70),
        (222, 214, 190),
        (96, 66, 44),
        (150, 70, 40),
        (60, 60, 64),
        (140, 150, 160),
        (180, 170, 140),
    ]
    rng = c.rng
    x = x0 + rng.uniform(0, 8)
    while x < x1 - 8:
        w = rng.uniform(7, 17)
        if x + w > x1:
            break
        if rng.uniform() < 0.07:
            x += rng.uniform(12, 30)
            continue
        h = max_h * rng.uniform(0.62, 0.96)
        tone = np.asarray(palette[rng.integers(len(palette))], np.float32) * rng.uniform(0.8, 1.1)
        c.rect(x, base - h, x + w, base, np.clip(tone, 0, 255))
        c.rect(x, base - h * 0.82, x + w, base - h * 0.78, np.clip(tone * 1.3, 0, 255), 0.5)
        x += w + rng.uniform(0, 1.5)


def medical_office() -> np.ndarray:
    """A doctor's office: warm walls, wooden floor, a window with blinds over a desk with a
    monitor and a lamp, framed certificates, a plant, a tall bookshelf and a filing
    cabinet."""
    c = Canvas(2)
    shell(
        c,
        wall=(210, 198, 180),
        side_wall=(176, 164, 148),
        floor_near=(124, 84, 54),
        floor_far=(152, 108, 72),
        ceiling=(226, 222, 214),
        skirting=(238, 234, 224),
        planks=(92, 60, 40),
    )

    window(c, 205, 95, 455, 320, frame=(240, 238, 232), outside="trees", blinds=0.38)
    frame_on_wall(c, 505, 105, 585, 170, (60, 44, 30), (232, 226, 206), certificate=True)
    frame_on_wall(c, 505, 185, 585, 250, (60, 44, 30), (226, 222, 206), certificate=True)
    frame_on_wall(c, 640, 110, 735, 185, (60, 44, 30), (230, 224, 204), certificate=True)

    # The desk under the window, and what stands on it.
    c.shade([(170, 485), (610, 485), (660, 550), (140, 550)], 0.35, 14)
    desk_top = (176, 118, 76)
    c.shade([(300, 396), (590, 396), (590, 500), (300, 500)], 0.35, 10)  # under the desk
    c.box(165, 384, 610, 398, 0.14, (150, 98, 62), (120, 78, 48), desk_top)
    c.box(172, 398, 300, 505, 0.12, (142, 94, 60), (110, 72, 46), desk_top)  # drawers
    for y in (408, 440, 472):
        c.rect(178, y, 294, y + 27, (152, 102, 66))
        c.rect(226, y + 12, 246, y + 15, (210, 190, 150))
    c.box(592, 398, 606, 508, 0.12, (128, 84, 54), (100, 64, 40), desk_top)
    c.rect(350, 350, 396, 356, (52, 52, 56))  # the monitor, back a little on the desk
    c.rect(366, 318, 380, 352, (60, 60, 64))
    c.rect(300, 250, 446, 326, (34, 36, 42))
    c.rect(305, 255, 441, 320, vgrad((74, 100, 132), (50, 68, 94), 255, 320))
    c.poly(on_top(462, 530, 384, 0.02, 0.09), (246, 244, 238))  # papers
    c.poly(on_top(472, 536, 384, 0.05, 0.11), (236, 234, 228))
    c.box(548, 360, 564, 380, 0.02, (232, 234, 238), (206, 208, 212), (200, 200, 204))  # mug
    c.ellipse(214, 378, 18, 5, (150, 122, 72))  # the lamp
    c.line((214, 376), (236, 306), 4, (176, 146, 88))
    c.line((236, 306), (266, 288), 4, (176, 146, 88))
    c.poly([(254, 282), (290, 278), (296, 300), (260, 306)], (190, 160, 92))
    c.glow(276, 330, 60, 36, (255, 214, 150), 0.22)

    # The bookshelf on the right and a filing cabinet at the edge.
    c.shade([(800, 505), (1110, 505), (1140, 565), (780, 565)], 0.4, 14)
    c.box(815, 70, 1095, 512, 0.07, (112, 74, 46), (92, 60, 38), (130, 88, 56), (88, 58, 36))
    inner_x0, inner_x1 = 835, 1075
    c.rect(inner_x0, 92, inner_x1, 496, (72, 48, 30))
    shelves = [92, 170, 248, 326, 404, 496]
    for top, bottom in zip(shelves, shelves[1:], strict=False):
        books(c, inner_x0 + 4, inner_x1 - 4, bottom - 2, (bottom - top) * 0.92)
        c.rect(inner_x0 - 2, bottom - 2, inner_x1 + 2, bottom + 8, (132, 90, 58))
        c.shade(
            [(inner_x0, top + 8), (inner_x1, top + 8), (inner_x1, top + 22), (inner_x0, top + 22)],
            0.3,
            6,
        )
    c.box(1140, 300, 1280, 560, 0.06, (196, 190, 178), (170, 164, 152), (210, 204, 192))
    for y in (320, 400, 480):
        c.rect(1150, y, 1280, y + 70, (204, 198, 186))
        c.rect(1195, y + 30, 1235, y + 36, (150, 146, 138))

    plant(c, 708, 505, 230, 46, pot=(230, 226, 218), pot_w=60, pot_h=68)
    c.rect(560, 44, 720, 52, (250, 250, 246))
    window_light(c, 205, 455, 95, 320, (255, 246, 226))
    c.glow(640, 40, 260, 80, (255, 248, 230), 0.10)
    return finish(c, grade=(1.02, 1.0, 0.96), key=(330, 220, 0.22))


def clinic_room() -> np.ndarray:
    """An examination room: cool pale walls and a vinyl floor, an exam couch with a paper
    sheet and a raised back, an eye chart, a wall diagnostic set and blood pressure gauge,
    cabinets with a counter and a sink, a privacy curtain."""
    c = Canvas(3)
    shell(
        c,
        wall=(222, 230, 232),
        side_wall=(190, 200, 204),
        floor_near=(166, 172, 172),
        floor_far=(190, 196, 196),
        ceiling=(238, 240, 240),
        skirting=(140, 152, 158),
    )
    c.texture(0.015, 5, [(0, BACK[3]), (W, BACK[3]), (W, H), (0, H)])
    c.rect(BACK[0], 318, BACK[2], 328, (150, 190, 196))  # a painted stripe

    # The privacy curtain, bunched at the left on its ceiling track.
    c.rect(150, 44, 560, 50, (200, 204, 206))
    for i in range(12):
        x = 152 + i * 11
        c.rect(x, 50, x + 12, 470, (150, 190, 205) if i % 2 else (170, 206, 218))
    c.shade([(150, 60), (290, 60), (290, 470), (150, 470)], 0.08, 20)

    # The exam couch along the wall: a drawer base, a thick padded top, the raised back rest
    # at the left and the paper sheet pulled over both.
    c.shade([(300, 488), (730, 488), (780, 550), (270, 550)], 0.35, 14)
    c.box(322, 410, 690, 502, 0.16, (232, 234, 234), (204, 208, 210), (240, 240, 240))
    for x in (330, 452, 574):
        c.rect(x, 420, x + 108, 494, (224, 227, 228))
        c.rect(x + 42, 452, x + 66, 456, (150, 156, 160))
    teal = np.array([52, 104, 122], np.float32)
    c.box(300, 380, 712, 410, 0.18, teal, teal * 0.8, teal * 1.25)
    c.poly(on_top(430, 700, 380, 0.05, 0.14), (248, 248, 244))  # the paper sheet
    c.line((440, 382), (330, 300), 30, teal * 0.9)  # the back rest, raised
    c.line((438, 372), (338, 294), 12, teal * 1.25)
    c.line((436, 370), (346, 296), 5, (248, 248, 244))
    c.ellipse(704, 392, 9, 14, (244, 244, 240))  # the paper roll at the foot
    c.box(560, 478, 650, 522, 0.1, (196, 200, 204), (168, 174, 178), (216, 220, 222))  # step

    # The eye chart above the couch: a big letter, then rows of smaller ones.
    c.shade([(302, 116), (394, 116), (394, 276), (302, 276)], 0.15, 4)
    c.rect(298, 110, 390, 270, (250, 250, 248))
    rows = [(22, 1), (14, 2), (10, 3), (8, 4), (6, 5), (5, 6), (4, 7), (3, 8)]
    y = 120.0
    for size, count in rows:
        step = 66 / count if count > 1 else 0
        x = 344 - step * (count - 1) / 2 - size / 2
        for _ in range(count):
            stroke = max(1.0, size / 5)
            c.rect(x, y, x + stroke, y + size, (30, 30, 34))  # an 'E'
            for fy in (y, y + size / 2 - stroke / 2, y + size - stroke):
                c.rect(x, fy, x + size, fy + stroke, (30, 30, 34))
            x += step
        y += size + 7
    c.rect(318, y, 370, y + 2, (200, 60, 50))
    # The wall diagnostic set and a blood pressure gauge.
    c.rect(458, 206, 548, 246, (212, 214, 216))
    c.rect(470, 214, 480, 242, (40, 40, 44))
    c.rect(518, 214, 528, 242, (40, 40, 44))
    c.line((475, 242), (488, 300), 2, (30, 30, 30))
    c.line((523, 242), (508, 300), 2, (30, 30, 30))
    c.rect(580, 196, 640, 266, (80, 84, 92))
    c.ellipse(610, 222, 17, 17, (236, 236, 232))
    c.line((610, 266), (600, 318), 3, (40, 40, 44))

    # Cabinets on the right: upper ones, glove boxes and a sharps bin, a counter and sink.
    c.shade([(790, 505), (1125, 505), (1130, 555), (770, 555)], 0.3, 14)
    c.box(
        800, 96, 1120, 236, 0.06, (236, 238, 238), (210, 214, 216), (236, 238, 238), (196, 200, 202)
    )
    for x in (806, 912, 1018):
        c.rect(x, 102, x + 98, 230, (244, 245, 245))
        c.rect(x + 88, 150, x + 92, 190, (150, 156, 160))
    c.shade([(800, 236), (1120, 236), (1120, 256), (800, 256)], 0.18, 6)
    c.rect(820, 296, 880, 330, (110, 150, 200))
    c.rect(890, 296, 950, 330, (170, 120, 190))
    c.rect(1040, 282, 1066, 332, (236, 236, 236))
    c.rect(1046, 332, 1060, 338, (120, 160, 190))
    c.box(968, 352, 1006, 386, 0.04, (214, 48, 42), (180, 40, 36), (240, 210, 60))
    c.box(790, 386, 1125, 398, 0.15, (176, 180, 182), (150, 154, 156), (196, 200, 202))
    c.poly(on_top(862, 944, 386, 0.04, 0.12), (140, 146, 150))  # the sink
    c.line((903, 376), (903, 350), 4, (196, 200, 204))
    c.line((903, 350), (918, 352), 4, (196, 200, 204))
    c.box(800, 398, 1115, 502, 0.12, (230, 232, 232), (200, 204, 206), (230, 232, 232))
    for x in (806, 912, 1018):
        c.rect(x, 404, x + 96, 496, (240, 241, 241))
        c.rect(x + 40, 414, x + 58, 418, (150, 156, 160))

    # A wheeled stool; on the right wall, a hand-washing sign.
    c.ellipse(756, 474, 34, 9, (50, 56, 62))
    c.rect(752, 474, 760, 520, (150, 150, 150))
    c.ellipse(756, 522, 26, 5, (60, 60, 64))
    c.rect(1160, 200, 1230, 290, (246, 246, 246))
    c.rect(1170, 214, 1220, 230, (80, 150, 200))
    c.rect(500, 44, 760, 56, (252, 252, 252))  # the ceiling panel: cool, even light
    c.glow(640, 60, 420, 200, (240, 246, 255), 0.14)
    c.glow(250, 250, 300, 300, (240, 248, 255), 0.06)
    return finish(c, grade=(0.97, 1.0, 1.03), key=(640, 60, 0.12))


def hospital_room() -> np.ndarray:
    """A hospital room: the bed with its raised head, pillow, rails and blanket, the headwall
    with the patient monitor and oxygen outlets, an IV stand, a window with curtains and a
    visitor's chair."""
    c = Canvas(4)
    shell(
        c,
        wall=(218, 216, 198),
        side_wall=(186, 186, 170),
        floor_near=(174, 168, 154),
        floor_far=(196, 190, 176),
        ceiling=(234, 234, 228),
        skirting=(140, 130, 112),
    )
    c.texture(0.02, 5, [(0, BACK[3]), (W, BACK[3]), (W, H), (0, H)])

    # The window on the left, its curtains open, a visitor's chair in front.
    window(c, 215, 105, 440, 335, frame=(230, 230, 224), outside="buildings")
    for x0 in (180, 425):
        for i in range(5):
            x = x0 + i * 9
            c.rect(x, 84, x + 10, 400, (150, 176, 170) if i % 2 else (168, 192, 184))
    c.rect(170, 80, 480, 86, (190, 190, 186))
    c.shade([(250, 490), (390, 490), (410, 534), (240, 534)], 0.3, 10)
    c.rect(266, 340, 374, 414, (104, 114, 134))  # the chair's back
    c.box(260, 412, 380, 432, 0.12, (110, 120, 140), (90, 100, 118), (124, 136, 156))
    c.rect(262, 432, 270, 504, (120, 120, 124))
    c.rect(370, 432, 378, 504, (120, 120, 124))

    # The head of the bed and what is around it, moved toward the middle so that they show
    # beside a portrait's head.
    with c.shifted(-90):
        # The headwall: a wood-tone panel with a reading light, outlets and an oxygen flowmeter.
        c.rect(700, 150, 1130, 300, (178, 140, 100))
        c.rect(700, 150, 1130, 162, (196, 160, 118))
        c.rect(720, 250, 1110, 266, (210, 210, 206))
        for x in (740, 790, 1060):
            c.rect(x, 252, x + 18, 264, (60, 140, 70) if x == 740 else (230, 230, 230))
        c.rect(1090, 228, 1108, 252, (230, 230, 232))
        c.ellipse(1099, 222, 9, 9, (60, 160, 80))
        c.rect(740, 164, 860, 172, (250, 246, 230))
        c.glow(800, 190, 150, 40, (255, 240, 210), 0.2)

        # The patient monitor on its arm.
        c.line((1060, 150), (1060, 110), 6, (170, 172, 176))
        c.line((1060, 110), (985, 120), 6, (170, 172, 176))
        c.box(880, 86, 1004, 180, 0.03, (54, 56, 60), (40, 42, 46), (60, 62, 66), (40, 42, 46))
        c.rect(888, 94, 996, 172, (14, 20, 24))
        traces = [
            ((70, 230, 100), 112, 10, True),
            ((80, 200, 230), 136, 5, False),
            ((240, 210, 70), 158, 4, False),
        ]
        for color, y, amp, ecg in traces:
            pts = []
            for x in np.arange(892, 962, 1.5):
                phase = (x - 892) / 23.0
                if ecg:
                    offset = amp * math.exp(-((phase % 1.0 - 0.5) ** 2) / 0.003)
                else:
                    offset = amp * math.sin(phase * 2 * math.pi)
                pts.append((x, y - offset))
            for a, b in zip(pts, pts[1:], strict=False):
                c.line(a, b, 1.6, color)
            c.rect(968, y - 9, 990, y + 3, color, 0.9)  # the numbers
        c.glow(940, 132, 70, 50, (120, 210, 200), 0.1)

        # The bed, head to the right against the headwall, seen from its side: wheels, the
        # frame, the mattress with its head section raised, a pillow, a blanket over the foot,
        # side rails by the head, head and foot boards.
        c.shade([(630, 505), (1150, 505), (1180, 575), (610, 575)], 0.35, 16)
        for x in (690, 1064):
            c.rect(x, 426, x + 14, 500, (120, 124, 130))
            c.ellipse(x + 7, 506, 12, 10, (50, 50, 54))
        c.rect(690, 468, 1078, 476, (130, 134, 140))
        c.box(660, 404, 1096, 430, 0.18, (150, 154, 160), (120, 124, 130), (170, 174, 178))
        sheet = (246, 246, 242)
        c.box(652, 352, 910, 406, 0.18, sheet, (222, 222, 218), (250, 250, 246))
        c.poly([(900, 352), (1046, 248), (1084, 292), (914, 406)], sheet)  # raised head
        c.poly([(900, 352), (1046, 248), (1052, 256), (906, 360)], (252, 252, 250))
        c.ellipse(1018, 268, 60, 28, (220, 222, 226), angle=-35)  # the pillow
        c.ellipse(1016, 266, 54, 23, (252, 252, 252), angle=-35)
        blanket = np.array([118, 158, 200], np.float32)
        c.box(646, 346, 884, 420, 0.18, blanket, blanket * 0.8, blanket * 1.12)
        c.rect(862, 346, 888, 420, blanket * 1.14)  # folded back
        c.rect(646, 376, 884, 380, blanket * 0.9)
        rail = np.array([204, 208, 214], np.float32)
        c.rect(934, 322, 1070, 390, rail, 0.92)
        for x0, x1 in ((946, 994), (1006, 1058)):
            c.rect(x0, 334, x1, 362, rail * 0.72)
        c.rect(934, 386, 1070, 392, rail * 0.8)
        board = np.array([176, 158, 132], np.float32)
        c.box(1088, 276, 1114, 442, 0.06, board, board * 0.85, board * 1.1)
        c.box(622, 314, 650, 436, 0.1, board, board * 0.85, board * 1.1)

        # An IV stand by the head of the bed, a bag of saline on its hook.
        c.line((1160, 110), (1160, 504), 7, (186, 188, 192))
        c.line((1126, 506), (1194, 506), 8, (120, 124, 128))
        c.line((1134, 112), (1186, 112), 5, (186, 188, 192))
        c.shade([(1130, 122), (1164, 122), (1166, 196), (1128, 196)], 0.2, 3)
        c.poly(
            [(1130, 120), (1162, 120), (1166, 184), (1154, 200), (1138, 200), (1126, 184)],
            (214, 232, 240),
        )
        c.rect(1142, 200, 1150, 210, (230, 230, 230))
        c.line((1146, 210), (1108, 340), 2.5, (200, 214, 222))
    c.rect(180, 44, 1120, 50, (196, 196, 192))  # the curtain track and a ceiling light
    c.rect(560, 46, 720, 56, (252, 252, 250))
    c.glow(640, 60, 380, 170, (255, 250, 238), 0.12)
    window_light(c, 215, 440, 105, 335, (250, 248, 236))
    return finish(c, grade=(1.0, 1.0, 0.98), key=(330, 220, 0.16))


def consultation_room() -> np.ndarray:
    """A private consultation room: warm sage walls, an oak floor with a rug, two armchairs
    turned toward each other, a sideboard with a lamp, a tall plant, a floor lamp, framed
    prints and a window with sheer curtains."""
    c = Canvas(5)
    shell(
        c,
        wall=(170, 178, 152),
        side_wall=(196, 186, 168),
        floor_near=(136, 94, 60),
        floor_far=(164, 120, 80),
        ceiling=(232, 226, 216),
        skirting=(232, 226, 214),
        planks=(104, 70, 44),
    )
    rug = [(250, 505), (1030, 505), (1140, 650), (150, 650)]
    c.poly(rug, (150, 92, 72))
    c.poly([(272, 512), (1010, 512), (1104, 638), (184, 638)], (176, 120, 92))
    c.poly([(300, 522), (985, 522), (1066, 626), (222, 626)], (166, 108, 82))
    c.texture(0.05, 4, rug)

    # A tall window on the right behind sheer curtains.
    window(c, 880, 90, 1080, 380, frame=(236, 232, 222), outside="trees")
    for x in range(850, 1112, 16):
        c.rect(x, 70, x + 14, 480, (246, 242, 232), 0.45 if 890 < x < 1060 else 0.85)
    c.rect(840, 64, 1120, 70, (120, 90, 60))
    window_light(c, 880, 1080, 90, 380, (255, 244, 220))

    frame_on_wall(
        c, 290, 130, 390, 250, (40, 36, 32), hgrad((206, 150, 96), (96, 128, 140), 306, 374)
    )
    frame_on_wall(c, 410, 150, 480, 230, (40, 36, 32), (200, 190, 160))

    # A low sideboard between the chairs, with a table lamp and a few books.
    c.box(520, 410, 780, 490, 0.1, (120, 84, 54), (96, 66, 42), (140, 100, 66))
    c.rect(526, 418, 648, 484, (128, 90, 58))
    c.rect(652, 418, 774, 484, (128, 90, 58))
    books(c, 540, 600, 410, 40)
    c.rect(708, 392, 720, 410, (200, 190, 170))
    c.poly([(690, 350), (738, 350), (748, 394), (680, 394)], (236, 222, 196))
    c.glow(714, 372, 60, 50, (255, 214, 150), 0.4)

    def armchair(cx: float, turn: float, fabric: Color) -> None:
        """An upholstered armchair seen from the front, turned by `turn` (-1..1: its back
        shifts that way, so it faces the other)."""
        fabric = np.asarray(fabric, np.float32)
        dark, light = fabric * 0.72, np.clip(fabric * 1.15, 0, 255)
        half = 105
        x0, x1 = cx - half, cx + half
        shift = 26 * turn
        c.shade([(x0, 498), (x1, 498), (x1 + 30, 552), (x0 - 24, 552)], 0.4, 12)
        for x in (x0 + 18, x1 - 24):  # legs
            c.line((x, 474), (x, 512), 6, (66, 44, 28))
        # The back: a rounded panel behind the seat.
        bx0, bx1 = x0 + 18 + shift, x1 - 18 + shift
        c.poly([(bx0, 318), (bx1, 318), (bx1 + 4, 430), (bx0 - 4, 430)], dark)
        c.ellipse((bx0 + bx1) / 2, 320, (bx1 - bx0) / 2, 22, dark)
        c.ellipse((bx0 + bx1) / 2, 352, (bx1 - bx0) / 2 - 18, 26, fabric * 0.82)
        # The seat cushion, then the two arms over its sides.
        c.box(x0 + 34, 428, x1 - 34, 476, 0.1, fabric, dark, light)
        for ax in (x0, x1 - 40):
            c.box(ax, 384, ax + 40, 478, 0.06, fabric * 0.92, dark, light)
            c.ellipse(ax + 20, 386, 21, 9, light)

    armchair(400, -0.6, (186, 132, 62))  # mustard, at the left, turned toward the other
    armchair(900, 0.6, (66, 104, 110))  # teal, at the right
    c.ellipse(448, 420, 34, 16, (150, 60, 50))  # a cushion

    plant(c, 205, 500, 360, 70, pot=(196, 118, 80), pot_w=80, pot_h=88, leaf=(66, 108, 58))
    c.line((1160, 200), (1160, 506), 5, (50, 44, 40))  # the floor lamp
    c.ellipse(1160, 508, 26, 6, (50, 44, 40))
    c.poly([(1128, 160), (1192, 160), (1206, 214), (1114, 214)], (240, 222, 186))
    c.glow(1160, 214, 110, 120, (255, 206, 140), 0.3)
    c.glow(640, 120, 500, 220, (255, 236, 210), 0.06)
    return finish(c, grade=(1.03, 1.0, 0.95), key=(980, 230, 0.18))


ROOMS: dict[str, Callable[[], np.ndarray]] = {
    "medical_office": medical_office,
    "clinic_room": clinic_room,
    "hospital_room": hospital_room,
    "consultation_room": consultation_room,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder (default {OUT})")
    parser.add_argument("--only", choices=sorted(ROOMS), action="append", help="one room")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or ROOMS:
        rgb = ROOMS[name]()
        assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
        path = args.out / f"{name}.jpg"
        Image.fromarray(rgb).save(
            path,
            format="JPEG",
            quality=JPEG_QUALITY,
            optimize=True,
            progressive=True,
            subsampling="4:2:0",
        )
        print(f"{path}: {W}x{H}, {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
