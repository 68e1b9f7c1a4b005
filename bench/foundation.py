"""The foundation benchmark: the agent worker speaking through the `testcard` avatar, measured
by real subscribers through a real livekit-server on loopback.

Reports, per session count: delivered fps during speech, audio/video offset at the subscriber,
the runtime's own latency from first TTS audio to that audio's frame leaving the runtime, the
end-to-end time from a chat message to its first speech frame at the subscriber, render time,
repeated frames, and CPU and memory of the worker per session. A soak run of continuous speech
reports the offset minute by minute, to show it does not drift.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass

import numpy as np
import psutil

from tests.livekit_server import LiveKitServer
from tests.worker_process import running_worker

from .observer import RoomObserver, estimate_av_offset_ms, observer_token

TEXT = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
    "How vexingly quick daft zebras jump. Sphinx of black quartz, judge my vow."
)


@dataclass
class SessionResult:
    fps: float
    offset_ms: float
    chat_to_first_frame_ms: float
    runtime: dict


async def _join(server: LiveKitServer, agent_name: str) -> RoomObserver:
    room = f"bench-{uuid.uuid4().hex[:8]}"
    observer = RoomObserver(
        server.url,
        observer_token(server.api_key, server.api_secret, room, "viewer", agent_name),
    )
    await observer.connect()
    await observer.wait_for(lambda: len(observer.video) > 30, 90, "avatar video")
    await observer.wait_for(lambda: observer.idle_after_speech(), 60, "the greeting to end")
    return observer


def _runtime_stats(observer: RoomObserver) -> dict:
    participant = observer.participant(observer.video_publisher)
    raw = participant.attributes.get("avatar.stats") if participant else None
    return json.loads(raw) if raw else {}


async def speak_once(observer: RoomObserver, text: str = TEXT) -> SessionResult:
    segment = observer.last_segment() + 1
    start_index = len(observer.video)
    said_at = time.perf_counter()
    await observer.say(text)
    await observer.wait_until_spoken(segment, 120)
    speech = observer.segment_frames(segment)
    window = observer.video[max(0, start_index - 30) :]
    audio = [a for a in observer.audio if a.arrived >= window[0].arrived]
    await asyncio.sleep(2.5)  # the stats attribute is refreshed every 2 s
    return SessionResult(
        fps=observer.fps(speech[0].arrived, speech[-1].arrived),
        offset_ms=estimate_av_offset_ms(window, audio),
        chat_to_first_frame_ms=(speech[0].arrived - said_at) * 1000.0,
        runtime=_runtime_stats(observer),
    )


def _worker_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


async def concurrency(
    server: LiveKitServer, agent_name: str, worker_pid: int, sessions: int
) -> dict:
    observers = await asyncio.gather(*[_join(server, agent_name) for _ in range(sessions)])
    try:
        procs = _worker_tree(worker_pid)
        for proc in procs:
            proc.cpu_percent(None)
        started = time.perf_counter()
        results = await asyncio.gather(*[speak_once(o) for o in observers])
        elapsed = time.perf_counter() - started
        cpu = sum(_safe_cpu(p) for p in procs)
        pss = sum(_safe_pss(p) for p in _worker_tree(worker_pid))
    finally:
        await asyncio.gather(*[o.aclose() for o in observers])
    return {
        "sessions": sessions,
        "fps_min": round(min(r.fps for r in results), 2),
        "fps_mean": round(float(np.mean([r.fps for r in results])), 2),
        "offset_ms": [round(r.offset_ms, 1) for r in results],
        "chat_to_first_frame_ms": round(
            float(np.mean([r.chat_to_first_frame_ms for r in results])), 1
        ),
        "runtime_first_frame_latency_ms": [
            r.runtime.get("first_frame_latency_ms") for r in results
        ],
        "render_ms_p50": [r.runtime.get("render_ms_p50") for r in results],
        "repeated_frames": [r.runtime.get("repeated_frames") for r in results],
        "cpu_percent_per_session": round(cpu / sessions, 1),
        # PSS: shared pages (libraries, the forkserver's preloaded modules) split fairly.
        "pss_mb_per_session": round(pss / sessions / 2**20, 1),
        "measured_s": round(elapsed, 1),
    }


async def soak(server: LiveKitServer, agent_name: str, minutes: float) -> dict:
    """Continuous speech for `minutes`; the offset measured per minute must not wander."""
    observer = await _join(server, agent_name)
    try:
        started = time.perf_counter()
        end = started + minutes * 60
        while time.perf_counter() < end:
            segment = observer.last_segment() + 1
            await observer.say(TEXT)
            await observer.wait_until_spoken(segment, 120)
        per_minute = []
        for minute in range(int(np.ceil(minutes))):
            lo, hi = started + minute * 60, started + (minute + 1) * 60
            video = [v for v in observer.video if lo <= v.arrived < hi]
            audio = [a for a in observer.audio if lo <= a.arrived < hi]
            per_minute.append(round(estimate_av_offset_ms(video, audio), 1))
        speech = observer.speech_frames()
        stats = _runtime_stats(observer)
    finally:
        await observer.aclose()
    return {
        "minutes": minutes,
        "offset_ms_per_minute": per_minute,
        "drift_ms": round(max(per_minute) - min(per_minute), 1),
        "speech_frames": len(speech),
        "delivered_fps": round(observer.fps(started, time.perf_counter()), 2),
        "repeated_frames": stats.get("repeated_frames"),
    }


def _safe_cpu(proc: psutil.Process) -> float:
    try:
        return proc.cpu_percent(None)
    except psutil.Error:
        return 0.0


def _safe_pss(proc: psutil.Process) -> int:
    try:
        return proc.memory_full_info().pss
    except psutil.Error:
        return 0


async def run(server: LiveKitServer, speech, sessions: list[int], soak_minutes: float) -> dict:  # noqa: ANN001
    """The whole foundation benchmark: publishers side by side, sessions, soak."""
    from . import sync_compare

    results: dict = {}
    print("bench: publisher comparison (avatar-agents vs livekit AvatarRunner)", flush=True)
    results["publishers"] = [
        await sync_compare.measure(server, kind, speech)
        for kind in ("avatar-agents", "livekit-agents AvatarRunner")
    ]
    env = {"AVATAR_AGENT_NAME": "bench-agent", "AVATAR_RENDERER": "testcard"}
    with running_worker(server, ["-m", "agent", "dev"], env) as worker:
        results["sessions"] = []
        for count in sessions:
            print(f"bench: {count} concurrent session(s)", flush=True)
            try:
                results["sessions"].append(
                    await concurrency(server, "bench-agent", worker.pid, count)
                )
            except (TimeoutError, ValueError) as error:
                # Keep what was measured; say where the machine ran out.
                print(f"bench: {count} sessions failed: {error}", flush=True)
                results["sessions_failed"] = {"sessions": count, "error": str(error)}
                break
        if soak_minutes > 0:
            print(f"bench: {soak_minutes:g}-minute soak of continuous speech", flush=True)
            results["soak"] = await soak(server, "bench-agent", soak_minutes)
    return results
