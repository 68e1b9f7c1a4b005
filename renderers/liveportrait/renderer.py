"""`liveportrait`: a portrait animated by LivePortrait's networks, driven by speech, emotion and
idle life instead of a driving video.

Once per avatar (`load`): the portrait is framed into the video like every portrait
renderer's (vision/framing.py), LivePortrait's crop is cut from it (crop.py), and the source's
appearance features, keypoints, pose and openness ratios are computed and kept.

Per frame (`render`, a batch at a time): driving.py turns the frame's audio, the expression
and the idle clock into edits of the source's expression deformation, a head pose, and target
lip and eye openness; the keypoints are transformed, the lip and eye retargeting networks
add their deltas, the stitching network keeps the crop's border in place, and the warping
network and SPADE decoder paint the 512x512 crop, which is pasted back into the portrait
through a feathered mask.

The networks run through engine.py's back ends (torch, ONNX Runtime, TensorRT); torch and
onnxruntime are imported only in `load`, so the registry and health checks can look at this
class without them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..base import (
    Expression,
    FrameRequest,
    RendererCapabilities,
    VideoFormat,
)
from ..configured import ConfiguredRenderer
from ..meshwarp.motion import EMOTION_POSES
from . import expression as edit
from .crop import Ratios, openness_ratios
from .driving import LOOKAHEAD_S, Driver, FacePlan, plan
from .engine import LivePortraitEngine, load_engine
from .keypoint_math import rotation_matrix, transform_keypoints
from .portrait import FramedPortrait
from .settings import LivePortraitSettings

logger = logging.getLogger(__name__)

_LOOKAHEAD_MARGIN_S = 0.01
_LIP_OPEN_FALLBACK = 110.0
"""Lip-open slider units per unit of lip ratio, when the checkpoint has no lip retargeting."""


@dataclass(frozen=True)
class _Source:
    """What the networks computed for the portrait once."""

    portrait: FramedPortrait
    feature: np.ndarray
    """Appearance features f_s, (1, 32, 16, 64, 64)."""
    canonical: np.ndarray
    """Canonical keypoints x_c, (1, 21, 3)."""
    pose: tuple[float, float, float]
    """pitch, yaw, roll in degrees."""
    exp: np.ndarray
    """Expression deformation, (1, 21, 3)."""
    scale: np.ndarray
    """(1, 1)"""
    translation: np.ndarray
    """(1, 3)"""
    keypoints: np.ndarray
    """x_s, the source's transformed keypoints, (1, 21, 3)."""
    ratios: Ratios


_ENGINES: dict[LivePortraitSettings, LivePortraitEngine] = {}
_ENGINES_LOCK = threading.Lock()


def shared_engine(settings: LivePortraitSettings) -> LivePortraitEngine:
    """One engine per settings per process: the networks are hundreds of megabytes and take
    seconds to load, and every avatar of a process (the render service keeps several
    portraits) uses the same ones. Inference holds no per-avatar state, so sharing is safe."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(settings)
        if engine is None:
            engine = _ENGINES[settings] = load_engine(settings)
            logger.info(
                "liveportrait: %s on %s%s",
                engine.backend,
                engine.device,
                " (fp16)" if engine.fp16 else "",
            )
        return engine


@dataclass(frozen=True)
class DrivingKeypoints:
    """One batch's keypoints at each stage, (B, 21, 3) each."""

    source: np.ndarray
    """x_s, the portrait's own."""
    posed: np.ndarray
    """The source's canonical keypoints with the edited expression and the new head pose."""
    driving: np.ndarray
    """`posed` plus the lip and eye retargeting deltas, through the stitching network: what
    the warp follows."""
    plan: FacePlan


