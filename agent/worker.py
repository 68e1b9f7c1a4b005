"""The agent worker: one AgentSession per room, speaking through the avatar.

Run it with `python -m agent dev|start|console|connect` (the livekit-agents CLI), or let the
LiveKit CLI drive it: `lk agent dev agent/worker.py`. `server` is the AgentServer both find.
"""

from __future__ import annotations

import json
import logging
import os

from livekit import api, rtc
from livekit.agents import AgentServer, AgentSession, JobContext, JobProcess
from livekit.agents.voice.avatar import DataStreamAudioOutput, QueueAudioOutput
from livekit.agents.voice.room_io import RoomOptions, TextInputOptions

from avatar_runtime import RuntimeOptions, start_avatar

from .assistant import AvatarAssistant, speak_chat_text
from .config import Settings
from .providers import describe, select_providers
from .tts_piper import PiperTTS

logger = logging.getLogger("avatar-agent")

PUBLISH_ON_BEHALF = "lk.publish_on_behalf"


def prewarm(proc: JobProcess) -> None:
    """Runs once per job process before any job: load the local voice so the greeting is quick."""
    tts = PiperTTS()
    tts.prewarm(block=True)
    proc.userdata["piper"] = tts


# Explicit dispatch by name, read at import because the decorator needs it.
server = AgentServer(setup_fnc=prewarm, initialize_process_timeout=60.0)


@server.rtc_session(agent_name=os.environ.get("AVATAR_AGENT_NAME", "avatar-agent"))
async def entrypoint(ctx: JobContext) -> None:
    settings = Settings.from_env()
    await ctx.connect()
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


async def _in_process_avatar_output(
    ctx: JobContext, settings: Settings, session: AgentSession
) -> QueueAudioOutput:
    """The avatar runs inside this job and publishes as the agent participant itself, which
    also answers the avatar's control RPCs: `avatar.interrupt` interrupts the whole session
    (speech, LLM and TTS), not only the picture."""
    audio = QueueAudioOutput(wait_playback_start=True)
    avatar = await start_avatar(
        ctx.room,
        audio,
        renderer_name=settings.renderer,
        source=settings.source,
        options=runtime_options(settings),
        on_interrupt=session.interrupt,
    )
    ctx.add_shutdown_callback(avatar.aclose)
    return audio


async def _remote_avatar_output(ctx: JobContext, settings: Settings) -> DataStreamAudioOutput:
    """Dispatch an avatar worker (possibly on a GPU machine) and stream our speech to it.

    The avatar worker answers the control RPCs; its `avatar.interrupt` stops the avatar's
    playback only (the agent hears of it as an interrupted playback), not this session."""
    agent_identity = ctx.room.local_participant.identity
    avatar_identity = f"{agent_identity}-avatar"
    await ctx.api.agent_dispatch.create_dispatch(
        api.CreateAgentDispatchRequest(
            agent_name=settings.avatar_worker_name,
            room=ctx.room.name,
            metadata=json.dumps(
                {"agent_identity": agent_identity, "avatar_identity": avatar_identity}
            ),
        )
    )
    return DataStreamAudioOutput(
        ctx.room,
        destination_identity=avatar_identity,
        wait_remote_track=rtc.TrackKind.KIND_VIDEO,
        wait_playback_start=True,
    )


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


__all__ = ["PUBLISH_ON_BEHALF", "entrypoint", "runtime_options", "server"]
