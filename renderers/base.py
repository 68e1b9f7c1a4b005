"""The one interface every renderer implements.

A renderer is pure compute: given the audio window of a video frame (or none, when the avatar
is idle) and the current expression, it returns the pixels of that frame. It knows nothing about
LiveKit, pacing or HTTP; the avatar runtime owns all of that.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CodedError


class RendererError(CodedError):
    """A renderer could not load or prepare an avatar. `code` is stable for API clients."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)


@dataclass(frozen=True)
class RendererCapabilities:
    """What a renderer needs from the runtime and what it offers."""

    sample_rate: int = 16000
    """Rate of the audio the renderer reads; the runtime resamples speech to it."""
    native_fps: float | None = None
    """Frame rate the model was trained at, if it has one (None: any rate)."""
    lookahead_s: float = 0.0
    """Audio the renderer must see past the end of a frame's own window."""
    lookbehind_s: float = 0.0
    """Audio the renderer wants before the start of a frame's own window."""
    batch_size: int = 1
    """Frames the renderer prefers to receive per `render` call."""
    emotions: tuple[str, ...] = ()
    """Emotions it can show; empty means it has no emotion control."""
    devices: tuple[str, ...] = ("cpu",)
    backends: tuple[str, ...] = ("numpy",)
    needs_source: bool = False
    """True when it cannot run without an avatar source (image, video or package)."""
    alpha_is_person_mask: bool = False
    """True when the alpha channel of its frames is the person mask (255 = person), so the
    background compositor need not segment the picture itself."""


@dataclass(frozen=True)
class Expression:
    """Emotion state read by the renderer on every frame."""

    emotion: str = "neutral"
    intensity: float = 0.0


@dataclass(frozen=True)
class FrameRequest:
    """Everything a renderer gets to draw one video frame."""

    index: int
    """Frame number since the session started, idle frames included."""
    audio: np.ndarray | None
    """float32 mono at `sample_rate`: lookbehind + the frame's own window + lookahead.
    None for idle frames (no speech)."""
    window_offset: int
    """Index in `audio` where the frame's own window starts (the lookbehind length)."""
    window_length: int
    """Number of samples in the frame's own window (varies by one with fractional rates)."""
    speech_position: int
    """Speech samples (at `sample_rate`) the session played before this frame's window: a
    monotonic clock of speech, used by the testcard to make sync measurable."""
    segment: int = 0
    """Utterance counter: 1 for the session's first utterance, +1 for each next one."""
    segment_position: int = 0
    """Samples of the current utterance before this frame's window (0 at an utterance start)."""
    expression: Expression = field(default_factory=Expression)

    @property
    def is_speech(self) -> bool:
        return self.audio is not None

    def own_window(self) -> np.ndarray:
        """The frame's own audio (without look-behind/look-ahead); empty when idle."""
        if self.audio is None:
            return np.zeros(0, dtype=np.float32)
        return self.audio[self.window_offset : self.window_offset + self.window_length]


@dataclass(frozen=True)
class VideoFormat:
    width: int = 512
    height: int = 512
    fps: float = 30.0


class Renderer(ABC):
    """Base class of all renderers. Subclasses set `name` and `capabilities`."""

    name: str = ""
    capabilities: RendererCapabilities = RendererCapabilities()

    def __init__(self, video: VideoFormat) -> None:
        self.video = video

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this renderer cannot load on this machine (missing weights or models), or None
        when it can. Cheap: it checks files, it loads nothing. Health checks report it."""
        return None

    @classmethod
    def describe(cls) -> dict[str, object]:
        """Facts about how this renderer is configured here (a model's back end and device),
        for health checks. Cheap, like `unavailable_reason`; empty when there is nothing to say."""
        return {}

    @classmethod
    def checkpoints(cls) -> dict[str, object] | None:
        """The model files this renderer loads, found or missing, for `GET /api/v1/models`:
        {"setting": the variable that says where they are, "path": its value (None when unset),
        "complete": all there, "files": [{"name": named from that path, "found": bool}, ...]}.
        None for a renderer that needs no files. Cheap: it looks at files, it reads none."""
        return None

    def load(self, source: Path | None) -> None:
        """Prepare the avatar once (detect, cache). Raise RendererError on bad input."""
        if source is None and self.capabilities.needs_source:
            raise RendererError("source_required", f"renderer '{self.name}' needs an avatar source")

    @abstractmethod
    def render(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
        """Return one RGBA uint8 array of shape (height, width, 4) per request, in order.

        Called from a worker thread, never on the event loop. Requests arrive in frame order.
        """

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Forget per-utterance state (called after an interruption)."""

    def set_sampling_steps(self, steps: int) -> None:  # noqa: B027 - optional hook
        """Use `steps` denoising steps from now on (seed 004's `sampling_timesteps`); only a
        diffusion renderer has them, the others ignore it."""

    def snap_expression(self, expression: Expression) -> None:  # noqa: B027 - optional hook
        """Show `expression` fully from the next frame, without the usual ease from the
        previous one (renderers that ease emotions override this)."""

    def render_still(self, expression: Expression) -> np.ndarray:
        """One idle RGBA frame of the loaded avatar showing `expression` fully: what a
        single-frame render (seed 001's render service) answers. Eyes open, no speech."""
        self.snap_expression(expression)
        request = FrameRequest(
            index=0,
            audio=None,
            window_offset=0,
            window_length=0,
            speech_position=0,
            expression=expression,
        )
        return self.render([request])[0]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release models and threads."""
