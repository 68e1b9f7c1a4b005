"""Start an avatar in a room: renderer, generator and publisher wired together.

Used both in-process (inside the agent's job) and by the separately dispatched avatar worker;
the only difference between the two is where the AudioReceiver gets its audio from.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from livekit import rtc
from livekit.agents.voice.avatar import AudioReceiver

import renderers

from .generator import AvatarVideoGenerator, RuntimeOptions
from .publisher import AvatarPublisher
from .state import AvatarState


async def start_avatar(
    room: rtc.Room,
    audio_recv: AudioReceiver,
    *,
    renderer_name: str,
    source: Path | None,
    options: RuntimeOptions,
    state: AvatarState | None = None,
) -> AvatarPublisher:
    """Load the renderer (off the event loop: it may read files or build models) and start
    publishing idle frames at once; speech follows as the receiver delivers it."""
    state = state or AvatarState()
    renderer = renderers.create(
        renderer_name, renderers.VideoFormat(options.width, options.height, options.fps)
    )
    await asyncio.to_thread(renderer.load, source)
    generator = AvatarVideoGenerator(renderer, options, expression=state.expression)
    publisher = AvatarPublisher(room, audio_recv=audio_recv, video_gen=generator)
    await publisher.start()
    return publisher
