"""`ditto`: a portrait driven by Ditto's audio-to-motion diffusion (antgroup/ditto-talkinghead)
and painted by LivePortrait's networks, streaming the way Ditto's online pipeline does.

Once per avatar (`load`): the portrait is framed into the video, LivePortrait's crop is cut
from it, and the LivePortrait engine computes the appearance features, the canonical keypoints
and the raw motion (pose logits included) that Ditto calls `x_s_info`; the eye-open and
eye-ball features of the condition come from the portrait's face mesh.

Per frame (`render`): only the audio not seen before is pushed (requests repeat their
look-behind and look-ahead), through HuBERT (audio/), into 80-frame LMDM windows with
`overlap` shared frames (lmdm/), fused, smoothed and emitted online (motion/windows.py), and
stitched onto the source in keypoint space (motion/stitch.py). Idle requests push silence, so
the model keeps running between utterances and speech starts and stops on the same motion
stream. The 25 fps motion is interpolated in keypoint space (pose in degrees, scale,
translation, expression) at each frame's own time on that stream: at 30 fps every frame is a
new instant (none repeated), and a frame shows the motion of the very instant its audio window
starts. The emotion is in the condition (Ditto's label, `project_emotion`) and, because the
label alone shows little (ditto#39), LivePortrait's expression edits for the same emotion
(liveportrait/driving.py's poses, scaled by intensity, eased over ~300 ms) are added to the
expression. Then LivePortrait's stitching network, warp, decoder and paste-back.

The clock. Everything pushed to the audio stream since the last reset is the model's
timeline, in samples (`_pushed`). A frame's time on it (`_clock` for idle frames) advances by
one frame per request. Speech of an utterance is placed at its first frame's time, or later
when silence has already been pushed past that time for the idle frames before it (the model
needs audio past a frame to move it); then the motion jumps forward over that silence, and
the jump is eased over EASE_FRAMES frames.

Look-ahead arithmetic (`required_lookahead_samples`). Audio frame a (25 fps, samples
[640a, 640a + 640) of the stream) is feature f = overlap + a (the buffer starts with `overlap`
frames of silence features, as Ditto's). With V = 80 - overlap new frames per window and
fuse = min(overlap, V), window w reads features [wV, wV + 80) and makes final the frames
[80 - fuse + (w - 1)V, 80 - fuse + wV) (the first window emits none: frames are final once
the next window has been fused over them). So frame a is final after window
w = (f - (80 - fuse)) // V + 1, which needs audio frame F = wV + 79 - overlap, whose HuBERT
chunk c = F // 5 needs stream samples up to 3200c + 4560 (4560 = 6480 - 1920 lead-in). A
30 fps frame starting at sample T interpolates frames floor(T/640) and ceil(T/640) <= T/640
+ 639/640, and its request carries audio to T + window (>= 533) + look-ahead. With
D = max_a (needed(a) - 640a), look-ahead = D + 639 - 533 samples: for overlap 75,
D = 3200 + 4560 = 7760 (a window every 5 frames; HuBERT's 85 ms inside) and look-ahead 7866
samples, 0.49 s; overlap 70: 0.89 s.

Torch, onnxruntime and the networks are imported in `load`, never at import.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..base import (
    Expression,
    FrameRequest,
    RendererCapabilities,
    VideoFormat,
)
from ..configured import ConfiguredRenderer
from ..liveportrait.crop import CROP_SIZE
from ..liveportrait.driving import plan
from ..liveportrait.engine import LivePortraitEngine
from ..liveportrait.portrait import FramedPortrait
from ..liveportrait.settings import LivePortraitSettings
from ..meshwarp.motion import EMOTION_POSES, EmotionBlend
from .audio.framing import DittoFraming
from .motion.condition import ConditionBuilder, eye_features, project_emotion
from .motion.motion import FRAME_FIELDS, MotionFrames, SourceMotion, source_from_info
from .motion.stitch import MotionStitcher
from .motion.windows import MotionWindows, _at_positions
from .settings import DEFAULT_OVERLAP, SEQ_FRAMES, DittoSettings

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MOTION_FPS = 25
SAMPLES_PER_MOTION_FRAME = SAMPLE_RATE // MOTION_FPS  # 640
MIN_WINDOW_SAMPLES = 533
"""The shortest own window the runtime gives a 30 fps frame at 16 kHz (16000 / 30 = 533.3)."""
EASE_FRAMES = 3
"""Frames over which a jump of the motion stream (speech placed after pushed silence) is eased."""
KEPT_MOTION_FRAMES = 2 * SEQ_FRAMES
"""25 fps motion frames kept behind the newest (bounded memory)."""


def _needed_samples(frame: int, overlap: int, framing: DittoFraming | None = None) -> int:
    """Stream samples that must have been pushed before audio frame `frame`'s motion is final
    (see the module doc)."""
    framing = framing or DittoFraming()
    valid = SEQ_FRAMES - overlap
    fuse = min(overlap, valid)
    first = SEQ_FRAMES - fuse
    feature = max(overlap + frame, first)
    window = (feature - first) // valid + 1
    last_audio = window * valid + SEQ_FRAMES - 1 - overlap
    chunk = last_audio // framing.frames_per_window
    return chunk * framing.hop_samples + framing.window_samples - framing.lead_in_samples


def required_lookahead_samples(overlap: int = DEFAULT_OVERLAP) -> int:
    """Audio a request must carry past its own window so its frame's motion is computable when
    it arrives, at any phase of the stream (module doc)."""
    valid = SEQ_FRAMES - overlap
    period = valid * DittoFraming().frames_per_window
    worst = max(
        _needed_samples(a, overlap) - a * SAMPLES_PER_MOTION_FRAME for a in range(2 * period)
    )
    return worst + SAMPLES_PER_MOTION_FRAME - 1 - MIN_WINDOW_SAMPLES


@dataclass(frozen=True)
class _Source:
    portrait: FramedPortrait
    feature: np.ndarray
    """f_s (1, 32, 16, 64, 64)."""
    motion: SourceMotion
    keypoints: np.ndarray
    """x_s (1, 21, 3)."""
    eye_open: np.ndarray
    eye_ball: np.ndarray


@dataclass(frozen=True)
class DittoFrameMotion:
    """One batch's motion at each stage (for tests and tools)."""

    times: np.ndarray
    """(B,) each frame's time on the model's stream, in samples."""
    generated: MotionFrames
    """The stitched Ditto motion at those times (keypoint space), before the emotion edits."""
    edited: MotionFrames
    """... with the emotion's expression edits and pose offsets."""
    source: np.ndarray
    """x_s (B, 21, 3)."""
    driving: np.ndarray
    """The edited motion's keypoints through the stitching network (B, 21, 3)."""


