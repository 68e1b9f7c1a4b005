"""A streaming session (seed 004) watched over WebRTC by an aiortc client, and measured.

`WebRtcObserver` is a viewer: it offers to receive one video and one audio track, hands its
offer to an `exchange` (WHEP over HTTP, `whep_exchange`, or anything else that returns the
answer), and keeps what arrives as `bench.observer`'s samples: each picture's testcard stamp
and each audio packet's loudness, with arrival times. Delivered fps and the audio/video offset
then come from the very functions the LiveKit bench uses (`estimate_av_offset_ms`).

Arrival times are when a frame's first RTP packet reached the client, not when aiortc hands
the decoded frame out: aiortc's receiver holds audio four packets (80 ms) and each picture
until the next one starts, and plays nothing in sync, so its output times would measure
aiortc rather than the stream. A receiver that lip-syncs (a browser) lines the tracks up by
the sender's RTCP reports, which say when each RTP timestamp left the sender; the packets'
arrival times on loopback are that timeline. An audio packet's samples are taken to end one
packet after its arrival (`estimate_av_offset_ms` takes a chunk's samples to end at its arrival
time; a packet leaves at the start of its 20 ms).

`measure_stream_webrtc(...)` runs one viewer against a live service's session while a caller's
`feed` streams audio into it, and returns fps, offset and counts as a dict;
`bench_stream_webrtc(base_url, api_key)` does it all: opens the session over the WebSocket,
feeds it speech in real time, measures, stops it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from control_api.streaming.frames import AUDIO_RATE as STREAM_AUDIO_RATE
from renderers.bundled import DEFAULT_PORTRAIT
from renderers.testcard import read_stamp

from .observer import AUDIO_RATE, AudioSample, VideoSample, estimate_av_offset_ms, thumbnail

Exchange = Callable[[str], Awaitable[str]]
"""Takes the offer SDP, returns the answer SDP."""


@dataclass
class WebRtcObserver:
    decode_stamps: bool = True
    kinds: tuple[str, ...] = ("video", "audio")
    """The tracks to ask for."""
    region: tuple[float, float, float, float] = (0.0, 0.25, 1.0, 1.0)
    """Part of the picture the thumbnails watch (as RoomObserver.region)."""
    pc: RTCPeerConnection = field(
        default_factory=lambda: RTCPeerConnection(RTCConfiguration(iceServers=[]))
    )
    video: list[VideoSample] = field(default_factory=list)
    audio: list[AudioSample] = field(default_factory=list)
    last_picture: np.ndarray | None = None
    """The newest picture received, RGB."""
    audio_rate: int = 0
    """Sample rate of the received audio (48000 for Opus)."""
    _arrivals: dict[str, dict[int, float]] = field(default_factory=dict)
    _origins: dict[str, int] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def connect(self, exchange: Exchange) -> None:
        """Negotiate (no trickle: the offer carries every candidate) and start receiving."""
        for kind in self.kinds:
            transceiver = self.pc.addTransceiver(kind, direction="recvonly")
            self._time_packets(transceiver.receiver, kind)
        self.pc.on("track", self._on_track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        local = self.pc.localDescription
        assert local is not None
        answer = await exchange(local.sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pc.close()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
            await asyncio.sleep(0.05)

    # -- receiving ---------------------------------------------------------------------------

    def _time_packets(self, receiver: RTCRtpReceiver, kind: str) -> None:
        """Note when the first packet of each RTP timestamp arrives. (aiortc has no public
        hook for it; this wraps the receiver's packet handler.)"""
        arrivals = self._arrivals.setdefault(kind, {})
        handle = receiver._handle_rtp_packet

        async def timed(packet: Any, arrival_time_ms: int) -> None:
            self._origins.setdefault(kind, packet.timestamp)
            arrivals.setdefault(packet.timestamp, time.perf_counter())
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = timed  # type: ignore[method-assign]

    def _arrived(self, kind: str, pts: int | None) -> float:
        """When the frame with this pts (aiortc: RTP timestamp minus the first one) arrived."""
        now = time.perf_counter()
        origin = self._origins.get(kind)
        if pts is None or origin is None:
            return now
        return self._arrivals[kind].pop((origin + pts) & 0xFFFFFFFF, now)

    def _on_track(self, track: MediaStreamTrack) -> None:
        read = self._read_video if track.kind == "video" else self._read_audio
        self._tasks.append(asyncio.create_task(read(track)))

    async def _read_video(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                arrived = self._arrived("video", frame.pts)
                assert isinstance(frame, av.VideoFrame)
                rgb = frame.to_ndarray(format="rgb24")
                self.last_picture = rgb
                stamp = read_stamp(rgb) if self.decode_stamps else None
                self.video.append(
                    VideoSample(
                        arrived, rgb.shape[1], rgb.shape[0], stamp, thumbnail(rgb, self.region)
                    )
                )

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                arrived = self._arrived("audio", frame.pts)
                assert isinstance(frame, av.AudioFrame)
                channels = len(frame.layout.channels)
                rate = frame.sample_rate
                self.audio_rate = rate
                samples = frame.to_ndarray().reshape(-1, channels).astype(np.float64).mean(axis=1)
                rms = float(np.sqrt(np.mean(samples**2))) / 32768.0 if samples.size else 0.0
                duration = samples.size / rate
                self.audio.append(
                    AudioSample(
                        # Its samples end one packet after it arrived (see the module's notes);
                        # `samples` counts at the observer's AUDIO_RATE, as RoomObserver's do.
                        arrived + duration,
                        round(duration * AUDIO_RATE),
                        20 * float(np.log10(max(rms, 1e-6))),
                    )
                )

    # -- measuring ---------------------------------------------------------------------------

    def fps(self, start: float, end: float) -> float:
        times = [v.arrived for v in self.video if start <= v.arrived <= end]
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def audio_seconds(self, start: float, end: float) -> float:
        return sum(a.samples for a in self.audio if start <= a.arrived <= end) / AUDIO_RATE

    def av_offset_ms(self, max_lag_ms: float = 300.0) -> float:
        """How much later each picture arrived than its audio (negative: earlier)."""
        return estimate_av_offset_ms(self.video, self.audio, max_lag_ms=max_lag_ms)


def whep_exchange(
    http: aiohttp.ClientSession, base_url: str, session_id: str, headers: dict[str, str]
) -> tuple[Exchange, Callable[[], Awaitable[None]]]:
    """A WHEP offer/answer against the control API, and the DELETE that ends it."""
    url = f"{base_url.rstrip('/')}/api/v1/stream/sessions/{session_id}/whep"
    location: list[str] = []

    async def exchange(offer: str) -> str:
        async with http.post(
            url, data=offer, headers={**headers, "Content-Type": "application/sdp"}
        ) as response:
            body = await response.text()
            if response.status != 201:
                raise RuntimeError(f"WHEP offer refused: {response.status} {body[:300]}")
            location.append(response.headers["Location"])
            return body

    async def delete() -> None:
        if location:
            async with http.delete(base_url.rstrip("/") + location[0], headers=headers):
                pass

    return exchange, delete


async def measure_stream_webrtc(
    base_url: str,
    session_id: str,
    headers: dict[str, str],
    feed: Callable[[], Awaitable[None]],
    *,
    settle_s: float = 1.0,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Watch `session_id` of the control API at `base_url` over WHEP while `feed()` streams
    audio into the session (it returns when it has sent it all), and measure it: delivered fps
    while frames carried speech, the audio/video offset (ms, positive: pictures late), audio
    received (s), pictures and audio packets counted. `settle_s`: how long to keep watching
    after `feed` returns (the last frames play out)."""
    async with aiohttp.ClientSession() as http:
        exchange, delete = whep_exchange(http, base_url, session_id, headers)
        observer = WebRtcObserver()
        try:
            await observer.connect(exchange)
            await observer.wait_for(lambda: len(observer.video) > 5, 30, "the first pictures")
            started = time.perf_counter()
            await asyncio.wait_for(feed(), timeout_s)
            await asyncio.sleep(settle_s)
            ended = time.perf_counter()
        finally:
            await observer.aclose()
            await delete()
    return summarize(observer, started, ended)


def summarize(observer: WebRtcObserver, start: float, end: float) -> dict[str, Any]:
    """The measures of what `observer` received between `start` and `end` (perf_counter)."""
    speech = first_showings(v for v in observer.video if v.stamp is not None and v.stamp.speech)
    window = [v for v in observer.video if start - 1.0 <= v.arrived <= end]
    audio = [a for a in observer.audio if start - 1.0 <= a.arrived <= end]
    try:
        offset: float | None = round(estimate_av_offset_ms(window, audio), 1)
    except ValueError:
        offset = None
    return {
        "fps": round(observer.fps(start, end), 2),
        "speech_fps": round(observer.fps(speech[0].arrived, speech[-1].arrived), 2)
        if len(speech) > 1
        else 0.0,
        "offset_ms": offset,
        "pictures": len(window),
        "speech_pictures": len(speech),
        "repeated_pictures": sum(
            1 for v in observer.video if v.stamp is not None and v.stamp.speech
        )
        - len(speech),
        "stamped_pictures": sum(1 for v in window if v.stamp is not None),
        "audio_s": round(observer.audio_seconds(start, end), 2),
        "audio_rate": observer.audio_rate,
        "size": [window[-1].width, window[-1].height] if window else None,
    }


def first_showings(samples: Iterable[VideoSample]) -> list[VideoSample]:
    """Each stamped frame's first arrival (a held picture repeats its stamp)."""
    seen: set[int] = set()
    first = []
    for sample in samples:
        if sample.stamp is not None and sample.stamp.frame_index not in seen:
            seen.add(sample.stamp.frame_index)
            first.append(sample)
    return first


async def bench_stream_webrtc(
    base_url: str,
    api_key: str,
    *,
    renderer: str = "testcard",
    seconds: float = 5.0,
    fps: float = 25.0,
    size: int = 512,
    chunk_s: float = 0.1,
) -> dict[str, Any]:
    """The whole measurement against a running control API: open a streaming session over
    the WebSocket (`renderer`, the bundled portrait, `size` x `size` at `fps`; the service must
    offer the renderer: AVATAR_STREAM_RENDERER(S)), watch it over WHEP while `seconds` of
    speech-like audio go in, in real time, in `chunk_s` chunks, and stop it. What
    `measure_stream_webrtc` returns, plus the frames the socket itself received."""
    headers = {"X-API-Key": api_key}
    pcm = _speech_pcm(seconds)
    ws_url = base_url.rstrip("/").replace("http", "ws", 1) + "/api/v1/stream/ws"
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(ws_url, headers=headers, max_msg_size=0) as ws,
    ):
        greeting = await _expect(ws, "status")
        portrait = base64.b64encode(DEFAULT_PORTRAIT.read_bytes()).decode()
        config = {"renderer": renderer, "width": size, "height": size, "fps": fps}
        await ws.send_json({"type": "init", "source": portrait, "config": config})
        await _expect(ws, "status", timeout=120)
        ws_frames = 0

        async def drain() -> None:
            nonlocal ws_frames
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    ws_frames += json.loads(message.data).get("type") == "frame"

        async def feed() -> None:
            step = int(STREAM_AUDIO_RATE * chunk_s) * 2
            started = time.monotonic()
            for offset in range(0, len(pcm), step):
                due = started + offset / 2 / STREAM_AUDIO_RATE
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                chunk = base64.b64encode(pcm[offset : offset + step]).decode()
                await ws.send_json(
                    {
                        "type": "audio_chunk",
                        "data": chunk,
                        "timestamp": offset / 2 / STREAM_AUDIO_RATE,
                    }
                )

        reader = asyncio.create_task(drain())
        try:
            result = await measure_stream_webrtc(base_url, greeting["session_id"], headers, feed)
            await ws.send_json({"type": "stop"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), 10)
        finally:
            reader.cancel()
    return {**result, "renderer": renderer, "seconds": seconds, "ws_frames": ws_frames}


def _speech_pcm(seconds: float) -> bytes:
    from tests.media import speech_like_audio  # scikit-image: the dev extra

    with tempfile.TemporaryDirectory() as folder:
        samples = speech_like_audio(Path(folder) / "speech.wav", seconds, STREAM_AUDIO_RATE)
    return (samples * 32767).astype("<i2").tobytes()


async def _expect(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 30.0) -> dict:
    """The next message of type `kind` (frames and progress before it are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        message = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        if message.type != aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"the stream socket closed waiting for {kind}: {message}")
        data = json.loads(message.data)
        if data.get("type") == "error":
            raise RuntimeError(f"the stream socket answered an error: {data}")
        if data.get("type") == kind:
            return dict(data)
