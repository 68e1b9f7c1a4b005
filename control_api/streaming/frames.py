"""What a streaming session produces, as its consumers (the WebSocket sender, a WebRTC peer)
see it. The contract between the session (session.py) and its consumers (routes.py, webrtc.py).

A session renders frames from the audio a client streams in; every frame carries exactly its
own window of that audio (1/fps seconds, on the exact frame timeline), so a consumer that plays
the two together plays them in sync. Each consumer subscribes on its own, with its own bounded
queue: a slow one loses frames (counted in `dropped`), never makes the session or the other
consumers wait, and never grows memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

AUDIO_RATE = 16000
"""Sample rate of a frame's audio: the seed's input rate (PCM int16 mono, 16 kHz)."""


@dataclass(frozen=True)
class StreamFrame:
    frame_id: int
    """0, 1, 2, ... in the session, in order (a consumer may see gaps: frames it dropped)."""
    timestamp: float
    """Seconds on the session's audio timeline where this frame starts (frame_id / fps)."""
    jpeg: bytes
    """The picture, JPEG-encoded (what the WebSocket protocol sends)."""
    audio: bytes
    """This frame's own window of the input audio: int16 mono PCM at AUDIO_RATE."""
    width: int
    height: int


class FrameSubscription(Protocol):
    """One consumer's view of a session's frames, in order. Iteration ends when the session
    ends (stop, closed socket, expiry, a crashed worker) or the subscription is closed."""

    dropped: int
    """Frames this consumer lost because it read too slowly."""

    def __aiter__(self) -> AsyncIterator[StreamFrame]: ...

    def close(self) -> None: ...


class FrameSource(Protocol):
    """A live streaming session, as a consumer needs it."""

    session_id: str
    fps: float
    width: int
    height: int

    def subscribe(self, max_queue: int = 60) -> FrameSubscription: ...

    @property
    def closed(self) -> bool: ...


__all__ = ["AUDIO_RATE", "FrameSource", "FrameSubscription", "StreamFrame"]
