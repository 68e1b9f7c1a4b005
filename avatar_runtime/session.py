"""`AvatarSession`: a face for any livekit-agents agent, in a few lines.

    from avatar_runtime import AvatarSession

    avatar = AvatarSession(renderer="meshwarp", avatar="portrait.png")
    await avatar.start(session, room=ctx.room)        # before session.start(...)
    await session.start(agent=MyAgent(tools=avatar.tools()), room=ctx.room)
    await avatar.set_emotion("concerned", 0.7)

The shape of livekit-agents' avatar plugins (it subclasses their `AvatarSession`, so join and
playback metrics reach the `AgentSession` as theirs do), in two modes:

* `inprocess` (default): the avatar runs inside the agent's job and publishes audio and video
  as the agent participant itself. Speech reaches it through a `QueueAudioOutput`;
  `interrupt()` interrupts the whole AgentSession.
* `remote`: the agent dispatches an avatar worker by name (`avatar-renderer` by default, see
  `remote.py`; the project's `agent/avatar_worker.py` is one), on a GPU machine for instance,
  and streams its speech to it over LiveKit data streams (`DataStreamAudioOutput`). The avatar
  joins as its own participant publishing on the agent's behalf; controls travel to it as the
  RPCs of `controls.py`.

Either way `set_emotion`, `set_background`, `interrupt` and `state` behave the same, raise the
same `ControlError` for a value that is not valid, and `tools()` hands the same controls to an
LLM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from livekit import api, rtc
from livekit.agents import get_job_context
from livekit.agents.llm import RawFunctionTool, ToolError, function_tool
from livekit.agents.voice.avatar import AvatarSession as _LiveKitAvatarSession
from livekit.agents.voice.avatar import DataStreamAudioOutput, QueueAudioOutput

import renderers

from .avatars import DEFAULT_AVATAR, AvatarCatalog
from .backgrounds import BLUR, ORIGINAL, BackgroundLibrary, parse_background
from .controls import (
    DEFAULT_INTENSITY,
    SET_BACKGROUND,
    SET_EMOTION,
    ControlError,
    merge_state,
    run_interrupt,
    state_from_attributes,
)
from .dispatch import dispatch_until_joined
from .generator import RuntimeOptions
from .launch import RunningAvatar, start_avatar
from .remote import DEFAULT_WORKER_NAME, RemoteAvatarRequest
from .state import EMOTIONS, AvatarState

if TYPE_CHECKING:
    from livekit.agents import AgentSession

logger = logging.getLogger("avatar_runtime")

Mode = Literal["inprocess", "remote"]
MODES: tuple[Mode, ...] = ("inprocess", "remote")
DEFAULT_RENDERER = "meshwarp"
AVATAR_UNAVAILABLE = 2503
"""`ControlError.code` when a remote avatar has not joined (or has left) and cannot answer."""
JOIN_WAIT_S = 10.0
"""How long a control waits for a remote avatar that has not joined yet."""
RPC_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class AvatarStatus:
    """An avatar's state, as every control answers it."""

    emotion: str
    intensity: float
    background: str
    speaking: bool
    emotions: tuple[str, ...]
    """The emotions the renderer shows (empty: none, an emotion is kept but not shown)."""
    emotion_shown: bool

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> AvatarStatus:
        return cls(
            emotion=str(state["emotion"]),
            intensity=float(state["intensity"]),
            background=str(state["background"]),
            speaking=bool(state["speaking"]),
            emotions=tuple(state["emotions"]),
            emotion_shown=bool(state["emotion_shown"]),
        )


