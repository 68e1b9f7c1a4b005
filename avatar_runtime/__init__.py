"""The avatar runtime: speech audio in, paced and paired video + audio frames out.

For your own livekit-agents agent: `from avatar_runtime import AvatarSession` (session.py).

Uses `renderers`; knows nothing about HTTP or the agent. See generator.py for how frames are
planned, rendered off the event loop and emitted, and publisher.py for how they reach a room.
"""

# Importing avatar_runtime registers its livekit-agents plugin (plugin.py), so a worker's
# `download-files` command also fetches the face models.
from . import plugin as _plugin  # noqa: F401
from .avatars import DEFAULT_AVATAR, AvatarCatalog, default_avatars_dir
from .backgrounds import (
    Background,
    BackgroundLibrary,
    default_backgrounds_dir,
    parse_background,
    valid_backgrounds,
)
from .captions import publish_captions_unlinked
from .compositor import BackgroundStage, Compositor
from .controls import AvatarControls, ControlError
from .generator import IDLE_AUDIO_KEY, AvatarVideoGenerator, RuntimeOptions
from .launch import RunningAvatar, start_avatar
from .pacer import FramePacer
from .publisher import STATS_ATTRIBUTE, AvatarPublisher
from .remote import RemoteAvatarRequest
from .session import AvatarSession, AvatarStatus
from .speech import SpeechQueue, SpeechWindow
from .state import EMOTIONS, AvatarState
from .stats import RuntimeStats
from .stream_receiver import ClearingAudioReceiver
from .timeline import FrameTimeline, SampleBuffer

__all__ = [
    "DEFAULT_AVATAR",
    "EMOTIONS",
    "IDLE_AUDIO_KEY",
    "STATS_ATTRIBUTE",
    "AvatarCatalog",
    "AvatarControls",
    "AvatarPublisher",
    "AvatarSession",
    "AvatarStatus",
    "AvatarState",
    "AvatarVideoGenerator",
    "Background",
    "BackgroundLibrary",
    "BackgroundStage",
    "ClearingAudioReceiver",
    "Compositor",
    "ControlError",
    "FramePacer",
    "FrameTimeline",
    "RemoteAvatarRequest",
    "RunningAvatar",
    "RuntimeOptions",
    "RuntimeStats",
    "SampleBuffer",
    "SpeechQueue",
    "SpeechWindow",
    "default_avatars_dir",
    "default_backgrounds_dir",
    "parse_background",
    "publish_captions_unlinked",
    "start_avatar",
    "valid_backgrounds",
]
