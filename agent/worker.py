"""The agent worker: one AgentSession per room, speaking through the avatar.

Run it with `python -m agent dev|start|console|connect` (the livekit-agents CLI), or let the
LiveKit CLI drive it: `lk agent dev agent/worker.py`. `server` is the AgentServer both find.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from pathlib import Path

from livekit import api, rtc
from livekit.agents import AgentServer, AgentSession, JobContext, JobProcess
from livekit.agents.types import ATTRIBUTE_AGENT_NAME
from livekit.agents.voice.avatar import AudioReceiver, DataStreamAudioOutput, QueueAudioOutput
from livekit.agents.voice.room_io import RoomOptions, TextInputOptions

from avatar_runtime import RunningAvatar, RuntimeOptions, start_avatar
from avatar_runtime.controls import InterruptHandler
from avatar_runtime.dispatch import dispatch_until_joined
from renderers import RendererError

from .assistant import AvatarAssistant, speak_chat_text
from .avatar_source import AVATAR_ID_KEY, job_avatar_source, requested_avatar_id
from .capacity import session_load
from .config import Settings
from .providers import describe, select_providers
from .session_rpc import READY_ATTRIBUTE, register_session_rpc
from .tts_piper import PiperTTS

logger = logging.getLogger("avatar-agent")

PUBLISH_ON_BEHALF = "lk.publish_on_behalf"


def prewarm(proc: JobProcess) -> None:
    """Runs once per job process before any job: load the local voice so the greeting is quick."""
    tts = PiperTTS()
    tts.prewarm(block=True)
    proc.userdata["piper"] = tts


# Explicit dispatch by name, read at import because the decorator needs it.
# The load threshold stays livekit-agents' own (0.7 in production, none in development):
# session_load reaches it at AVATAR_WORKER_SESSIONS sessions.
server = AgentServer(setup_fnc=prewarm, initialize_process_timeout=60.0, load_fnc=session_load)


@server.rtc_session(agent_name=os.environ.get("AVATAR_AGENT_NAME", "avatar-agent"))
async def entrypoint(ctx: JobContext) -> None:
    settings = Settings.from_env()
    await ctx.connect()
    if not ctx.is_fake_job() and another_agent_serves(ctx.room, settings.agent_name):
        logger.warning("room %s already has its agent; this duplicate leaves", ctx.room.name)
        ctx.shutdown("another agent serves this room")
        return
    providers = select_providers()
    if isinstance(providers.tts, PiperTTS) and "piper" in ctx.proc.userdata:
        providers.tts = ctx.proc.userdata["piper"]  # the prewarmed voice
    logger.info(
        "room %s: %s, avatar %s (%s)",
        ctx.room.name,
        describe(providers),
        settings.renderer,
        settings.avatar_mode,
    )

    session = AgentSession(
        stt=providers.stt,
        llm=providers.llm,
        tts=providers.tts,
        vad=_vad(ctx) if providers.stt is not None else None,
        turn_handling={
            # An avatar's audio output cannot pause, so a false interruption can't be resumed.
            "interruption": {"resume_false_interruption": False},
            **({} if providers.stt is not None else {"turn_detection": None}),
        },
    )

    if ctx.is_fake_job():
        pass  # `console`: the terminal is the speaker, there is no room to show a face in
    elif settings.avatar_mode == "remote":
        session.output.audio = await _remote_avatar_output(ctx, settings)
    else:
        session.output.audio = await _in_process_avatar_output(ctx, settings, session)

    text_input = (
        TextInputOptions()
        if providers.llm is not None
        else TextInputOptions(text_input_cb=speak_chat_text)
    )
    await session.start(
        agent=AvatarAssistant(greeting=settings.greeting, has_llm=providers.llm is not None),
        room=ctx.room,
        room_options=RoomOptions(
            text_input=text_input,
            audio_input=providers.stt is not None,
            # The avatar publishes the audio, in sync with its video.
            audio_output=ctx.is_fake_job(),
        ),
    )
    if not ctx.is_fake_job():
        # `agent.say` / `agent.interrupt`, how the control API makes this session speak.
        register_session_rpc(ctx.room.local_participant, session)
        await ctx.room.local_participant.set_attributes({READY_ATTRIBUTE: "true"})


async def _in_process_avatar_output(
    ctx: JobContext, settings: Settings, session: AgentSession
) -> QueueAudioOutput:
    """The avatar runs inside this job and publishes as the agent participant itself, which
    also answers the avatar's control RPCs: `avatar.interrupt` interrupts the whole session
    (speech, LLM and TTS), not only the picture."""
    audio = QueueAudioOutput(wait_playback_start=True)
    await start_job_avatar(ctx, audio, settings, on_interrupt=session.interrupt)
    return audio


async def _remote_avatar_output(ctx: JobContext, settings: Settings) -> DataStreamAudioOutput:
    """Dispatch an avatar worker (possibly on a GPU machine; again while none joins, see
    dispatch.py) and stream our speech to it. The dispatch forwards the job's `avatar_id`.

    The avatar worker answers the control RPCs; its `avatar.interrupt` stops the avatar's
    playback only (the agent hears of it as an interrupted playback), not this session."""
    agent_identity = ctx.room.local_participant.identity
    avatar_identity = f"{agent_identity}-avatar"
    request = api.CreateAgentDispatchRequest(
        agent_name=settings.avatar_worker_name,
        room=ctx.room.name,
        metadata=json.dumps(
            {
                "agent_identity": agent_identity,
                "avatar_identity": avatar_identity,
                # The id, not the path: the avatar worker resolves it on its own machine.
                AVATAR_ID_KEY: requested_avatar_id(ctx.job.metadata),
            }
        ),
    )
    task = asyncio.create_task(_dispatch_avatar(ctx, request, avatar_identity))
    ctx.add_shutdown_callback(lambda: _cancel(task))
    return DataStreamAudioOutput(
        ctx.room,
        destination_identity=avatar_identity,
        wait_remote_track=rtc.TrackKind.KIND_VIDEO,
        wait_playback_start=True,
    )


async def _dispatch_avatar(
    ctx: JobContext, request: api.CreateAgentDispatchRequest, avatar_identity: str
) -> None:
    """Dispatch the avatar worker, again while the avatar does not join (see dispatch.py)."""
    try:
        joined = await dispatch_until_joined(
            ctx.api, request, lambda: avatar_identity in ctx.room.remote_participants
        )
    except Exception:
        logger.exception("room %s: could not dispatch the avatar worker", ctx.room.name)
        return
    if not joined:
        logger.error(
            "room %s: no %s worker took the avatar's job; the agent is silent until one does",
            ctx.room.name,
            request.agent_name,
        )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def another_agent_serves(room: rtc.Room, agent_name: str) -> bool:
    """True when an agent of this name joined `room` before ours did: ours is a late duplicate
    (a dispatch made again while the first job was still starting, see dispatch.py) and should
    leave. Two that join at once agree on which one stays: the earlier one, then by identity."""

    def order(participant: rtc.Participant) -> tuple[float, str]:
        joined = participant.joined_at
        return (joined.timestamp() if joined is not None else math.inf, participant.identity)

    ours = order(room.local_participant)
    return any(
        participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        and participant.attributes.get(ATTRIBUTE_AGENT_NAME) == agent_name
        and PUBLISH_ON_BEHALF not in participant.attributes
        and order(participant) < ours
        for participant in room.remote_participants.values()
    )


async def start_job_avatar(
    ctx: JobContext,
    audio: AudioReceiver,
    settings: Settings,
    *,
    on_interrupt: InterruptHandler | None = None,
) -> RunningAvatar:
    """Start the avatar of this job (the `avatar_id` of its metadata, see avatar_source.py) in
    its room, stopped when the job shuts down. A portrait the renderer cannot load is logged
    and replaced by the configured source, so a bad catalog entry does not end the session."""
    source = job_avatar_source(ctx.job.metadata, settings.source)

    async def start(source: Path | None) -> RunningAvatar:
        return await start_avatar(
            ctx.room,
            audio,
            renderer_name=settings.renderer,
            source=source,
            options=runtime_options(settings),
            on_interrupt=on_interrupt,
        )

    try:
        avatar = await start(source)
    except RendererError as error:
        if source == settings.source:
            raise
        logger.error("cannot load avatar %s (%s); using the default avatar", source, error)
        avatar = await start(settings.source)
    ctx.add_shutdown_callback(avatar.aclose)
    return avatar


def runtime_options(settings: Settings) -> RuntimeOptions:
    return RuntimeOptions(
        width=settings.width,
        height=settings.height,
        fps=settings.fps,
        audio_sample_rate=settings.audio_sample_rate,
    )


def _vad(ctx: JobContext):  # noqa: ANN202 - silero's type lives in an optional plugin
    from livekit.plugins import silero

    if "vad" not in ctx.proc.userdata:
        ctx.proc.userdata["vad"] = silero.VAD.load()
    return ctx.proc.userdata["vad"]


__all__ = ["PUBLISH_ON_BEHALF", "entrypoint", "runtime_options", "server", "start_job_avatar"]