class AvatarSession(_LiveKitAvatarSession):
    """A talking avatar for an `AgentSession`.

    `renderer`: a registered renderer's name (`meshwarp`, `testcard`, `wav2lip`, ... see
    `renderers.available()`) or, in-process, a `renderers.Renderer` made for this video size.
    `avatar`: what it shows: a portrait image or short video file, an avatar package directory
    or `.tar` (as preparation jobs make them), or an id of the avatar catalog (`AvatarCatalog`:
    `AVATAR_AVATARS_DIR`, then the bundled portraits); None, or `default`, is the renderer's
    own default. An id the catalog does not know is logged and the default shown, as the
    project's worker does for a session's `avatar_id`. In remote mode only ids travel (paths
    are machine-local); the avatar worker resolves them in its own catalog.
    `avatar_id` is another name for `avatar` (seed 002's spelling); `avatar_name` is the avatar
    participant's display name (in-process: the agent's own participant).
    `width`, `height`, `fps`, `audio_sample_rate`: the published video and audio.
    `emotion`, `intensity`, `background`: what the avatar starts with.
    `mode`: `inprocess` or `remote` (see the module). Remote mode also takes
    `avatar_worker_name` (the agent name the avatar worker registers under) and
    `avatar_identity` (default `<agent identity>-avatar`), and dispatches through the job's
    LiveKit API, or outside a job through one made from `livekit_url`, `api_key` and
    `api_secret` (default: the `LIVEKIT_*` variables).
    `backgrounds` and `avatars`: the background library and avatar catalog to use (defaults:
    the shared ones under `AVATAR_CACHE`).
    `render_timeout_s` (in-process): a render call that takes longer is given up as hung; the
    avatar then shows its idle picture, reports `renderer_error` in its state and tries the
    renderer again after a back-off (`RuntimeOptions`).
    """

    def __init__(
        self,
        *,
        renderer: str | renderers.Renderer = DEFAULT_RENDERER,
        avatar: str | Path | None = None,
        avatar_id: str | None = None,
        avatar_name: str | None = None,
        width: int = 512,
        height: int = 512,
        fps: float = 30.0,
        audio_sample_rate: int = 24000,
        emotion: str = "neutral",
        intensity: float | None = None,
        background: str = ORIGINAL,
        mode: Mode = "inprocess",
        avatar_worker_name: str = DEFAULT_WORKER_NAME,
        avatar_identity: str | None = None,
        livekit_url: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        backgrounds: BackgroundLibrary | None = None,
        avatars: AvatarCatalog | None = None,
        render_timeout_s: float = RuntimeOptions.render_timeout_s,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not valid; choose one of: {', '.join(MODES)}")
        if avatar is not None and avatar_id is not None and str(avatar) != avatar_id:
            raise ValueError("give the avatar once: avatar= or avatar_id=, not both")
        if isinstance(renderer, str):
            if renderer not in renderers.available():
                raise ValueError(
                    f"renderer={renderer!r} is not a renderer; choose one of: "
                    + ", ".join(renderers.available())
                )
        elif mode == "remote":
            raise ValueError("remote mode names its renderer: pass renderer='<name>'")
        elif not isinstance(renderer, renderers.Renderer):
            raise TypeError("renderer must be a renderer's name or a renderers.Renderer")
        if width % 2 or height % 2 or not (64 <= width <= 1920 and 64 <= height <= 1080):
            raise ValueError("width and height must be even, from 64x64 to 1920x1080")
        if not 1 <= fps <= 60:
            raise ValueError("fps must be from 1 to 60")
        if emotion not in EMOTIONS:
            raise ValueError(
                f"emotion={emotion!r} is not valid; choose one of: {', '.join(EMOTIONS)}"
            )
        if intensity is None:
            intensity = 0.0 if emotion == "neutral" else DEFAULT_INTENSITY
        if not 0.0 <= intensity <= 1.0:
            raise ValueError("intensity must be between 0 and 1")
        self._mode: Mode = mode
        self._renderer = renderer
        self._avatar = avatar if avatar is not None else avatar_id
        self._avatar_name = avatar_name
        self._options = RuntimeOptions(
            width=width,
            height=height,
            fps=float(fps),
            audio_sample_rate=audio_sample_rate,
            render_timeout_s=render_timeout_s,
        )
        self._initial = AvatarState(
            emotion=emotion, intensity=float(intensity), background=background
        )
        self._worker_name = avatar_worker_name
        self._explicit_identity = avatar_identity
        self._credentials = (livekit_url, api_key, api_secret)
        self._library = backgrounds if backgrounds is not None else BackgroundLibrary()
        self._catalog = avatars if avatars is not None else AvatarCatalog()
        if mode == "remote":
            self._remote_avatar_id()  # a path given for a remote avatar fails now, not later
        else:
            parse_background(background, self._library)  # ValueError listing the valid ones

        self._identity: str | None = None
        self._session: AgentSession | None = None
        self._lk_room: rtc.Room | None = None
        self._running: RunningAvatar | None = None
        self._own_api: api.LiveKitAPI | None = None
        self._dispatch_task: asyncio.Task[None] | None = None
        self._remote_state: dict[str, Any] | None = None
        self._closed = False

    # -- livekit-agents' AvatarSession ---------------------------------------------------------

    @property
    def provider(self) -> str:
        return "avatar-agents"

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def avatar_identity(self) -> str:
        """The identity of the participant that shows the avatar: the agent's own in-process,
        the avatar worker's in remote mode. Known once `start` has run (or given)."""
        if self._identity is not None:
            return self._identity
        if self._explicit_identity is not None:
            return self._explicit_identity
        raise RuntimeError("the avatar's identity is known once start() has run")

    async def start(self, agent_session: AgentSession, room: rtc.Room) -> None:
        """Start the avatar for `agent_session` in `room`; call it before
        `agent_session.start(...)`, which then leaves the audio to the avatar. Connects the
        job's room if it is not connected yet."""
        if self._session is not None or self._closed:
            raise RuntimeError("an AvatarSession starts once")
        await super().start(agent_session, room)
        self._session, self._lk_room = agent_session, room
        try:
            if not room.isconnected():
                job = get_job_context(required=False)
                if job is None:
                    raise RuntimeError("connect the room before starting the avatar")
                await job.connect()
            if self._mode == "inprocess":
                await self._start_in_process(agent_session, room)
            else:
                self._start_remote(agent_session, room)
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stop the avatar: in-process its publisher and controls, in remote mode the dispatch
        and the avatar participant. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._dispatch_task is not None:
            self._dispatch_task.cancel()
            await asyncio.gather(self._dispatch_task, return_exceptions=True)
        if self._running is not None:
            await self._running.aclose()
        room = self._lk_room
        if room is not None and self._mode == "remote":
            room.off("participant_attributes_changed", self._on_remote_attributes)
        if self._mode == "inprocess" and self._room is not None:
            # The base removes the avatar participant from the room, which in-process is the
            # agent itself: detach its room first so it only cleans up.
            self._room.off("connection_state_changed", self._on_connection_state_changed)
            self._room = None
        elif (
            self._mode == "remote"
            and room is not None
            and room.isconnected()
            and self._identity is not None
            and get_job_context(required=False) is None
        ):
            await self._remove_remote_avatar(room)  # in a job the base does this
        await super().aclose()
        if self._own_api is not None:
            await self._own_api.aclose()
            self._own_api = None

    # -- controls --------------------------------------------------------------------------------

    async def set_emotion(self, emotion: str, intensity: float = DEFAULT_INTENSITY) -> AvatarStatus:
        """Show `emotion` (one of `EMOTIONS` the renderer shows) at `intensity` (0..1) from the
        next frame on, eased in. ControlError when either is not valid."""
        if self._running is not None:
            return AvatarStatus.from_state(self._running.controls.set_emotion(emotion, intensity))
        return await self._remote_call(SET_EMOTION, {"emotion": emotion, "intensity": intensity})

    _set_emotion = set_emotion
    """Seed 002's spelling (`await avatar._set_emotion("concerned", 0.7)`)."""

    async def set_background(self, background_id: str) -> AvatarStatus:
        """Show `background_id` (`original`, `blur`, `color:#RRGGBB` or a registered image id)
        behind the avatar from the next frame on. ControlError when it is not valid."""
        if self._running is not None:
            return AvatarStatus.from_state(self._running.controls.set_background(background_id))
        return await self._remote_call(SET_BACKGROUND, {"background_id": background_id})

    async def interrupt(self) -> AvatarStatus:
        """Stop what the agent is saying: the AgentSession's speech, LLM and TTS, and the
        avatar's playback with it, within a frame."""
        if self._running is not None:
            return AvatarStatus.from_state(await self._running.controls.interrupt())
        session = self._require_started()
        await run_interrupt(session.interrupt)  # its audio output clears the avatar's playback
        return self.state

    @property
    def state(self) -> AvatarStatus:
        """The avatar's current state. Remote: the newest of what its last control answered
        and what its participant attributes said since, so a read right after a control shows
        its result even before the attributes have arrived."""
        if self._running is not None:
            return AvatarStatus.from_state(self._running.controls.snapshot())
        room = self._require_started_room()
        if self._remote_state is None:
            participant = room.remote_participants.get(self.avatar_identity)
            self._remote_state = state_from_attributes(
                participant.attributes if participant is not None else {}
            )
        return AvatarStatus.from_state(self._remote_state)

    def tools(self) -> list[RawFunctionTool]:
        """Function tools with which an LLM changes its own face while it speaks: `set_emotion`
        and `set_background`, the valid values in their schemas. Pass them to your Agent
        (`Agent(..., tools=avatar.tools())`). A bad value is refused with a message that lists
        the valid ones, which the model reads and can act on."""
        emotions = list(EMOTIONS)
        if self._running is not None and self._running.controls.shown_emotions:
            emotions = list(self._running.controls.shown_emotions)
        backgrounds = [ORIGINAL, BLUR, *self._library.ids()]

        async def set_emotion(raw_arguments: dict[str, object]) -> str:
            intensity = raw_arguments.get("intensity", DEFAULT_INTENSITY)
            try:
                status = await self.set_emotion(raw_arguments.get("emotion"), intensity)  # type: ignore[arg-type]
            except ControlError as error:
                raise ToolError(error.message) from None
            return f"Your face now shows {status.emotion} (intensity {status.intensity:.1f})."

        async def set_background(raw_arguments: dict[str, object]) -> str:
            try:
                status = await self.set_background(raw_arguments.get("background_id"))  # type: ignore[arg-type]
            except ControlError as error:
                raise ToolError(error.message) from None
            return f"The background behind you is now {status.background}."

        return [
            function_tool(
                set_emotion,
                raw_schema={
                    "name": "set_emotion",
                    "description": (
                        "Change your facial expression to fit the conversation as you speak: "
                        "for example concerned when the user describes a problem or symptoms, "
                        "reassuring when you comfort them, happy when you greet them."
                    ),
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "emotion": {"type": "string", "enum": emotions},
                            "intensity": {
                                "type": "number",
                                "minimum": 0,
                                "maximum": 1,
                                "description": "How strongly to show it, 0 to 1 (default 0.7).",
                            },
                        },
                        "required": ["emotion"],
                    },
                },
            ),
            function_tool(
                set_background,
                raw_schema={
                    "name": "set_background",
                    "description": (
                        "Change the scene shown behind you: 'original' is your own background, "
                        "'blur' blurs it, the others are rooms."
                    ),
                    "parameters": {
                        "type": "object",
                        "properties": {"background_id": {"type": "string", "enum": backgrounds}},
                        "required": ["background_id"],
                    },
                },
            ),
        ]

    # -- in-process ------------------------------------------------------------------------------

    async def _start_in_process(self, agent_session: AgentSession, room: rtc.Room) -> None:
        self._identity = room.local_participant.identity
        audio = QueueAudioOutput(wait_playback_start=True)
        state = AvatarState(
            emotion=self._initial.emotion,
            intensity=self._initial.intensity,
            background=self._initial.background,
        )
        self._running = await start_avatar(
            room,
            audio,
            renderer=self._renderer,
            source=self._in_process_source(),
            options=self._options,
            state=state,
            library=self._library,
            on_interrupt=agent_session.interrupt,
        )
        agent_session.output.replace_audio_tail(audio)
        if self._avatar_name:
            await room.local_participant.set_name(self._avatar_name)

    def _in_process_source(self) -> Path | None:
        """The file or package `avatar` names (see the class), None for the default."""
        avatar = self._avatar
        if avatar is None:
            return None
        if isinstance(avatar, str):
            if avatar == DEFAULT_AVATAR:
                return None
            try:
                return self._catalog.resolve(avatar)
            except KeyError:
                pass
        path = Path(avatar).expanduser()
        if path.exists():
            return path
        if isinstance(avatar, Path) or os.sep in avatar or path.suffix:
            raise ValueError(f"avatar {str(avatar)!r} does not exist")
        logger.error(
            "unknown avatar %r (not in %s); showing the default avatar",
            avatar[:80],
            self._catalog.directory,
        )
        return None

    # -- remote ----------------------------------------------------------------------------------

    def _remote_avatar_id(self) -> str:
        avatar = self._avatar
        if avatar is None:
            return DEFAULT_AVATAR
        if isinstance(avatar, Path) or os.sep in avatar or Path(avatar).suffix:
            raise ValueError(
                f"remote mode sends the avatar by its catalog id, not a path ({str(avatar)!r}); "
                "register it in the avatar worker's AVATAR_AVATARS_DIR and pass its id"
            )
        return avatar

    def _start_remote(self, agent_session: AgentSession, room: rtc.Room) -> None:
        agent_identity = room.local_participant.identity
        self._identity = self._explicit_identity or f"{agent_identity}-avatar"
        assert isinstance(self._renderer, str)  # checked in __init__
        request = RemoteAvatarRequest(
            agent_identity=agent_identity,
            avatar_identity=self._identity,
            avatar_id=self._remote_avatar_id(),
            renderer=self._renderer,
            width=self._options.width,
            height=self._options.height,
            fps=self._options.fps,
            emotion=self._initial.emotion,
            intensity=self._initial.intensity,
            background=self._initial.background,
            name=self._avatar_name,
        )
        dispatch = api.CreateAgentDispatchRequest(
            agent_name=self._worker_name, room=room.name, metadata=request.to_metadata()
        )
        self._dispatch_task = asyncio.create_task(
            self._dispatch(room, dispatch), name="avatar-dispatch"
        )
        room.on("participant_attributes_changed", self._on_remote_attributes)
        agent_session.output.replace_audio_tail(
            DataStreamAudioOutput(
                room,
                destination_identity=self._identity,
                wait_remote_track=rtc.TrackKind.KIND_VIDEO,
                wait_playback_start=True,
            )
        )

    def _api(self) -> api.LiveKitAPI:
        job = get_job_context(required=False)
        if job is not None:
            return job.api
        if self._own_api is None:
            url, key, secret = self._credentials
            self._own_api = api.LiveKitAPI(url=url, api_key=key, api_secret=secret)
        return self._own_api

    async def _dispatch(self, room: rtc.Room, request: api.CreateAgentDispatchRequest) -> None:
        """Dispatch the avatar worker, again while the avatar does not join (see dispatch.py)."""
        identity = self.avatar_identity
        try:
            joined = await dispatch_until_joined(
                self._api(), request, lambda: identity in room.remote_participants
            )
        except Exception:
            logger.exception("room %s: could not dispatch the avatar worker", room.name)
            return
        if not joined:
            logger.error(
                "room %s: no %s worker took the avatar's job; the agent is silent until one does",
                room.name,
                request.agent_name,
            )

    def _on_remote_attributes(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        if participant.identity != self._identity or self._remote_state is None:
            return  # not ours; or nothing read yet, and `state` will read them all
        merge_state(self._remote_state, state_from_attributes(changed, partial=True))

    async def _remove_remote_avatar(self, room: rtc.Room) -> None:
        try:
            await self._api().room.remove_participant(
                api.RoomParticipantIdentity(room=room.name, identity=self.avatar_identity)
            )
        except Exception as error:
            logger.debug("could not remove the avatar participant: %s", error)

    async def _remote_call(self, method: str, payload: dict[str, Any]) -> AvatarStatus:
        room = self._require_started_room()
        identity = self.avatar_identity
        if identity not in room.remote_participants:
            try:
                await self.wait_for_join(timeout=JOIN_WAIT_S)
            except TimeoutError:
                raise ControlError(
                    AVATAR_UNAVAILABLE, f"the avatar has not joined after {JOIN_WAIT_S:g} s"
                ) from None
        try:
            reply = await room.local_participant.perform_rpc(
                destination_identity=identity,
                method=method,
                payload=json.dumps(payload),
                response_timeout=RPC_TIMEOUT_S,
            )
        except rtc.RpcError as error:
            if error.code >= 2000:  # ours (controls.py): the avatar refused the value
                raise ControlError.from_rpc_error(error) from None
            raise ControlError(
                AVATAR_UNAVAILABLE, f"the avatar did not answer {method}: {error.message}"
            ) from None
        answer = json.loads(reply)
        self._remote_state = dict(answer)
        return AvatarStatus.from_state(answer)

    def _require_started(self) -> AgentSession:
        if self._session is None or self._closed:
            raise RuntimeError("start() the avatar first" if not self._closed else "avatar closed")
        return self._session

    def _require_started_room(self) -> rtc.Room:
        self._require_started()
        assert self._lk_room is not None
        return self._lk_room


__all__ = ["AVATAR_UNAVAILABLE", "DEFAULT_RENDERER", "MODES", "AvatarSession", "AvatarStatus"]
