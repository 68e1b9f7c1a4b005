"""`meshwarp`: the default renderer. A portrait brought to life by warping it along its face
mesh: the mouth follows the speech, the eyes blink and glance, the head breathes and sways,
and emotions move brows, eyes and mouth corners. CPU only, no downloaded weights."""

from __future__ import annotations

from collections.abc import Sequence
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
from .avatar import MeshwarpAvatar, prepare_avatar, wears_glasses
from .cavity import INNER_LIPS, MouthInterior, find_teeth
from .eyelid import Eyelid
from .motion import EMOTION_POSES, EmotionBlend, IdleMotion, SpeechMotion
from .mouth import MouthShape, MouthTrack
from .rig import INDEX, Region

LEAD_S = 0.034
"""The mouth is read one frame's audio ahead of the frame: the smoothing's attack and the
jaw's lag made the lips trail the sound by about a frame."""
MOUTH_REFINE_STEPS = 2
"""Fixed-point steps that make the warp's inverse exact enough around the mouth, for a
portrait whose own lips are apart (the rest pose closes them; a closed mouth needs none)."""
BROWS_UNDER_GLASSES = 0.3
"""What is left of the brow controls when the portrait wears glasses: their frame rests on
the brows, and a full brow lift would bend it."""
_BROWS = [INDEX[c] for c in ("brow_raise", "brow_inner_up", "brow_lower")]
BLINK_WARP_UNDER_GLASSES = 0.2
"""Share of a blink's warp kept behind glasses (the lid itself is painted in full)."""
_BLINKS = [INDEX[c] for c in ("blink_right", "blink_left")]
_SWAY = [INDEX[c] for c in ("head_x", "head_y", "head_roll")]
_LID_CONTROLS = [INDEX[c] for c in ("blink_right", "blink_left", "squint", "eye_wide")]


