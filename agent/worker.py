"""The agent worker: one AgentSession per room, speaking through the avatar.

Run it with `python -m agent dev|start|console|connect` (the livekit-agents CLI), or let the
LiveKit CLI drive it: `lk agent dev agent/worker.py`. `server` is the AgentServer both find.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import cast

from livekit import rtc
from livekit.agents import NOT_GIVEN, AgentServer, AgentSession, JobContext, JobProcess
from livekit.agents.types import ATTRIBUTE_AGENT_NAME
from livekit.agents.voice.room_io import RoomOptions, TextInputOptions
from livekit.agents.worker import ServerEnvOption

from avatar_runtime import AvatarSession, publish_captions_unlinked
from avatar_runtime.piper_tts import PiperTTS
from avatar_runtime.remote import PUBLISH_ON_BEHALF
from avatar_runtime.session import Mode

from .assistant import AvatarAssistant, speak_chat_text
from .avatar_source import job_avatar_source, requested_avatar_id, with_default_avatar
from .capacity import session_load
from .config import Settings
from .dead_jobs import remove_participants_of_dead_jobs
from .lost_room import leave_when_room_lost
from .providers import describe, select_providers
from .session_rpc import READY_ATTRIBUTE, register_session_rpc

logger = logging.getLogger("avatar-agent")


def prewarm(proc: JobProcess) -> None:
    """Runs once per job process before any job: load the local voice so the greeting is quick."""
    tts = PiperTTS()
    tts.prewarm(block=True)
    proc.userdata["piper"] = tts


# Explicit dispatch by name, read at import because the decorator needs it.
# The load threshold stays livekit-agents' own (0.7 in production, none in development):
# session_load reaches it at AVATAR_WORKER_SESSIONS sessions.
# One job process kept started and prewarmed in development too (livekit-agents keeps none in
# dev mode, which `make demo` runs): without it every session waited 1.4-2.9 s for a process to
# start and load the voice before the agent could join. Production keeps livekit's default.
_IDLE_PROCESSES = ServerEnvOption(
    dev_default=1, prod_default=AgentServer._default_num_idle_processes.prod_default
)
server = AgentServer(
    setup_fnc=prewarm,
    initialize_process_timeout=60.0,
    load_fnc=session_load,
    num_idle_processes=_IDLE_PROCESSES,
)
remove_participants_of_dead_jobs(server)


@server.rtc_session(agent_name=os.environ.get("AVATAR_AGENT_NAME", "avatar-agent"))
async def entrypoint(ctx: JobContext) -> None:
    settings = Settings.from_env()
    await ctx.connect()
    if not ctx.is_fake_job():
        leave_when_room_lost(ctx)
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

    session: AgentSession[None] = AgentSession(
        stt=providers.stt if providers.stt is not None else NOT_GIVEN,
        llm=providers.llm if providers.llm is not None else NOT_GIVEN,
        tts=providers.tts,
        vad=_vad(ctx) if providers.stt is not None else None,
        turn_handling={
            # An avatar's audio output cannot pause, so a false interruption can't be resumed.
            "interruption": {"resume_false_interruption": False},
            **({} if providers.stt is not None else {"turn_detection": None}),
        },
    )

    # `console` (a fake job): the terminal is the speaker, there is no room to show a face in.
    avatar = None if ctx.is_fake_job() else await start_job_avatar(ctx, session, settings)

    text_input = (
        TextInputOptions()
        if providers.llm is not None
        else TextInputOptions(text_input_cb=speak_chat_text)
    )
    await session.start(
        agent=AvatarAssistant(
            greeting=settings.greeting,
            has_llm=providers.llm is not None,
            # With an LLM, the face follows the conversation: it picks its own expression.
            tools=avatar.tools() if avatar is not None and providers.llm is not None else [],
        ),
        room=ctx.room,
        room_options=RoomOptions(
            text_input=text_input,
            audio_input=providers.stt is not None,
            # The avatar publishes the audio, in sync with its video.
            audio_output=ctx.is_fake_job(),
        ),
    )
    if not ctx.is_fake_job():
        # Captions from the first word: a viewer without a microphone is announced to us
        # seconds after joining (see avatar_runtime/captions.py).
        publish_captions_unlinked(session, ctx.room)
        # `agent.say` / `agent.interrupt`, how the control API makes this session speak.
        register_session_rpc(ctx.room.local_participant, session)
        await ctx.room.local_participant.set_attributes({READY_ATTRIBUTE: "true"})


async def start_job_avatar(
    ctx: JobContext, session: AgentSession, settings: Settings
) -> AvatarSession:
    """Give `session` its face, the `avatar_id` of the job's metadata (see avatar_source.py):
    in-process, or through a dispatched avatar worker (AVATAR_MODE=remote), which resolves the
    id on its own machine. In-process, a portrait the renderer cannot load is logged and
    replaced by the configured source, so a bad catalog entry does not end the session."""

    async def start(avatar: str | Path | None) -> AvatarSession:
        avatar_session = AvatarSession(
            renderer=settings.renderer,
            avatar=avatar,
            width=settings.width,
            height=settings.height,
            fps=settings.fps,
            audio_sample_rate=settings.audio_sample_rate,
            mode=cast(Mode, settings.avatar_mode),  # validated by Settings
            avatar_worker_name=settings.avatar_worker_name,
            render_timeout_s=settings.render_timeout_s,
        )
        await avatar_session.start(session, room=ctx.room)
        return avatar_session

    if settings.avatar_mode == "remote":
        return await start(requested_avatar_id(ctx.job.metadata))
    source = job_avatar_source(ctx.job.metadata, settings.source)
    return await with_default_avatar(start, source, settings.source)


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


def _vad(ctx: JobContext):  # noqa: ANN202 - silero's type lives in an optional plugin
    from livekit.plugins import silero

    if "vad" not in ctx.proc.userdata:
        ctx.proc.userdata["vad"] = silero.VAD.load()
    return ctx.proc.userdata["vad"]


__all__ = ["entrypoint", "server", "start_job_avatar"]
