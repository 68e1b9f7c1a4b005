"""A lowered upper eyelid, painted. A smooth warp cannot squeeze an eye shut (it would have to
fold the picture), so the lid is drawn: the skin above the eye slides down over it (its own
texture and colour, not a flat fill), shaded like a lid over a round eyeball, with a lash line
along its edge."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .avatar import MeshwarpAvatar

_LASHES = np.array([40, 28, 26], dtype=np.float32)


@dataclass
class Eyelid:
    rows: np.ndarray
    """The upper lid's landmarks among the control points."""
    rest: np.ndarray
    skin: np.ndarray
    """The lid skin's colour (its lighter side: brow hairs and the crease's shadow are darker)."""
    width: float

    @classmethod
    def build(cls, avatar: MeshwarpAvatar, rows: dict[int, int], upper: tuple[int, ...]) -> Eyelid:
        points = avatar.points[list(upper), :2]
        width = float(np.ptp(points[:, 0]))
        h, w = avatar.image.shape[:2]
        above = np.vstack([points - [0.0, f * width] for f in (0.12, 0.17, 0.22, 0.27)])
        ys = np.clip(np.round(above[:, 1]).astype(int), 0, h - 1)
        xs = np.clip(np.round(above[:, 0]).astype(int), 0, w - 1)
        skin = np.percentile(avatar.image[ys, xs, :3].astype(np.float32), 60, axis=0)
        return cls(np.array([rows[i] for i in upper]), points, skin, width)

    def draw(
        self,
        frame: np.ndarray,
        avatar: MeshwarpAvatar,
        open_weights: np.ndarray,
        weights: np.ndarray,
        shift: np.ndarray | None = None,
    ) -> None:
        """`shift`: where the face is in this frame relative to the portrait (idle loop)."""
        moves = avatar.displacements[:, self.rows]
        rest = self.rest if shift is None else self.rest + shift
        top = rest + np.tensordot(open_weights, moves, axes=(0, 0))
        edge = rest + np.tensordot(weights, moves, axes=(0, 0))
        drops = edge[:, 1] - top[:, 1]
        drop = float(np.max(drops))
        if drop < 1.0:
            return  # the lid is where the picture already shows it
        reach = int(np.ceil(drop)) + 3  # rows above the lid its skin slides down from
        x0, y0 = np.floor(np.minimum(top, edge).min(axis=0)).astype(int) - 3
        x1, y1 = np.ceil(np.maximum(top, edge).max(axis=0)).astype(int) + 4
        x0, y0 = max(x0, 0), max(y0, reach)
        x1, y1 = min(x1, frame.shape[1]), min(y1, frame.shape[0])
        if x1 - x0 < 2 or y1 - y0 < 2:
            return
        # float32 throughout; numpy's stubs cannot tell that the blends below keep it
        patch: np.ndarray = frame[y0:y1, x0:x1, :3].astype(np.float32)
        source = frame[y0 - reach : y1, x0:x1, :3]
        offset = np.array([x0, y0], dtype=np.float32)
        band = np.vstack([top - [0.0, 1.0], edge[::-1]])
        lid = np.zeros(patch.shape[:2], dtype=np.uint8)
        cv2.fillPoly(lid, [np.round((band - offset) * 4).astype(np.int32)], 255,
                     lineType=cv2.LINE_AA, shift=2)  # fmt: skip
        lashes = np.zeros_like(lid)
        cv2.polylines(lashes, [np.round((edge - offset) * 4).astype(np.int32)], False, 255,
                      thickness=1, lineType=cv2.LINE_AA, shift=2)  # fmt: skip
        strength = min(1.0, (drop - 1.0) / 2.0)
        lid_a = cv2.GaussianBlur(lid, (0, 0), 0.9).astype(np.float32)[..., None] / 255 * strength
        lash_a = cv2.GaussianBlur(lashes, (0, 0), 0.6).astype(np.float32)[..., None] / 255
        lash_a *= 0.75 * strength

        # The skin slides down: each column of the lid shows the skin that was `drop` above.
        xs = np.arange(x0, x1, dtype=np.float32)
        order = np.argsort(edge[:, 0])
        column_drop = np.interp(xs, edge[order, 0], drops[order])
        gy, gx = np.mgrid[0 : y1 - y0, 0 : x1 - x0].astype(np.float32)
        from_y = (gy + reach - column_drop[None, :]).astype(np.float32)
        slid = cv2.remap(np.ascontiguousarray(source), gx, from_y, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        texture = 0.8 * slid.astype(np.float32) + 0.2 * self.skin
        # Round eyeball under the lid: lit in the middle, in shadow at the corners and
        # toward the lash line.
        mid = float(edge[:, 0].mean())
        across = np.clip(np.abs(xs - mid) / max(1.0, self.width / 2), 0, 1)[None, :]
        top_y = np.interp(xs, top[order, 0], top[order, 1])[None, :] - y0
        down = np.clip((gy - top_y) / np.maximum(1.0, column_drop[None, :]), 0, 1)
        # ...and a soft fold where the lid leaves the socket's rim at the top.
        fold = np.clip(1.0 - (gy - top_y) / 2.5, 0, 1) * (1 - across**2)
        shade = (0.96 - 0.14 * across**2) * (1.0 - 0.15 * down**2) * (1.0 - 0.12 * fold)
        texture = texture * shade[..., None]
        patch = patch * (1 - lid_a) + texture * lid_a
        patch = patch * (1 - lash_a) + _LASHES * lash_a
        frame[y0:y1, x0:x1, :3] = np.clip(patch, 0, 255).astype(np.uint8)