class LivePortraitRenderer(ConfiguredRenderer):
    name = "liveportrait"
    settings_type = LivePortraitSettings
    capabilities = RendererCapabilities(
        sample_rate=16000,
        lookahead_s=LOOKAHEAD_S + _LOOKAHEAD_MARGIN_S,
        batch_size=1,
        emotions=tuple(EMOTION_POSES),
        devices=("cpu", "cuda"),
        backends=("torch", "onnx", "tensorrt"),
    )

    def __init__(
        self,
        video: VideoFormat,
        *,
        settings: LivePortraitSettings | None = None,
        engine: LivePortraitEngine | None = None,
    ) -> None:
        """`engine` replaces the configured back end (benchmarks pass their own)."""
        super().__init__(video)
        self.settings = settings or LivePortraitSettings.from_env()
        self.capabilities = replace(
            type(self).capabilities, batch_size=self.settings.resolved_batch_size()
        )
        self._engine = engine
        self._source: _Source | None = None
        self._driver = Driver(video.fps, self.capabilities.sample_rate)
        self.backend_description = ""

    # -- Renderer ----------------------------------------------------------------------------

    @property
    def engine(self) -> LivePortraitEngine:
        if self._engine is None:
            self._engine = shared_engine(self.settings)
        return self._engine

    def load(self, source: Path | None) -> None:
        portrait = FramedPortrait.from_source(source, self.video.width, self.video.height)
        batch = portrait.batch
        engine = self.engine
        self.backend_description = f"{engine.backend} on {engine.device}"
        feature = engine.appearance(batch)
        motion = engine.motion(batch)
        rotation = rotation_matrix(motion.pitch, motion.yaw, motion.roll)
        keypoints = transform_keypoints(motion.kp, rotation, motion.exp, motion.scale, motion.t)
        self._source = _Source(
            portrait=portrait,
            feature=feature,
            canonical=motion.kp,
            pose=(float(motion.pitch[0]), float(motion.yaw[0]), float(motion.roll[0])),
            exp=motion.exp,
            scale=motion.scale,
            translation=motion.t,
            keypoints=keypoints,
            ratios=openness_ratios(portrait.points),
        )

    def render(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
        if self._source is None:
            self.load(None)
        assert self._source is not None
        crops = self.render_crops(requests)
        portrait = self._source.portrait
        return [portrait.paste(crop) for crop in crops]

    def reset(self) -> None:
        self._driver.reset()

    def snap_expression(self, expression: Expression) -> None:
        self._driver.snap(expression)

    def close(self) -> None:
        self._engine = None  # the process's shared engine stays for the next avatar

    # -- the networks ------------------------------------------------------------------------

    def driving_keypoints(self, requests: Sequence[FrameRequest]) -> DrivingKeypoints:
        """The keypoints of these frames at each stage, each (B, 21, 3)."""
        source = self._source
        assert source is not None
        engine = self.engine
        n = len(requests)
        face = plan(self._driver.weights(requests))

        def repeat(array: np.ndarray) -> np.ndarray:
            return np.repeat(array, n, axis=0)

        delta = face.edited(repeat(source.exp))
        if not engine.has_lip_retargeting:
            delta = edit.lip_open(delta, face.lip_ratio * _LIP_OPEN_FALLBACK)
        pitch, yaw, roll = source.pose
        rotation = rotation_matrix(pitch + face.pitch, yaw + face.yaw, roll + face.roll)
        x_s = repeat(source.keypoints)
        posed = transform_keypoints(
            repeat(source.canonical),
            rotation,
            delta,
            repeat(source.scale),
            repeat(source.translation),
        ).astype(np.float32)
        x_d = posed
        ratios = source.ratios
        if engine.has_lip_retargeting:
            lip = np.stack([np.full(n, ratios.lip, np.float32), face.lip_ratio], axis=1)
            x_d = x_d + engine.retarget_lip(x_s, lip.astype(np.float32))
        if engine.has_eye_retargeting:
            open_eye = (ratios.eye_left + ratios.eye_right) / 2
            eyes = np.stack(
                [
                    np.full(n, ratios.eye_left, np.float32),
                    np.full(n, ratios.eye_right, np.float32),
                    open_eye * face.eye_scale,
                ],
                axis=1,
            )
            x_d = x_d + engine.retarget_eye(x_s, eyes.astype(np.float32))
        stitched = engine.stitch(x_s, x_d.astype(np.float32))
        return DrivingKeypoints(source=x_s, posed=posed, driving=stitched, plan=face)

    def render_crops(self, requests: Sequence[FrameRequest]) -> np.ndarray:
        """The decoder's 512x512 crops of these frames, (B, 512, 512, 3) uint8."""
        source = self._source
        assert source is not None
        keypoints = self.driving_keypoints(requests)
        n = len(requests)
        feature = source.feature if n == 1 else np.repeat(source.feature, n, axis=0)
        out = self.engine.warp_decode(feature, keypoints.source, keypoints.driving)
        pixels = np.clip(out.transpose(0, 2, 3, 1) * 255.0 + 0.5, 0, 255)
        return pixels.astype(np.uint8)
