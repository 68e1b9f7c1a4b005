"""Frame streaming benchmark (seed 004, `WS /api/v1/stream/ws`, docs/streaming.md).

Everything is real and on loopback: `python -m control_api` as its own process (each streaming
session renders in its own worker process under it), clients speaking the seed's protocol over
a real WebSocket, and an aiortc viewer for the WebRTC path (bench/stream_webrtc.py). The audio is
piper speech, resampled to the seed's 16 kHz int16 PCM and cut to `SPEECH_S` seconds; the
portrait is the bundled one; 512x512 at 25 fps (Ditto's rate).

* Throughput: the whole audio sent at once (faster than real time), then `stop`; frames per
  second = frames / (time from sending the first chunk to the last frame arriving).
* Latency: audio sent in real time, 40 ms chunks every 40 ms (one frame's window each); for
  frame k, its arrival minus the wall time at which the chunk holding the end of frame k's
  window was sent (so the renderer's look-ahead, rendering, JPEG, base64 and the socket are all
  in it). Median, p95, max, and the frame rate kept while the audio played.
* WebRTC: `bench_stream_webrtc` (fps and audio/video offset at an aiortc viewer over WHEP).
* Sessions per machine: 1, 2 and 3 concurrent real-time meshwarp sessions
  (AVATAR_STREAM_MAX_SESSIONS raised to 3), each one's fps kept and latency, and the CPU of the
  service and its worker processes (psutil; 100% = one core).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil

from renderers.bundled import DEFAULT_PORTRAIT
from tests.control_api_process import ControlApi, running_control_api
from tests.livekit_server import LiveKitServer

from .stream_webrtc import bench_stream_webrtc

RATE = 16000
SIZE = 512
FPS = 25.0
SPEECH_S = 6.0
CHUNK_S = 0.04
"""Real-time chunks: one frame's window at 25 fps."""
BURST_CHUNK_S = 1.0
"""Chunks of the faster-than-real-time run (AVATAR_STREAM_MAX_CHUNK_S allows 10 s)."""
RENDERERS = ("testcard", "meshwarp")
SESSION_COUNTS = (1, 2, 3)
WEBRTC_SECONDS = 5.0
TEXT = (
    "Hello there. This is a test of frame streaming, spoken by piper for about six seconds, "
    "so that every frame has speech."
)

SEED = {
    "source": "seeds/004 (Ditto talking-head API), Performance",
    "machine": "NVIDIA RTX 3090",
    "fps": {"PyTorch": "~15-20", "TensorRT": "~40-50"},
    "frame_latency_ms": {"PyTorch": "40-60", "TensorRT": "20-25"},
    "websocket_message_latency_ms": "<10",
    "sessions": "1-2 concurrent per GPU",
}


def speech_pcm() -> tuple[bytes, str]:
    """`SPEECH_S` seconds of speech as 16 kHz int16 PCM, and where it came from: piper
    (resampled from its 22.05 kHz), or syllable-like audio if piper is not available."""
    try:
        from .sync_compare import synthesize

        frames = synthesize(TEXT)
        rate = frames[0].sample_rate
        samples = np.concatenate(
            [
                np.frombuffer(bytes(f.data), dtype=np.int16)
                .reshape(-1, f.num_channels)
                .mean(axis=1)
                for f in frames
            ]
        )
        # linear interpolation onto the 16 kHz grid (speech has little above 8 kHz)
        grid = np.arange(int(len(samples) * RATE / rate)) * rate / RATE
        resampled = np.interp(grid, np.arange(len(samples)), samples)
        if len(resampled) < SPEECH_S * RATE:
            raise ValueError(f"piper spoke only {len(resampled) / RATE:.1f} s")
        pcm = np.clip(resampled[: int(SPEECH_S * RATE)], -32768, 32767).astype("<i2")
        return pcm.tobytes(), f"piper ({rate} Hz, resampled to {RATE})"
    except Exception as error:  # noqa: BLE001 - fall back to synthetic speech
        from tests.media import speech_like_audio

        with tempfile.TemporaryDirectory() as folder:
            samples = speech_like_audio(Path(folder) / "speech.wav", SPEECH_S, RATE)
        return (samples * 32767).astype("<i2").tobytes(), f"syllable-like audio ({error})"


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    array = np.array(values)
    return {
        "p50": round(float(np.percentile(array, 50)), 1),
        "p95": round(float(np.percentile(array, 95)), 1),
        "max": round(float(array.max()), 1),
    }


