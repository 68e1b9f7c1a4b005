"""`wav2lip`: an avatar package's own video, its mouth re-drawn by the Wav2Lip network from the
speech.

* Idle, the package's frames play forward and backward (ping-pong) by frame index; nothing is
  inferred.
* Speaking, each frame's 16-column mel window (starting at column int(k * 80 / fps) of the
  utterance, k the frame's number in it) comes from a StreamingMel fed the utterance's audio as
  it arrives; frames of a batch go through the network together. A frame whose audio is silent
  (below `silence_db`) skips the network and shows the original mouth.
* The generated face goes back through a feathered mask over the mouth and jaw, optionally
  colour-matched to the frame (blend.py), so no box edge shows.

torch (and onnxruntime / TensorRT) are imported only in `load`, through backends.py, so the
registry, health checks and the control API can look at this class without them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from ..base import FrameRequest, RendererError, VideoFormat
from ..lipsync import LipSyncRenderer, LipSyncSettings, lipsync_capabilities
from . import mel as melspec
from .backends import FaceGenerator
from .blend import lower_face_mask, paste_face
from .package import Wav2LipAvatar, is_package, load_package
from .settings import Wav2LipSettings

logger = logging.getLogger(__name__)


class Wav2LipRenderer(LipSyncRenderer):
    name = "wav2lip"
    settings_type = Wav2LipSettings
    capabilities = lipsync_capabilities(
        sample_rate=melspec.SAMPLE_RATE,
        window_lookahead_s=melspec.lookahead_seconds(30.0),
        batch_size=4,
        backends=("torch", "onnx", "tensorrt"),
    )
    settings: Wav2LipSettings

    def __init__(
        self,
        video: VideoFormat,
        *,
        settings: Wav2LipSettings | None = None,
        generator: FaceGenerator | None = None,
        face_size: int | None = None,
    ) -> None:
        """`generator` (with its `face_size`) replaces the configured back end: tests and
        benchmarks pass their own."""
        super().__init__(video)
        self.settings = settings or Wav2LipSettings.from_env()
        self._generator = generator
        self._model_size = face_size
        self.backend_description = "custom" if generator is not None else ""
        self._fit_capabilities(melspec.lookahead_seconds(video.fps))
        self._avatar: Wav2LipAvatar | None = None
        self._mask = lower_face_mask(self.settings.feather)
        self._utterance: _UtteranceMel | None = None
        self.inferred_frames = 0
        """Frames that went through the network (silence and idle frames do not)."""

    # -- Renderer ----------------------------------------------------------------------------

    @classmethod
    def describe_settings(cls, settings: LipSyncSettings) -> dict[str, object]:
        assert isinstance(settings, Wav2LipSettings)
        return {
            "backend": settings.resolved_backend(),
            "device": settings.resolved_device(),
            "fp16": settings.resolved_fp16(),
            "batch_size": settings.resolved_batch_size(),
            "checkpoint": str(settings.checkpoint) if settings.checkpoint else None,
        }

    def load(self, source: Path | None) -> None:
        super().load(source)
        assert source is not None
        avatar = self._load_avatar(
            source,
            is_package=is_package,
            load_package=load_package,
            needs="wav2lip needs an avatar package (a directory or .tar with coords.pkl, "
            "full_imgs/ and face_imgs/, made by the avatar preparation job)",
        )
        if self._generator is None:
            self._generator, self._model_size = self._create_generator()
        size = self._model_size or avatar.face_size
        if avatar.face_size != size:
            logger.warning(
                "avatar face crops are %dpx, the model takes %dpx: resizing them",
                avatar.face_size,
                size,
            )
            faces = np.stack([cv2.resize(f, (size, size)) for f in avatar.faces])
            avatar = replace(avatar, faces=faces)
        self._avatar = avatar

    def render(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
        avatar = self._avatar
        if avatar is None:
            raise RendererError("not_loaded", "wav2lip renderer used before load()")
        frames: list[np.ndarray] = []
        todo: list[tuple[np.ndarray, int, np.ndarray]] = []  # output frame, avatar frame, mel
        for request in requests:
            frame, shown = self._idle_frame(avatar, request.index)
            frames.append(frame)
            if request.audio is None:
                continue
            window = self._mel_window(request)  # fed even when silent: the stream continues
            if self._audible(request.audio):
                todo.append((frame, shown, window))
        for batch in self._batches(todo):
            self._lip_sync(avatar, batch)
        return frames

    def reset(self) -> None:
        self._utterance = None

    def close(self) -> None:
        self._generator = None
        self._avatar = None

    # -- internals ---------------------------------------------------------------------------

    def _create_generator(self) -> tuple[FaceGenerator, int]:
        reason = self.settings.unavailable_reason()
        if reason is not None:
            raise RendererError("renderer_unavailable", reason)
        from .backends import create_generator  # torch & co. only now

        settings = self.settings
        assert settings.checkpoint is not None
        generator = create_generator(
            settings.backend,  # "auto" is resolved there, where torch is loaded anyway
            settings.checkpoint,
            device=settings.device,
            fp16=settings.fp16,
            cache_dir=settings.engine_cache(),
        )
        precision = "fp16" if getattr(generator, "fp16", False) else "fp32"
        self.backend_description = f"{generator.name} on {generator.device} ({precision})"
        logger.info("wav2lip back end: %s", self.backend_description)
        return generator, int(generator.size)

    def _mel_window(self, request: FrameRequest) -> np.ndarray:
        if self._utterance is None or self._utterance.segment != request.segment:
            self._utterance = _UtteranceMel(request.segment)
        return self._utterance.window(request, self.video.fps)

    def _lip_sync(
        self, avatar: Wav2LipAvatar, items: Sequence[tuple[np.ndarray, int, np.ndarray]]
    ) -> None:
        assert self._generator is not None
        mels = np.stack([window for _, _, window in items])[:, None].astype(np.float32)
        faces = network_faces(avatar.faces[[shown for _, shown, _ in items]])
        generated = self._generator.predict(mels, faces)
        self.inferred_frames += len(items)
        for (frame, shown, _), face in zip(items, generated, strict=True):
            paste_face(
                frame,
                face,
                avatar.boxes[shown],
                self._mask,
                color_match=self.settings.color_match,
            )


def network_faces(faces_rgb: np.ndarray) -> np.ndarray:
    """(B, S, S, 3) uint8 RGB crops -> (B, 6, S, S) float32 0..1: the crop with its lower half
    blanked, then the crop whole (the reference), RGB (the back ends turn them to BGR)."""
    faces = faces_rgb.astype(np.float32) * (1.0 / 255.0)
    masked = faces.copy()
    masked[:, faces.shape[1] // 2 :] = 0.0
    return np.ascontiguousarray(np.concatenate([masked, faces], axis=3).transpose(0, 3, 1, 2))


class _UtteranceMel:
    """The mel columns of one utterance, computed as its audio arrives with the frames."""

    def __init__(self, segment: int) -> None:
        self.segment = segment
        self._stream = melspec.StreamingMel()
        self._fed = 0  # utterance samples pushed so far
        self._columns = np.zeros((melspec.N_MELS, 256), dtype=np.float32)
        self._count = 0

    def window(self, request: FrameRequest, fps: float) -> np.ndarray:
        assert request.audio is not None
        start = request.segment_position - request.window_offset  # utterance sample of audio[0]
        end = start + request.audio.size
        if start > self._fed:  # frames were skipped: their audio is gone, keep time right
            self._append(self._stream.push(np.zeros(start - self._fed, dtype=np.float32)))
            self._fed = start
        if end > self._fed:
            self._append(self._stream.push(request.audio[self._fed - start :]))
            self._fed = end
        # The frame's number in the utterance: its window starts at floor(k * rate / fps).
        k = round(request.segment_position * fps / melspec.SAMPLE_RATE)
        return melspec.mel_window(self._columns[:, : self._count], k, fps)

    def _append(self, columns: np.ndarray) -> None:
        n = columns.shape[1]
        if self._count + n > self._columns.shape[1]:
            grown = np.zeros((melspec.N_MELS, 2 * (self._count + n)), dtype=np.float32)
            grown[:, : self._count] = self._columns[:, : self._count]
            self._columns = grown
        self._columns[:, self._count : self._count + n] = columns
        self._count += n