class MeshwarpRenderer(Renderer):
    name = "meshwarp"
    capabilities = RendererCapabilities(
        sample_rate=16000,
        batch_size=1,
        emotions=tuple(EMOTION_POSES),
        alpha_is_person_mask=True,
        lookahead_s=LEAD_S,
    )

    def __init__(self, video: VideoFormat) -> None:
        super().__init__(video)
        self._avatar: MeshwarpAvatar | None = None
        self._brow_gain = 1.0
        self._mouth = MouthTrack(fps=video.fps, lead_s=LEAD_S)
        self._emotion = EmotionBlend(video.fps)
        self._idle = IdleMotion(video.fps)
        self._speech = SpeechMotion(video.fps)
        self._speech_index: int | None = None
        self._speech_weights = np.zeros(0, dtype=np.float32)
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
        self._emotion.portrait_smile = self._avatar.portrait_smile
        self._brow_gain = BROWS_UNDER_GLASSES if wears_glasses(
            self._avatar.image, self._avatar.points) else 1.0  # fmt: skip
        region = self._avatar.region
        gy, gx = np.mgrid[region.y0 : region.y1, region.x0 : region.x1]
        self._grid = np.stack([gx, gy], axis=-1).astype(np.float32)
        rows = {index: i for i, index in enumerate(lm.CONTROL_POINTS)}
        self._mouth_box = _mouth_box(self._avatar)
        self._mouth_feather = _feather(self._mouth_box, self._avatar.region, self._avatar.scale)
        self._inner_rows = np.array([rows[i] for i in INNER_LIPS])
        self._inner_rest = self._avatar.points[list(INNER_LIPS), :2]
        self._interior = MouthInterior(
            self._avatar.scale,
            find_teeth(self._avatar.image, self._avatar.points),
            own_opening=self._avatar.rest[INDEX["lips_part"]] < -0.3,
        )
        self._lids = [
            Eyelid.build(self._avatar, rows, upper)
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
        idle = self._idle.weights(request.index)
        if self._avatar.loop is not None:
            idle[_SWAY] = 0.0  # the video's own frames move: no synthetic sway on top
        weights = self._avatar.rest + idle
        weights = weights + self._emotion.step(request.expression)
        weights[INDEX["jaw_open"]] += 1.0 * shape.jaw
        weights[INDEX["lips_press"]] += shape.press
        weights[INDEX["lips_part"]] += 0.9 * shape.openness
        weights[INDEX["mouth_wide"]] += 0.7 * max(shape.width, 0.0)
        weights[INDEX["mouth_round"]] += 0.85 * shape.rounding + 0.3 * max(-shape.width, 0.0)
        weights[INDEX["head_y"]] += 1.2 * shape.jaw  # the head gives a little as the jaw drops
        if request.index != self._speech_index:  # the same frame asked again: no new step
            self._speech_index = request.index
            self._speech_weights = self._speech.step(shape.openness)
        weights = weights + self._speech_weights
        if self._brow_gain != 1.0:
            weights[_BROWS] *= self._brow_gain
        return weights, shape

    def landmarks_for(self, weights: np.ndarray) -> np.ndarray:
        """Where the control landmarks are drawn for these weights (for tests and tools)."""
        assert self._avatar is not None
        rest = self._avatar.points[list(lm.CONTROL_POINTS), :2]
        return rest + np.tensordot(weights, self._avatar.displacements, axes=(0, 0))

    def _render_one(self, request: FrameRequest) -> np.ndarray:
        avatar = self._avatar
        assert avatar is not None
        weights, shape = self.weights_for(request)
        self.last_weights = weights
        return self.draw(weights, shape, request.index)

    def draw(self, weights: np.ndarray, shape: MouthShape, index: int = 0) -> np.ndarray:
        """One frame for these control weights (and the mouth shape they came from); `index`
        picks the idle loop's frame when the avatar has one."""
        avatar = self._avatar
        assert avatar is not None
        r = avatar.region
        frame, (dx, dy) = self._base(index)
        warp = weights
        if self._brow_gain != 1.0:  # glasses: the painted lid closes the eye, the warp
            warp = weights.copy()  # would drag the frame's rim down with it
            warp[_BLINKS] *= BLINK_WARP_UNDER_GLASSES
        active = np.flatnonzero(np.abs(warp) > 1e-3)
        field = np.tensordot(warp[active], avatar.fields[active], axes=(0, 0))
        # The fields say where a point moves to; sampling back by the same amount is the
        # first-order inverse, exact enough for displacements this smooth and small.
        source = self._grid - field
        # Around the mouth the warp folds (lips closed over a smile's teeth, a lip pressed):
        # there the first-order inverse samples what should be hidden, so refine it there
        # with fixed-point steps, source = grid - field(source).
        # Where the skin stretches a lot (a wide-open jaw) the steps do not converge, so each
        # pixel keeps the step that fits best: |grid - field(x) - x| is the distance from x
        # to the next step.
        box, feather = self._mouth_box, self._mouth_feather
        first = at = source[box]
        best = first
        best_miss: np.ndarray | None = None
        for _ in range(MOUTH_REFINE_STEPS if self._interior.own_opening else 0):
            step = self._grid[box] - cv2.remap(
                field, at[..., 0] - r.x0, at[..., 1] - r.y0, cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            )  # fmt: skip
            miss = np.abs(step[..., 0] - at[..., 0]) + np.abs(step[..., 1] - at[..., 1])
            if best_miss is None:
                best, best_miss = first.copy(), miss
            else:
                better = miss < best_miss
                best[better] = at[better]
                np.minimum(miss, best_miss, out=best_miss)
            at = step
        if best_miss is not None:
            source[box] = first + (best - first) * feather  # no seam at the box's border
        if dx or dy:
            source += np.array([dx, dy], dtype=np.float32)
        warped = cv2.remap(
            frame,
            source[..., 0],
            source[..., 1],
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        frame[r.y0 + dy : r.y1 + dy, r.x0 + dx : r.x1 + dx] = warped
        shift = np.array([dx, dy], dtype=np.float32)
        inner = self._inner_rest + np.tensordot(
            weights, avatar.displacements[:, self._inner_rows], axes=(0, 0)
        )
        self._interior.draw(frame, inner + shift)
        open_weights = weights.copy()
        open_weights[_LID_CONTROLS] = 0.0
        for lid in self._lids:
            lid.draw(frame, avatar, open_weights, weights, shift)
        return frame

    def _base(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        """The picture to warp (a copy) and where its face is relative to the portrait's:
        the portrait itself, or the idle loop's frame for `index`."""
        avatar = self._avatar
        assert avatar is not None
        loop = avatar.loop
        if loop is None:
            return avatar.image.copy(), (0, 0)
        frame = avatar.image.copy()  # alpha: the portrait's person mask
        frame[..., :3] = loop.frames[loop.index(index)]
        dx, dy = loop.offset(index)
        r, (h, w) = avatar.region, frame.shape[:2]
        # The region moves with the face, but stays inside the frame.
        dx = min(max(dx, -r.x0), w - r.x1)
        dy = min(max(dy, -r.y0), h - r.y1)
        return frame, (dx, dy)


def _mouth_box(avatar: MeshwarpAvatar) -> tuple[slice, slice]:
    """Rows and columns of the warp region (its own coordinates) around the lips and chin,
    where the warp's inverse is refined."""
    r, s = avatar.region, avatar.scale
    lips = avatar.points[list(lm.MOUTH_CORNERS) + [lm.LIP_TOP, lm.LIP_BOTTOM], :2]
    (x0, y0), (x1, y1) = lips.min(axis=0), lips.max(axis=0)
    x0, x1 = int(x0 - 0.3 * s) - r.x0, int(np.ceil(x1 + 0.3 * s)) - r.x0
    y0, y1 = int(y0 - 0.3 * s) - r.y0, int(np.ceil(y1 + 0.3 * s)) - r.y0
    return (
        slice(max(0, y0), min(r.height, max(0, y1))),
        slice(max(0, x0), min(r.width, max(0, x1))),
    )


def _feather(box: tuple[slice, slice], region: Region, scale: float) -> np.ndarray:
    """(h, w, 1) float32 over `box`: 1 inside, falling to 0 at the box's border (where the
    refined inverse gives way to the first-order one)."""
    ys, xs = range(region.height)[box[0]], range(region.width)[box[1]]
    margin = max(2.0, 0.12 * scale)

    def ramp(n: int) -> np.ndarray:
        k = np.arange(n, dtype=np.float32)
        return np.clip(np.minimum(k + 0.5, n - k - 0.5) / margin, 0.0, 1.0)

    return (ramp(len(ys))[:, None] * ramp(len(xs))[None, :])[..., None]