class StreamClient:
    """One streaming session over the WebSocket: init, audio, stop; every frame's arrival."""

    def __init__(self, api: ControlApi, http: aiohttp.ClientSession, renderer: str) -> None:
        self.api = api
        self.http = http
        self.renderer = renderer
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.arrivals: dict[int, float] = {}
        self.progress: list[dict[str, Any]] = []
        self.complete: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.sent: list[float] = []
        """perf_counter at which each audio chunk was handed to the socket."""
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> float:
        """Connect and init; the seconds the init took (the worker starting, the portrait)."""
        url = self.api.base_url.replace("http", "ws", 1) + "/api/v1/stream/ws"
        self.ws = await self.http.ws_connect(url, headers=self.api.headers(), max_msg_size=0)
        await self._expect("status")
        portrait = base64.b64encode(DEFAULT_PORTRAIT.read_bytes()).decode()
        config = {"renderer": self.renderer, "width": SIZE, "height": SIZE, "fps": FPS}
        started = time.perf_counter()
        await self.ws.send_json({"type": "init", "source": portrait, "config": config})
        await self._expect("status", timeout=120)
        took = time.perf_counter() - started
        self._reader = asyncio.create_task(self._read())
        return took

    async def _expect(self, kind: str, timeout: float = 30.0) -> dict[str, Any]:
        assert self.ws is not None
        message = await self.ws.receive(timeout=timeout)
        if message.type != aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"stream socket closed waiting for {kind}: {message}")
        data = json.loads(message.data)
        if data.get("type") != kind:
            raise RuntimeError(f"expected {kind}, got {data}")
        return dict(data)

    async def _read(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            now = time.perf_counter()
            data = json.loads(message.data)
            kind = data.get("type")
            if kind == "frame":
                self.arrivals.setdefault(int(data["frame_id"]), now)
            elif kind == "progress":
                self.progress.append(data)
            elif kind == "complete":
                self.complete = data
            elif kind == "error":
                self.error = data

    async def send_audio(self, pcm: bytes, chunk_s: float, paced: bool) -> None:
        assert self.ws is not None
        step = int(RATE * chunk_s) * 2
        started = time.perf_counter()
        for offset in range(0, len(pcm), step):
            if paced:
                due = started + offset / 2 / RATE
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            message = json.dumps(
                {
                    "type": "audio_chunk",
                    "data": base64.b64encode(pcm[offset : offset + step]).decode(),
                    "timestamp": offset / 2 / RATE,
                }
            )
            self.sent.append(time.perf_counter())
            await self.ws.send_str(message)

    async def finish(self, timeout: float = 120.0) -> None:
        """`stop`, then every frame until `complete` and the socket closing."""
        assert self.ws is not None and self._reader is not None
        await self.ws.send_json({"type": "stop"})
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        finally:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            await self.ws.close()
        if self.error is not None:
            raise RuntimeError(f"stream session error: {self.error}")
        if self.complete is None:
            raise RuntimeError("stream session ended without `complete`")

    def latencies_ms(self, chunk_s: float, audio_samples: int) -> list[float]:
        """Per frame whose window is all real audio: arrival minus when the chunk holding the
        end of its window was sent."""
        chunk = int(RATE * chunk_s)
        out = []
        for k, arrived in sorted(self.arrivals.items()):
            end = round((k + 1) * RATE / FPS)  # the window's end, in samples
            if end > audio_samples:
                continue
            index = math.ceil(end / chunk) - 1
            out.append((arrived - self.sent[index]) * 1000)
        return out

    def fps_kept(self) -> float:
        times = sorted(self.arrivals.values())
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0

    def max_gap_ms(self) -> float:
        times = sorted(self.arrivals.values())
        return max((b - a) * 1000 for a, b in zip(times, times[1:], strict=False)) if times else 0.0


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            out[proc.pid] = times.user + times.system
    return out


class CpuMeter:
    """CPU of the service process and of its children (the session workers) over a window."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.procs = _tree(pid)
        self.before = _cpu_seconds(self.procs)
        self.started = time.perf_counter()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.started
        after = _cpu_seconds(self.procs)
        service = workers = 0.0
        for pid, seconds in after.items():
            used = seconds - self.before.get(pid, seconds)
            if pid == self.pid:
                service += used
            else:
                workers += used
        return {
            "service_percent": round(100 * service / wall, 1),
            "workers_percent": round(100 * workers / wall, 1),
            "total_percent": round(100 * (service + workers) / wall, 1),
        }


async def _wait_idle(api: ControlApi, http: aiohttp.ClientSession, timeout: float = 20.0) -> None:
    """Until the service has no streaming session left (a slot frees when its worker ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with http.get(api.base_url + "/api/v1/stream/stats", headers=api.headers()) as r:
            if (await r.json())["sessions_active"] == 0:
                return
        await asyncio.sleep(0.1)


async def throughput(api: ControlApi, http: aiohttp.ClientSession, renderer: str, pcm: bytes):  # noqa: ANN201
    client = StreamClient(api, http, renderer)
    init_s = await client.open()
    await client.send_audio(pcm, BURST_CHUNK_S, paced=False)
    await client.finish()
    assert client.complete is not None
    first = client.sent[0]
    last = max(client.arrivals.values())
    frames = len(client.arrivals)
    return {
        "renderer": renderer,
        "frames": frames,
        "total_frames": client.complete["total_frames"],
        "dropped": client.complete.get("dropped", 0),
        "seconds": round(last - first, 3),
        "fps": round(frames / (last - first), 1),
        "first_frame_ms": round((min(client.arrivals.values()) - first) * 1000, 1),
        "init_s": round(init_s, 2),
    }


async def realtime(
    api: ControlApi, http: aiohttp.ClientSession, renderer: str, pcm: bytes, sessions: int = 1
) -> dict[str, Any]:
    """`sessions` concurrent sessions, each fed the speech in real time in 40 ms chunks."""
    clients = [StreamClient(api, http, renderer) for _ in range(sessions)]
    await asyncio.gather(*(c.open() for c in clients))
    await asyncio.sleep(0.5)  # the workers settle after loading the portrait
    meter = CpuMeter(api.pid)
    await asyncio.gather(*(c.send_audio(pcm, CHUNK_S, paced=True) for c in clients))
    # the last frames (a window plus the render time behind the audio)
    deadline = time.perf_counter() + 5.0
    expected = int(len(pcm) // 2 * FPS / RATE)
    while time.perf_counter() < deadline and any(len(c.arrivals) < expected for c in clients):
        await asyncio.sleep(0.01)
    cpu = meter.stop()
    await asyncio.gather(*(c.finish() for c in clients))
    per = []
    for client in clients:
        latency = client.latencies_ms(CHUNK_S, len(pcm) // 2)
        per.append(
            {
                "frames": len(client.arrivals),
                "dropped": (client.complete or {}).get("dropped", 0),
                "fps": round(client.fps_kept(), 2),
                "max_gap_ms": round(client.max_gap_ms(), 1),
                "latency_ms": _stats(latency),
                "service_latency_ms": [p.get("latency_ms") for p in client.progress],
            }
        )
    all_latency = [v for client in clients for v in client.latencies_ms(CHUNK_S, len(pcm) // 2)]
    return {
        "renderer": renderer,
        "sessions": sessions,
        "fps_min": min(p["fps"] for p in per),
        "latency_ms": _stats(all_latency),
        "max_gap_ms": max(p["max_gap_ms"] for p in per),
        "dropped": sum(p["dropped"] for p in per),
        "cpu": cpu,
        "cpu_percent_per_session": round(cpu["total_percent"] / sessions, 1),
        "sustained": all(p["fps"] >= FPS * 0.98 and p["frames"] >= expected for p in per),
        "per_session": per,
    }


async def run(server: LiveKitServer) -> dict:
    print("bench: streaming: synthesizing the speech with piper", flush=True)
    pcm, audio_source = await asyncio.to_thread(speech_pcm)
    env = {
        "AVATAR_STREAM_RENDERER": "meshwarp",
        "AVATAR_STREAM_RENDERERS": "testcard",
        "AVATAR_STREAM_MAX_SESSIONS": str(max(SESSION_COUNTS)),
    }
    results: dict[str, Any] = {
        "audio": {"source": audio_source, "seconds": len(pcm) / 2 / RATE},
        "size": [SIZE, SIZE],
        "fps_target": FPS,
        "seed": SEED,
        "throughput": [],
        "latency": [],
        "webrtc": [],
        "sessions": [],
    }
    with running_control_api(server, env, extra_args=["--no-access-log"]) as api:
        async with aiohttp.ClientSession() as http:
            for renderer in RENDERERS:
                print(f"bench: streaming {renderer}: audio all at once", flush=True)
                results["throughput"].append(await throughput(api, http, renderer, pcm))
                await _wait_idle(api, http)
            for renderer in RENDERERS:
                print(f"bench: streaming {renderer}: audio in real time", flush=True)
                results["latency"].append(await realtime(api, http, renderer, pcm))
                await _wait_idle(api, http)
            for renderer in RENDERERS:
                print(f"bench: streaming {renderer}: WebRTC viewer", flush=True)
                try:
                    row = await bench_stream_webrtc(
                        api.base_url, api.api_key, renderer=renderer, seconds=WEBRTC_SECONDS
                    )
                except Exception as error:  # noqa: BLE001 - report it, measure the rest
                    row = {"renderer": renderer, "error": f"{type(error).__name__}: {error}"}
                results["webrtc"].append(row)
                await _wait_idle(api, http)
            for count in SESSION_COUNTS:
                print(f"bench: streaming meshwarp: {count} real-time session(s)", flush=True)
                try:
                    row = await realtime(api, http, "meshwarp", pcm, sessions=count)
                except Exception as error:  # noqa: BLE001
                    row = {"sessions": count, "error": f"{type(error).__name__}: {error}"}
                results["sessions"].append(row)
                await _wait_idle(api, http)
    return results
