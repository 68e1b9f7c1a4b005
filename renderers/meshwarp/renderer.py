"""`meshwarp`: the default renderer. A portrait brought to life by warping it along its face
mesh: the mouth follows the speech, the eyes blink and glance, the head breathes and sways,
and emotions move brows, eyes and mouth corners. CPU only, no downloaded weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..base import (
    Expression,
    FrameRequest,
    Renderer,
    RendererCapabilities,
    RendererError,
    VideoFormat,
)
from ..vision.models import MODEL_NAMES, model_files, model_path
from . import landmarks as lm
from .avatar import MeshwarpAvatar, prepare_avatar
from .motion import EMOTION_POSES, EmotionBlend, IdleMotion
from .mouth import MouthShape, MouthTrack
from .rig import INDEX

_CAVITY = np.array([52, 20, 24], dtype=np.float32)  # the dark inside of the mouth
_TEETH = np.array([236, 230, 218], dtype=np.float32)
_INNER_LIPS = lm.UPPER_LIP_INNER + tuple(reversed(lm.LOWER_LIP_INNER))[1:-1]
_LID_CONTROLS = [INDEX[c] for c in ("blink_right", "blink_left", "squint", "eye_wide")]
_LASHES = np.array([45, 32, 30], dtype=np.float32)


class MeshwarpRenderer(Renderer):
    name = "meshwarp"
    capabilities = RendererCapabilities(
        sample_rate=16000,
        batch_size=1,
        emotions=tuple(EMOTION_POSES),
        alpha_is_person_mask=True,
    )

    def __init__(self, video: VideoFormat) -> None:
        super().__init__(video)
        self._avatar: MeshwarpAvatar | None = None
        self._mouth = MouthTrack(fps=video.fps)
        self._emotion = EmotionBlend(video.fps)
        self._idle = IdleMotion(video.fps)
        self.last_weights = np.zeros(0, dtype=np.float32)

    # -- Renderer ----------------------------------------------------------------------------

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            for name in MODEL_NAMES:
                model_path(name)
        except RendererError as error:
            return error.message
        return None

    @classmethod
    def checkpoints(cls) -> dict[str, object] | None:
        return model_files()

    def load(self, source: Path | None) -> None:
        self._avatar = prepare_avatar(source, self.video.width, self.video.height)
        region = self._avatar.region
        gy, gx = np.mgrid[region.y0 : region.y1, region.x0 : region.x1]
        self._grid = np.stack([gx, gy], axis=-1).astype(np.float32)
        rows = {index: i for i, index in enumerate(lm.CONTROL_POINTS)}
        self._inner_rows = np.array([rows[i] for i in _INNER_LIPS])
        self._inner_rest = self._avatar.points[list(_INNER_LIPS), :2]
        self._lids = [
            _Eyelid.build(self._avatar, rows, upper)
            for upper in (lm.RIGHT_EYE_UPPER, lm.LEFT_EYE_UPPER)
        ]

    def render(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
        if self._avatar is None:
            self.load(None)
        return [self._render_one(request) for request in requests]

    def reset(self) -> None:
        self._mouth.reset()

    def snap_expression(self, expression: Expression) -> None:
        self._emotion.snap(expression)

    # -- one frame ---------------------------------------------------------------------------

    def weights_for(self, request: FrameRequest) -> tuple[np.ndarray, MouthShape]:
        """The control weights of a frame: rest pose + idle life + emotion + mouth."""
        assert self._avatar is not None
        shape = self._mouth.step(request)
        weights = self._avatar.rest + self._idle.weights(request.index)
        weights = weights + self._emotion.step(request.expression)
        weights[INDEX["jaw_open"]] += 0.95 * shape.jaw
        weights[INDEX["lips_part"]] += 0.9 * shape.openness
        weights[INDEX["mouth_wide"]] += 0.7 * max(shape.width, 0.0)
        weights[INDEX["mouth_round"]] += 0.85 * shape.rounding + 0.3 * max(-shape.width, 0.0)
        weights[INDEX["head_y"]] += 1.2 * shape.jaw  # a slight nod with emphasis
        return weights, shape

    def landmarks_for(self, weights: np.ndarray) -> np.ndarray:
        """Where the control landmarks are drawn for these weights (for tests and tools)."""
        assert self._avatar is not None
        rest = self._avatar.points[list(lm.CONTROL_POINTS), :2]
        return rest + np.tensordot(weights, self._avatar.displacements, axes=(0, 0))

    def _render_one(self, request: FrameRequest) -> np.ndarray:
        avatar = self._avatar
        assert avatar is not None
        weights, _ = self.weights_for(request)
        self.last_weights = weights
        region = avatar.region
        active = np.flatnonzero(np.abs(weights) > 1e-3)
        field = np.tensordot(weights[active], avatar.fields[active], axes=(0, 0))
        # The fields say where a point moves to; sampling back by the same amount is the
        # first-order inverse, exact enough for displacements this smooth and small.
        source = self._grid - field
        warped = cv2.remap(
            avatar.image,
            source[..., 0],
            source[..., 1],
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        frame = avatar.image.copy()
        frame[region.y0 : region.y1, region.x0 : region.x1] = warped
        inner = self._inner_rest + np.tensordot(
            weights, avatar.displacements[:, self._inner_rows], axes=(0, 0)
        )
        self._draw_mouth(frame, inner, avatar.scale)
        open_weights = weights.copy()
        open_weights[_LID_CONTROLS] = 0.0
        for lid in self._lids:
            lid.draw(frame, avatar, open_weights, weights)
        return frame

    def _draw_mouth(self, frame: np.ndarray, inner: np.ndarray, scale: float) -> None:
        """Paint the open mouth: a dark cavity between the inner lips, upper teeth showing."""
        n = len(lm.UPPER_LIP_INNER)
        upper, lower = inner[:n], inner[n:]
        gap = float(np.median(lower[: n - 2, 1] - upper[1:-1, 1]))
        if gap < 1.0:
            return  # lips together
        opening = min(1.0, (gap - 1.0) / 3.0)  # fade the inside in over the first pixels
        x0, y0 = np.floor(inner.min(axis=0)).astype(int) - 2
        x1, y1 = np.ceil(inner.max(axis=0)).astype(int) + 3
        x0, y0 = max(x0, 0), max(y0, 0)
        patch = frame[y0:y1, x0:x1, :3].astype(np.float32)
        offset = np.array([x0, y0], dtype=np.float32)
        scale4 = 4.0  # fillPoly's fixed-point shift=2: quarter-pixel edges

        cavity = np.zeros(patch.shape[:2], dtype=np.uint8)
        poly = np.round((inner - offset) * scale4).astype(np.int32)
        cv2.fillPoly(cavity, [poly], 255, lineType=cv2.LINE_AA, shift=2)
        teeth = np.zeros_like(cavity)
        depth = min(gap * 0.45, 0.07 * scale)
        band = np.vstack([upper, (upper + [0.0, depth])[::-1]])
        cv2.fillPoly(teeth, [np.round((band - offset) * scale4).astype(np.int32)], 255,
                     lineType=cv2.LINE_AA, shift=2)  # fmt: skip
        cavity_a = cavity.astype(np.float32)[..., None] / 255.0 * opening
        teeth_a = (teeth.astype(np.float32)[..., None] / 255.0) * cavity_a
        # Darker towards the back of the mouth: shade the cavity by distance from the lips.
        shade = cv2.GaussianBlur(cavity_a[..., 0], (0, 0), max(0.8, gap * 0.25))[..., None]
        inside = _CAVITY * (1.15 - 0.4 * shade)
        patch = patch * (1 - cavity_a) + inside * cavity_a
        # Teeth catch the light at the top and fall into shadow towards their edge.
        rows = np.linspace(1.0, 0.86, patch.shape[0], dtype=np.float32)[:, None, None]
        patch = patch * (1 - teeth_a * 0.95) + _TEETH * rows * teeth_a * 0.95
        frame[y0:y1, x0:x1, :3] = np.clip(patch, 0, 255).astype(np.uint8)


@dataclass
class _Eyelid:
    """Paints a lowered upper eyelid. A smooth warp cannot squeeze an eye shut (it would have
    to fold the picture), so the lid is drawn: skin from just above the eye fills the band the
    lid has come down over, with a lash line along its edge."""

    rows: np.ndarray
    rest: np.ndarray
    skin: np.ndarray

    @classmethod
    def build(cls, avatar: MeshwarpAvatar, rows: dict[int, int], upper: tuple[int, ...]) -> _Eyelid:
        points = avatar.points[list(upper), :2]
        width = float(np.ptp(points[:, 0]))
        h, w = avatar.image.shape[:2]
        # The lid's skin: a band just above the eye, its lighter side (brow hairs and the
        # crease's shadow sit on the darker side).
        above = np.vstack([points - [0.0, f * width] for f in (0.12, 0.17, 0.22, 0.27)])
        ys = np.clip(np.round(above[:, 1]).astype(int), 0, h - 1)
        xs = np.clip(np.round(above[:, 0]).astype(int), 0, w - 1)
        skin = np.percentile(avatar.image[ys, xs, :3].astype(np.float32), 70, axis=0)
        return cls(np.array([rows[i] for i in upper]), points, skin)

    def draw(
        self,
        frame: np.ndarray,
        avatar: MeshwarpAvatar,
        open_weights: np.ndarray,
        weights: np.ndarray,
    ) -> None:
        moves = avatar.displacements[:, self.rows]
        top = self.rest + np.tensordot(open_weights, moves, axes=(0, 0))
        edge = self.rest + np.tensordot(weights, moves, axes=(0, 0))
        drop = float(np.max(edge[:, 1] - top[:, 1]))
        if drop < 1.0:
            return  # the lid is where the picture already shows it
        x0, y0 = np.floor(np.minimum(top, edge).min(axis=0)).astype(int) - 3
        x1, y1 = np.ceil(np.maximum(top, edge).max(axis=0)).astype(int) + 4
        x0, y0 = max(x0, 0), max(y0, 0)
        # float32 throughout; numpy's stubs cannot tell that the blends below keep it
        patch: np.ndarray = frame[y0:y1, x0:x1, :3].astype(np.float32)
        offset = np.array([x0, y0], dtype=np.float32)
        band = np.vstack([top - [0.0, 1.0], edge[::-1]])
        lid = np.zeros(patch.shape[:2], dtype=np.uint8)
        cv2.fillPoly(lid, [np.round((band - offset) * 4).astype(np.int32)], 255,
                     lineType=cv2.LINE_AA, shift=2)  # fmt: skip
        lashes = np.zeros_like(lid)
        cv2.polylines(lashes, [np.round((edge - offset) * 4).astype(np.int32)], False, 255,
                      thickness=1, lineType=cv2.LINE_AA, shift=2)  # fmt: skip
        strength = min(1.0, (drop - 1.0) / 2.0)
        lid_a = cv2.GaussianBlur(lid, (0, 0), 0.8).astype(np.float32)[..., None] / 255 * strength
        lash_a = lashes.astype(np.float32)[..., None] / 255 * 0.7 * strength
        # Keep the picture's own shading: tint it toward the skin rather than paint flat.
        skin = 0.75 * self.skin + 0.25 * patch
        patch = patch * (1 - lid_a) + skin * lid_a
        patch = patch * (1 - lash_a) + _LASHES * lash_a
        frame[y0:y1, x0:x1, :3] = np.clip(patch, 0, 255).astype(np.uint8)
