"""`musetalk`: an avatar package's own video, its lower face re-drawn by MuseTalk 1.5 from the
speech.

* Idle, the package's frames play forward and backward (ping-pong) by frame index; nothing is
  inferred.
* Speaking, each frame's audio tokens (Whisper-tiny's hidden states over MuseTalk's 10-position
  window, audio.py) come from the utterance's audio as it arrives; the frames of a batch go
  through the UNet together (one step at timestep 0, the package's masked + reference latents
  as input) and the VAE decoder. A frame whose audio is silent (below `silence_db`) skips the
  networks and shows the original face; its audio still feeds the utterance's stream.
* The generated face goes back through the package's mask (blend.py).
* reset() (an interruption) drops the utterance's audio; the next speech starts afresh.

torch, diffusers and transformers are imported only in `load` (networks.py), so the registry,
health checks and the control API can look at this class without them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..base import FrameRequest, RendererError, VideoFormat
from ..lipsync import LipSyncRenderer, LipSyncSettings, lipsync_capabilities
from . import audio as audio_tokens
from .blend import paste_face
from .package import MuseTalkAvatar, is_package, load_package
from .settings import MuseTalkSettings

logger = logging.getLogger(__name__)


class MuseTalkRenderer(LipSyncRenderer):
    name = "musetalk"
    settings_type = MuseTalkSettings
    capabilities = lipsync_capabilities(
        sample_rate=audio_tokens.SAMPLE_RATE,
        window_lookahead_s=audio_tokens.lookahead_seconds(30.0),
        batch_size=2,
        backends=("torch",),
    )
    settings: MuseTalkSettings

    def __init__(
        self,
        video: VideoFormat,
        *,
        settings: MuseTalkSettings | None = None,
        networks: Any | None = None,
    ) -> None:
        """`networks` (a MuseTalkNetworks) replaces the configured models: tests and
        benchmarks pass their own."""
        super().__init__(video)
        self.settings = settings or MuseTalkSettings.from_env()
        self._networks = networks
        self.backend_description = networks.description if networks is not None else ""
        self._fit_capabilities(audio_tokens.lookahead_seconds(video.fps))
        self._avatar: MuseTalkAvatar | None = None
        self._utterance: audio_tokens.UtteranceFeatures | None = None
        self._mel: audio_tokens.FeatureExtractor | None = None
        self.inferred_frames = 0
        """Frames that went through the networks (silence and idle frames do not)."""

    # -- Renderer ----------------------------------------------------------------------------

    @classmethod
    def describe_settings(cls, settings: LipSyncSettings) -> dict[str, object]:
        assert isinstance(settings, MuseTalkSettings)
        return {
            "backend": "torch",
            "device": settings.resolved_device(),
            "fp16": settings.resolved_fp16(),
            "batch_size": settings.resolved_batch_size(),
            "models_dir": str(settings.models_dir) if settings.models_dir else None,
        }

    def load(self, source: Path | None) -> None:
        super().load(source)
        assert source is not None
        avatar = self._load_avatar(
            source,
            is_package=is_package,
            load_package=load_package,
            needs="musetalk needs a MuseTalk avatar package (a directory or .tar with coords.pkl, "
            "mask_coords.pkl, latents.pt, full_imgs/ and mask/, made by the avatar "
            "preparation job with model 'musetalk')",
        )
        if self._networks is None:
            self._networks = self._create_networks()
        self._mel = audio_tokens.FeatureExtractor(self._networks.mel_bins)
        self._avatar = avatar

    def render(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
        avatar = self._avatar
        if avatar is None:
            raise RendererError("not_loaded", "musetalk renderer used before load()")
        frames: list[np.ndarray] = []
        todo: list[tuple[np.ndarray, int, int]] = []  # output frame, avatar frame, frame number
        for request in requests:
            frame, shown = self._idle_frame(avatar, request.index)
            frames.append(frame)
            if request.audio is None:
                continue
            if self._utterance is not None and self._utterance.segment != request.segment:
                self._flush(avatar, todo)  # a new utterance: finish the last one's frames
            number = self._feed(request)  # fed even when silent: the stream continues
            if self._audible(request.own_window()):
                todo.append((frame, shown, number))
        self._flush(avatar, todo)
        return frames

    def reset(self) -> None:
        self._utterance = None

    def close(self) -> None:
        self._networks = None
        self._avatar = None
        self._utterance = None

    # -- internals ---------------------------------------------------------------------------

    def _create_networks(self) -> Any:
        reason = self.settings.missing()
        if reason is not None:
            raise RendererError("renderer_unavailable", reason)
        from .networks import MuseTalkNetworks  # torch & co. only now

        settings = self.settings
        assert settings.models_dir is not None
        networks = MuseTalkNetworks.load(
            settings.models_dir,
            device=settings.resolved_device(),
            fp16=settings.resolved_fp16(),
        )
        self.backend_description = networks.description
        logger.info("musetalk back end: %s", self.backend_description)
        return networks

    def _feed(self, request: FrameRequest) -> int:
        """Give the utterance stream the request's audio; the frame's number in the utterance."""
        assert request.audio is not None and self._networks is not None and self._mel
        if self._utterance is None or self._utterance.segment != request.segment:
            self._utterance = audio_tokens.UtteranceFeatures(
                request.segment,
                mel=self._mel,
                encode=self._networks.audio_features,
                layers=self._networks.layers,
                width=self._networks.feature_dim,
            )
        start = request.segment_position - request.window_offset  # utterance sample of audio[0]
        self._utterance.feed(request.audio, start)
        return round(request.segment_position * self.video.fps / audio_tokens.SAMPLE_RATE)

    def _flush(self, avatar: MuseTalkAvatar, todo: list[tuple[np.ndarray, int, int]]) -> None:
        for batch in self._batches(todo):
            self._lip_sync(avatar, batch)
        todo.clear()

    def _lip_sync(
        self, avatar: MuseTalkAvatar, items: Sequence[tuple[np.ndarray, int, int]]
    ) -> None:
        import torch

        assert self._networks is not None and self._utterance is not None
        tokens = self._utterance.tokens([number for _, _, number in items], self.video.fps)
        latents = torch.from_numpy(avatar.latents[[shown for _, shown, _ in items]])
        faces = self._networks.generate(latents, tokens)
        self.inferred_frames += len(items)
        for (frame, shown, _), face in zip(items, faces, strict=True):
            paste_face(frame, face, avatar.boxes[shown], avatar.masks[shown])
