"""The avatar runtime: speech audio in, paced and paired video + audio frames out.

Uses `renderers`; knows nothing about HTTP or the agent. See generator.py for how frames are
planned, rendered off the event loop and emitted, and publisher.py for how they reach a room.
"""

from .backgrounds import (
    Background,
    BackgroundLibrary,
    default_backgrounds_dir,
    parse_background,
    valid_backgrounds,
)
from .compositor import Compositor
from .controls import AvatarControls
from .generator import IDLE_AUDIO_KEY, AvatarVideoGenerator, RuntimeOptions
from .launch import RunningAvatar, start_avatar
from .publisher import STATS_ATTRIBUTE, AvatarPublisher
from .speech import SpeechQueue, SpeechWindow
from .state import EMOTIONS, AvatarState
from .stats import RuntimeStats
from .timeline import FrameTimeline, SampleBuffer

__all__ = [
    "EMOTIONS",
    "IDLE_AUDIO_KEY",
    "STATS_ATTRIBUTE",
    "AvatarControls",
    "AvatarPublisher",
    "AvatarState",
    "AvatarVideoGenerator",
    "Background",
    "BackgroundLibrary",
    "Compositor",
    "FrameTimeline",
    "RunningAvatar",
    "RuntimeOptions",
    "RuntimeStats",
    "SampleBuffer",
    "SpeechQueue",
    "SpeechWindow",
    "default_backgrounds_dir",
    "parse_background",
    "start_avatar",
    "valid_backgrounds",
]
