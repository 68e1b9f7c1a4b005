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

from .backgrounds import BackgroundLibrary
from .compositor import Compositor
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
    library: BackgroundLibrary | None = None,
) -> AvatarPublisher:
    """Load the renderer (off the event loop: it may read files or build models) and start
    publishing idle frames at once; speech follows as the receiver delivers it.

    `state.background` is shown behind the avatar from the next frame on whenever it changes;
    image backgrounds come from `library` (default: the one in `default_backgrounds_dir()`,
    shared with whichever process registers the images)."""
    state = state or AvatarState()
    library = library if library is not None else BackgroundLibrary()
    renderer = renderers.create(
        renderer_name, renderers.VideoFormat(options.width, options.height, options.fps)
    )
    await asyncio.to_thread(renderer.load, source)
    compositor = Compositor(
        options.width,
        options.height,
        library,
        mask_from_alpha=renderer.capabilities.alpha_is_person_mask,
    )
    generator = AvatarVideoGenerator(
        renderer,
        options,
        expression=state.expression,
        background=lambda: state.background,
        compositor=compositor,
    )
    publisher = AvatarPublisher(room, audio_recv=audio_recv, video_gen=generator)
    await publisher.start()
    return publisher
