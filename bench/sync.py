"""Lip sync and time to first audio as an independent viewer measures them (`--only sync`).

The agent worker (`python -m agent dev`, meshwarp, the local piper voice) serves each session
as a user's room; one `bench.viewer.Viewer` per session joins, has the agent say sentences
(the web page's chat), and measures from the received media alone: the lag of the mouth
behind the voice per sentence and per session, time from `say` to the first audible audio,
and the receiver's jitter buffers. Sessions run at once to load the machine.

As a reference for what the renderer itself does, the same estimator runs on an offline MP4
of the same renderer (no transport: each picture exactly on its own audio), so a constant
lead or lag of the face's motion is not mistaken for a transport offset.

    python -m bench.sync --sessions 1,3 [--modes off,on] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from livekit import api

from tests import livekit_server
from tests.livekit_server import LiveKitServer, running_livekit_server
from tests.worker_process import running_worker

from .report import emit_json
from .viewer import AudioChunk, Picture, Viewer, estimate_lag

AGENT_NAME = "sync-agent"
SENTENCES = (
    "Good morning, and welcome back. Today we will look at how the heart moves blood "
    "through the body.",
    "Please sit back and relax. Breathe in slowly through your nose, hold it for a moment, "
    "and then let it out.",
    "The results came back this afternoon, and everything looks normal, so there is "
    "nothing to worry about.",
)
SHORT = "Hello there, this sentence has about sixty characters."
LONG = (
    "Thank you for coming in today; before we start, I would like to go over a few things "
    "about your visit, what we will check, how long it usually takes, and what you can do "
    "afterwards if anything at all feels different from what we talked about today."
)


def token(server: LiveKitServer, room: str, identity: str, *, sync_streams: bool) -> str:
    return (
        api.AccessToken(server.api_key, server.api_secret)
        .with_identity(identity)
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .with_room_config(
            api.RoomConfiguration(
                agents=[api.RoomAgentDispatch(agent_name=AGENT_NAME)], sync_streams=sync_streams
            )
        )
        .to_jwt()
    )


async def _join(server: LiveKitServer, *, sync_streams: bool) -> Viewer:
    room = f"sync-{uuid.uuid4().hex[:8]}"
    viewer = Viewer(server.url, token(server, room, "viewer", sync_streams=sync_streams))
    await viewer.connect()
    await viewer.wait_for(lambda: viewer.mouth is not None, 120, "the avatar's face")
    await viewer.wait_for(lambda: viewer.quiet_for(1.0), 60, "the greeting to end")
    return viewer


async def _speak(viewer: Viewer, text: str) -> dict[str, Any]:
    said = await viewer.say(text)
    await viewer.wait_for(
        lambda: (
            bool(viewer.speech_spans(min_s=0.5)) and viewer.speech_spans(min_s=0.5)[-1][0] > said
        ),
        60,
        "the sentence to be heard",
    )
    await viewer.wait_for(lambda: viewer.quiet_for(1.5), 60, "the sentence to end")
    spans = [s for s in viewer.speech_spans(min_s=0.5) if s[0] > said]
    start, end = spans[0][0], spans[-1][1]
    heard = viewer.first_loud_after(said)
    result: dict[str, Any] = {
        "chars": len(text),
        "say_to_first_audio_ms": round(((heard or said) - said) * 1000.0, 1),
        "speech_s": round(end - start, 2),
        "audio_jitter_buffer_ms": _spread(viewer.jitter_buffer_ms("audio", start, end + 1.0)),
        "video_jitter_buffer_ms": _spread(viewer.jitter_buffer_ms("video", start, end + 1.0)),
    }
    try:
        lag = viewer.lag(start - 0.3, end + 0.3)
        result.update(lag_ms=lag.lag_ms, correlation=lag.correlation)
    except ValueError as error:
        result.update(lag_ms=None, error=str(error))
    try:
        result["lag_ms_by_arrival"] = viewer.lag(start - 0.3, end + 0.3, clock="arrived").lag_ms
    except ValueError:
        result["lag_ms_by_arrival"] = None
    result["window"] = (start - 0.3, end + 0.3)
    return result


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "min": round(min(values), 1),
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
    }


async def _session(viewer: Viewer, texts: list[str]) -> dict[str, Any]:
    sentences = []
    for text in texts:
        sentences.append(await _speak(viewer, text))
        await asyncio.sleep(0.5)
    windows = [s.pop("window") for s in sentences]
    pictures = [p for p in viewer.video if any(a <= p.shown <= b for a, b in windows)]
    try:
        whole = estimate_lag(pictures, viewer.audio)
        session_lag: float | None = whole.lag_ms
    except ValueError:
        session_lag = None
    streams = sorted({s for sample in viewer.stats for s in sample["streams"]})
    srs = {
        kind: max((s["sender_reports"] for s in viewer.stats if s["kind"] == kind), default=0)
        for kind in ("audio", "video")
    }
    return {
        "lag_ms": session_lag,
        "sentences": sentences,
        "receiver_streams": streams,
        "sender_reports_received": srs,
        "audio_jitter_buffer_ms": _spread(viewer.jitter_buffer_ms("audio", 0, float("inf"))),
        "video_jitter_buffer_ms": _spread(viewer.jitter_buffer_ms("video", 0, float("inf"))),
    }


async def measure(
    server: LiveKitServer, sessions: int, *, sync_streams: bool, texts: list[str]
) -> dict[str, Any]:
    viewers = await asyncio.gather(
        *[_join(server, sync_streams=sync_streams) for _ in range(sessions)]
    )
    try:
        started = time.perf_counter()
        results = await asyncio.gather(*[_session(v, texts) for v in viewers])
    finally:
        await asyncio.gather(*[v.aclose() for v in viewers], return_exceptions=True)
    lags = [s["lag_ms"] for r in results for s in r["sentences"] if s["lag_ms"] is not None]
    return {
        "sessions": sessions,
        "sync_streams": sync_streams,
        "measured_s": round(time.perf_counter() - started, 1),
        "per_session": results,
        "session_lag_ms": [r["lag_ms"] for r in results],
        "sentence_lag_ms_min": min(lags, default=None),
        "sentence_lag_ms_max": max(lags, default=None),
    }


def content_reference(texts: list[str]) -> dict[str, Any]:
    """The same estimator on an offline meshwarp MP4 of the same speech: each picture sits
    exactly on its own audio, so this is the renderer's own lead or lag of the mouth."""
    import tempfile
    import wave

    import av

    from avatar_runtime.offline import render_talking_video

    from .sync_compare import synthesize

    frames = [f for text in texts for f in synthesize(text)]
    pcm = b"".join(bytes(f.data) for f in frames)
    rate = frames[0].sample_rate
    with tempfile.TemporaryDirectory() as tmp:
        wav, mp4 = Path(tmp) / "speech.wav", Path(tmp) / "talk.mp4"
        with wave.open(str(wav), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(pcm)
        render_talking_video(audio=wav, out=mp4, renderer="meshwarp")
        with av.open(str(mp4)) as container:
            rgb = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    from .viewer import AUDIO_RATE, locate_mouth

    box = locate_mouth(rgb[0])
    if box is None:
        raise RuntimeError("no face in the offline render")
    luma_weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    pictures = []
    for index, image in enumerate(rgb):
        region = image[box.y0 : box.y1, box.x0 : box.x1].astype(np.float32) @ luma_weights
        dark = float(np.count_nonzero(region < box.dark_threshold)) / region.size
        pictures.append(Picture(index / 30.0, 0, index / 30.0, dark))
    # The audio as a receiver would get it: 10 ms chunks, each "arriving" as it ends.
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    step = rate // 100
    audio = []
    for i in range(0, len(samples) - step + 1, step):
        chunk = samples[i : i + step]
        rms = float(np.sqrt(np.mean(chunk**2))) / 32768.0
        audio.append(
            AudioChunk((i + step) / rate, AUDIO_RATE // 100, 20 * np.log10(max(rms, 1e-6)))
        )
    lag = estimate_lag(pictures, audio)
    return {"lag_ms": lag.lag_ms, "correlation": lag.correlation, "pictures": lag.pictures}


async def tts_first_audio(texts: dict[str, str], runs: int = 5) -> dict[str, Any]:
    """`say` to the first audio frame out of the local voice alone (PiperTTS's stream, text
    pushed whole as `session.say` does), per text, every run listed."""
    from avatar_runtime.piper_tts import PiperTTS

    voice = PiperTTS()
    await asyncio.to_thread(voice.prewarm, block=True)
    out: dict[str, Any] = {}
    try:
        for label, text in texts.items():
            times = []
            for _ in range(runs):
                stream = voice.stream()
                start = time.perf_counter()
                stream.push_text(text)
                stream.end_input()
                async with stream:
                    async for _event in stream:
                        times.append(round((time.perf_counter() - start) * 1000.0, 1))
                        break
            out[label] = {"chars": len(text), "ms": times, "median_ms": statistics.median(times)}
    finally:
        await voice.aclose()
    return out


async def run(
    server: LiveKitServer | None,
    session_counts: list[int],
    *,
    modes: tuple[bool, ...] = (False, True),
    repeats: int = 1,
    texts: list[str] | None = None,
    startup_trials: int = 3,
) -> dict[str, Any]:
    """Every session count in rooms without `sync_streams` (LiveKit's default, what users had
    before) and with it, each mode on a livekit-server of its own (`server` is not used: the
    room default is server configuration); then time to first audio and the startup
    breakdown."""
    from . import sync_startup

    texts = list(texts or [SHORT, *SENTENCES, LONG])
    # In a thread: it synthesises with asyncio.run of its own.
    reference = await asyncio.to_thread(content_reference, list(SENTENCES))
    results: dict[str, Any] = {"content_reference": reference, "runs": []}
    env = {"AVATAR_AGENT_NAME": AGENT_NAME, "AVATAR_RENDERER": "meshwarp"}
    for synced in modes:
        with _server(synced) as own, running_worker(own, ["-m", "agent", "dev"], env):
            for count in session_counts:
                for _ in range(repeats):
                    print(f"bench: sync, {count} session(s), sync_streams={synced}", flush=True)
                    results["runs"].append(
                        await measure(own, count, sync_streams=synced, texts=texts)
                    )
    print("bench: sync, time to first audio out of piper", flush=True)
    results["tts_first_audio"] = await tts_first_audio({"60 chars": SHORT, "250 chars": LONG})
    if startup_trials:
        with _server(True) as own:
            results["startup"] = await sync_startup.run(own, startup_trials)
    return results


@contextlib.contextmanager
def _server(sync_streams: bool) -> Iterator[LiveKitServer]:
    """A livekit-server whose rooms have `sync_streams` as asked (the tests' server has it
    on, as livekit.yaml does)."""
    original = livekit_server._config_yaml

    def config(*args: Any) -> str:
        text = original(*args)
        return text if sync_streams else text.replace("room:\n  sync_streams: true\n", "")

    livekit_server._config_yaml = config  # type: ignore[assignment]
    try:
        with running_livekit_server() as server:
            livekit_server._config_yaml = original
            yield server
    finally:
        livekit_server._config_yaml = original


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sync")
    parser.add_argument("--sessions", default="1,3")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--modes", default="off,on", help="rooms' sync_streams: off,on")
    parser.add_argument("--startup-trials", type=int, default=3)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    counts = [int(n) for n in args.sessions.split(",") if n]
    modes = tuple(m.strip() == "on" for m in args.modes.split(",") if m.strip())
    results = asyncio.run(
        run(None, counts, modes=modes, repeats=args.repeats, startup_trials=args.startup_trials)
    )
    emit_json(results, args.out)


if __name__ == "__main__":
    main()
