"""Start an avatar in a room: renderer, generator and publisher wired together.

Used both in-process (inside the agent's job) and by the separately dispatched avatar worker;
the only difference between the two is where the AudioReceiver gets its audio from, and what
`avatar.interrupt` stops (the agent's session in-process, the avatar's own playback remotely).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from livekit import rtc
from livekit.agents.voice.avatar import AudioReceiver
from threadpoolctl import threadpool_limits

import renderers

from .backgrounds import BackgroundLibrary
from .compositor import Compositor
from .controls import AvatarControls, InterruptHandler
from .generator import AvatarVideoGenerator, RuntimeOptions
from .publisher import AvatarPublisher
from .state import AvatarState

logger = logging.getLogger("avatar_runtime")

_TRACKS_TIMEOUT_S = 10.0
_blas_limited = False


def limit_blas_threads() -> None:
    """Give this process's BLAS (numpy's OpenBLAS) `AVATAR_BLAS_THREADS` threads, 1 by
    default, once. A live avatar calls BLAS for small products every frame; with a pool of
    threads, OpenBLAS's idle threads spin between those calls (sched_yield, tens of thousands
    a second), so one meshwarp session's job process used 128% of a core while the avatar was
    idle and 32% with one thread. 0 leaves the process's own setting."""
    global _blas_limited
    if _blas_limited:
        return
    _blas_limited = True
    raw = os.environ.get("AVATAR_BLAS_THREADS", "1").strip() or "1"
    try:
        threads = int(raw)
    except ValueError:
        logger.warning("AVATAR_BLAS_THREADS=%r is not a number; using 1", raw)
        threads = 1
    if threads > 0:
        threadpool_limits(limits=threads, user_api="blas")


@dataclass
class RunningAvatar:
    """What `start_avatar` started; `aclose()` stops all of it."""

    publisher: AvatarPublisher
    controls: AvatarControls
    state: AvatarState

    async def aclose(self) -> None:
        self.controls.unregister()
        await self.publisher.aclose()


async def start_avatar(
    room: rtc.Room,
    audio_recv: AudioReceiver,
    *,
    renderer: str | renderers.Renderer,
    source: Path | None,
    options: RuntimeOptions,
    state: AvatarState | None = None,
    library: BackgroundLibrary | None = None,
    on_interrupt: InterruptHandler | None = None,
) -> RunningAvatar:
    """Load the renderer (off the event loop: it may read files or build models) and start
    publishing idle frames at once; speech follows as the receiver delivers it. Returns once
    the avatar's tracks are published (at most `_TRACKS_TIMEOUT_S` later), and only then
    announces it (state attributes, RPCs).

    `state.background` is shown behind the avatar from the next frame on whenever it changes;
    image backgrounds come from `library` (default: the one in `default_backgrounds_dir()`,
    shared with whichever process registers the images).

    The room's local participant answers the control RPCs (avatar_runtime.controls) and
    carries the state attributes. `avatar.interrupt` calls `on_interrupt` (in-process: the
    AgentSession's `interrupt`), by default the publisher's own `interrupt`, which stops the
    playback at once as the agent's `clear_buffer` would.

    `renderer` is a registered renderer's name, or an instance made for `options`' video
    format (not loaded yet: it is loaded here, with `source`)."""
    limit_blas_threads()
    state = state or AvatarState()
    library = library if library is not None else BackgroundLibrary()
    state.set_background(state.background, library)  # canonical spelling; ValueError if unknown
    if isinstance(renderer, str):
        renderer = renderers.create(
            renderer, renderers.VideoFormat(options.width, options.height, options.fps)
        )
    await asyncio.to_thread(renderer.load, source)
    compositor = Compositor(
        options.width,
        options.height,
        library,
        mask_from_alpha=renderer.capabilities.alpha_is_person_mask,
    )
    generator = AvatarVideoGenerator(renderer, options, expression=state.expression)
    publisher = AvatarPublisher(
        room,
        audio_recv=audio_recv,
        video_gen=generator,
        compositor=compositor,
        background=lambda: state.background,
    )
    await publisher.start()
    # Announce the avatar (state attributes, RPCs) only once its tracks are up: a room closed
    # while livekit-rtc is still publishing a video track can crash this process (see
    # AvatarPublisher.wait_for_tracks), and whoever closes rooms acts on the announcement.
    if not await publisher.wait_for_tracks(_TRACKS_TIMEOUT_S):
        logger.warning("avatar tracks not up after %.0f s; announcing anyway", _TRACKS_TIMEOUT_S)
    controls = AvatarControls(
        room,
        state,
        library,
        on_interrupt if on_interrupt is not None else publisher.interrupt,
        publisher=publisher,
        shown_emotions=renderer.capabilities.emotions,
        generator=generator,
    )
    controls.register()
    return RunningAvatar(publisher, controls, state)