_SHARED: dict[tuple[str, ...], Any] = {}
_SHARED_LOCK = threading.Lock()


def _shared(key: tuple[str, ...], make: Any) -> Any:
    """One HuBERT session / LMDM network per file and device per process."""
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = make()
        return _SHARED[key]


class DittoRenderer(ConfiguredRenderer):
    name = "ditto"
    settings_type = DittoSettings
    capabilities = RendererCapabilities(
        sample_rate=SAMPLE_RATE,
        native_fps=MOTION_FPS,
        lookahead_s=required_lookahead_samples(DEFAULT_OVERLAP) / SAMPLE_RATE,
        batch_size=1,
        emotions=tuple(EMOTION_POSES),
        devices=("cpu", "cuda"),
        backends=("torch", "onnx", "tensorrt"),
    )

    def __init__(
        self,
        video: VideoFormat,
        *,
        settings: DittoSettings | None = None,
        engine: LivePortraitEngine | None = None,
    ) -> None:
        super().__init__(video)
        self.settings = settings or DittoSettings.from_env()
        cuda = self.settings.resolved_device().startswith("cuda")
        self.capabilities = replace(
            type(self).capabilities,
            lookahead_s=required_lookahead_samples(self.settings.overlap) / SAMPLE_RATE,
            batch_size=4 if cuda else 1,
        )
        self._engine = engine
        self._source: _Source | None = None
        self._emotion = EmotionBlend(video.fps)
        self._frame_samples = SAMPLE_RATE / video.fps
        self._framing = DittoFraming()
        self._lock = threading.Lock()
        self._target = Expression()
        self.late_frames = 0
        """Frames shown before their motion was final (held): 0 when requests carry the
        look-ahead the capabilities ask for."""
        """The expression of the request being placed: the emotion label of new windows."""
        self.backend_description = ""

    # -- Renderer ----------------------------------------------------------------------------

    @property
    def engine(self) -> LivePortraitEngine:
        if self._engine is None:
            from ..liveportrait.renderer import shared_engine

            models = self.settings.models_dir()
            if models is None:
                self.settings.directory_or_raise()
            settings = self.settings
            self._engine = shared_engine(
                LivePortraitSettings(
                    directory=models,
                    backend=settings.resolved_backend(),
                    device=settings.resolved_device(),
                    fp16=settings.resolved_fp16(),
                    cache_dir=settings.engine_cache() / "liveportrait",
                )
            )
        return self._engine

    def load(self, source: Path | None) -> None:
        directory = self.settings.directory_or_raise()
        portrait = FramedPortrait.from_source(source, self.video.width, self.video.height)
        batch, crop, points = portrait.batch, portrait.crop, portrait.points
        engine = self.engine
        feature = engine.appearance(batch)
        # The torch engine gives the raw pose logits; the others' degrees are turned back
        # into logits (motion.source_from_info).
        motion = source_from_info(engine.motion(batch))
        in_crop = np.zeros((len(points), 3), np.float64)
        in_crop[:, :2] = crop.points_in_crop(points)
        in_crop[:, 2] = points[:, 2] * (CROP_SIZE / crop.size)
        eye_open, eye_ball = eye_features(in_crop, CROP_SIZE, CROP_SIZE)
        self._source = _Source(
            portrait=portrait,
            feature=feature,
            motion=motion,
            keypoints=motion.keypoints().astype(np.float32),
            eye_open=eye_open,
            eye_ball=eye_ball,
        )
        self._load_models(directory)
        self.backend_description = (
            f"ditto: LMDM {self._sampler.denoiser.backend} on {self._sampler.device}, "
            f"networks {engine.backend} on {engine.device}"
        )
        self._condition = ConditionBuilder(motion.sc, eye_open, eye_ball)
        self._stitcher = MotionStitcher(motion)
        self._windows = MotionWindows(motion.vector, overlap=self.settings.overlap)
        self._prefill = self._audio.silence_prefill(self.settings.overlap)
        self.reset()

    def _load_models(self, directory: Path) -> None:
        import torch

        from .audio import AudioFeatureStream, load_hubert, locate_hubert
        from .lmdm import checkpoint
        from .lmdm.diffusion import MotionSampler
        from .lmdm.engines import load_step

        device = self.settings.resolved_device()
        hubert_path = locate_hubert(directory)
        providers: tuple[str, ...] = ("CPUExecutionProvider",)
        if device.startswith("cuda"):
            import onnxruntime as ort

            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers = ("CUDAExecutionProvider", "CPUExecutionProvider")
        hubert = _shared(
            ("hubert", str(hubert_path), *providers),
            lambda: load_hubert(directory, providers=providers),
        )
        lmdm_path = checkpoint.locate_lmdm(directory)
        settings = self.settings
        backend, fp16 = settings.resolved_backend(), settings.resolved_fp16()
        step = _shared(
            ("lmdm", str(lmdm_path), backend, device, str(fp16)),
            lambda: load_step(
                backend,
                lmdm_path,
                device=device,
                fp16=fp16,
                cache=settings.engine_cache(),
                directory=directory,
                fallback_to_torch=settings.backend == "auto",
            ),
        )
        self._torch = torch
        self._audio = AudioFeatureStream(hubert)
        self._sampler = MotionSampler(step, settings.steps, seed=settings.seed)

    def reset(self) -> None:
        """Drop everything buffered: audio, features, windows, motion, the utterance."""
        with self._lock:
            if self._source is None:
                return
            self._audio.reset()
            self._windows.reset()
            self._stitcher.d0 = None
            self._sampler.setup(self.settings.steps, self.settings.seed)
            self._features = self._prefill.copy()
            self._feature_base = 0
            """Feature index (prefill included) of _features[0]."""
            self._window = 0
            self._motion: MotionFrames | None = None
            self._motion_base = 0
            """Audio frame of _motion's first frame."""
            self._emitted = 0
            self._pushed = 0
            self._clock = 0.0
            self._segment: int | None = None
            self._anchor = 0
            self._segment_fed = 0
            self._last_time: float | None = None
            self._last_shown: MotionFrames | None = None
            self._ease_from: MotionFrames | None = None
            self._ease_step = 0

    def set_sampling_steps(self, steps: int) -> None:
        """The LMDM's steps for this renderer's windows from the next one on."""
        if steps < 1:
            raise ValueError("sampling steps must be 1 or more")
        with self._lock:
            self.settings = replace(self.settings, steps=steps)
            if self._source is not None:
                self._sampler.setup(steps, self.settings.seed)

    def snap_expression(self, expression: Expression) -> None:
        self._emotion.snap(expression)

    def render(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
        if self._source is None:
            self.load(None)
        source = self._source
        assert source is not None
        motion = self.frame_motion(requests)
        n = len(requests)
        feature = source.feature if n == 1 else np.repeat(source.feature, n, axis=0)
        out = self.engine.warp_decode(feature, motion.source, motion.driving)
        crops = np.clip(out.transpose(0, 2, 3, 1) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return [source.portrait.paste(crop) for crop in crops]

    def close(self) -> None:
        self._engine = None

    # -- motion ------------------------------------------------------------------------------

    def frame_motion(self, requests: Sequence[FrameRequest]) -> DittoFrameMotion:
        """The motion of these frames, advancing the stream (what `render` paints)."""
        source = self._source
        assert source is not None
        with self._lock:
            times, rows, edited = [], [], []
            for request in requests:
                self._target = request.expression
                time = self._place(request)
                generated = self._shown_motion(time)
                weights = self._emotion.step(request.expression)[None]
                face = plan(weights)
                edited.append(
                    replace(
                        generated,
                        exp=face.edited(generated.exp),
                        pitch=generated.pitch + face.pitch,
                        yaw=generated.yaw + face.yaw,
                        roll=generated.roll + face.roll,
                    )
                )
                times.append(time)
                rows.append(generated)
        frames = MotionFrames.concat(rows)
        changed = MotionFrames.concat(edited)
        n = len(requests)
        x_s = np.repeat(source.keypoints, n, axis=0)
        x_d = changed.keypoints(source.motion.kp).astype(np.float32)
        driving = self.engine.stitch(x_s, x_d)
        return DittoFrameMotion(
            times=np.array(times),
            generated=frames,
            edited=changed,
            source=x_s,
            driving=driving,
        )

    def _place(self, request: FrameRequest) -> float:
        """Push what this request adds to the stream; its frame's time on the stream."""
        if request.audio is None:
            self._segment = None
            time = self._clock
            self._clock += self._frame_samples
            self._push_until(self._needed(time))
            return time
        if request.segment != self._segment:
            self._segment = request.segment
            start = max(self._pushed, math.ceil(self._clock))
            self._anchor = start - request.segment_position
            self._segment_fed = request.segment_position
        audio = np.asarray(request.audio, np.float32).reshape(-1)
        first = request.segment_position - request.window_offset  # segment index of audio[0]
        begin = max(self._segment_fed, first, 0)
        new = audio[begin - first :]
        if new.size:
            self._push(new)
            self._segment_fed = begin + new.size
        time = float(self._anchor + request.segment_position)
        self._clock = time + request.window_length
        self._advance()
        return time

    def _needed(self, time: float) -> int:
        frame = math.ceil(time / SAMPLES_PER_MOTION_FRAME - 1e-9)
        return _needed_samples(frame, self.settings.overlap, self._framing)

    def _push_until(self, samples: int) -> None:
        if samples > self._pushed:
            self._push(np.zeros(samples - self._pushed, np.float32))

    def _push(self, audio: np.ndarray) -> None:
        self._pushed += audio.size
        features = self._audio.push(audio)
        if len(features):
            self._features = np.concatenate([self._features, features], axis=0)
        self._advance()

    def _advance(self) -> None:
        """Run every window whose features are all there."""
        valid = SEQ_FRAMES - self.settings.overlap
        torch = self._torch
        while True:
            start = self._window * valid - self._feature_base
            if start + SEQ_FRAMES > len(self._features):
                return
            audio = self._features[start : start + SEQ_FRAMES]
            expression = self._target
            cond = self._condition(
                audio,
                self._window * valid - self.settings.overlap,
                emo=project_emotion(expression.emotion, expression.intensity)[None],
            )
            window = self._sampler.sample(
                torch.from_numpy(self._windows.cond_frame[None].copy()),
                torch.from_numpy(cond[None]),
            )
            out = self._windows.push(window[0].float().cpu().numpy())
            if self._stitcher.d0 is None and self._windows.d0 is not None:
                self._stitcher.set_d0(self._windows.d0)
            self._window += 1
            drop = self._window * valid - self._feature_base
            self._features = self._features[drop:]
            self._feature_base += drop
            if len(out):
                self._append(self._stitcher.motion(out))

    def _append(self, frames: MotionFrames) -> None:
        self._motion = (
            frames if self._motion is None else MotionFrames.concat([self._motion, frames])
        )
        extra = len(self._motion) - KEPT_MOTION_FRAMES
        if extra > 0:
            self._motion = self._motion.take(slice(extra, None))
            self._motion_base += extra

    def _shown_motion(self, time: float) -> MotionFrames:
        """The stitched motion at `time` (keypoint space), eased after a jump."""
        step = self._frame_samples
        if self._last_time is not None and time - self._last_time > 1.5 * step:
            self._ease_from, self._ease_step = self._last_shown, 0
        self._last_time = time
        motion = self._motion
        if motion is None:  # nothing generated yet (a request without its look-ahead)
            self.late_frames += 1
            logger.warning("ditto: no motion yet at sample %d; showing the source", int(time))
            assert self._source is not None
            current = self._source.motion.motion.frames()
        else:
            position = time / SAMPLES_PER_MOTION_FRAME - self._motion_base
            if position > len(motion) - 1 + 1e-6:
                self.late_frames += 1
                logger.debug("ditto: motion not final at sample %d; holding", int(time))
            current = _at_positions(motion, np.array([position]))
        if self._ease_from is not None and self._ease_step < EASE_FRAMES:
            self._ease_step += 1
            w = np.float32(self._ease_step / (EASE_FRAMES + 1))
            current = _mix(self._ease_from, current, w)
        else:
            self._ease_from = None
        self._last_shown = current
        return current


def _mix(a: MotionFrames, b: MotionFrames, w: np.float32) -> MotionFrames:
    """a x (1 - w) + b x w, field by field (keypoint space)."""
    return MotionFrames(
        **{
            name: (getattr(a, name) * (1 - w) + getattr(b, name) * w).astype(np.float32)
            for name in FRAME_FIELDS
        }
    )
