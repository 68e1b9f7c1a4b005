"""WebRTC playback of a streaming session (control_api/streaming/webrtc.py), received by a real
aiortc client (bench/stream_webrtc.py's WebRtcObserver) on loopback.

The session is a test double fed from a list: testcard frames rendered from speech-like audio,
each carrying its own 16 kHz window, as the real sessions produce them. The client decodes each
picture's stamp (which frame it is, the loudness of its audio) and measures fps and the
audio/video offset the way the LiveKit bench does (bench/observer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import aioice.ice
import cv2
import numpy as np
import pytest

from avatar_runtime.timeline import FrameTimeline
from bench.observer import VideoSample
from bench.stream_webrtc import (
    WebRtcObserver,
    bench_stream_webrtc,
    first_showings,
    whep_exchange,
)
from control_api.config import ConfigError, Settings
from control_api.context import STREAMS, WEBRTC_PEERS
from control_api.errors import ApiError
from control_api.streaming.frames import AUDIO_RATE, StreamFrame
from control_api.streaming.webrtc import PeerRegistry, WebRtcPeer
from control_api.streaming.whep import peer_registry
from renderers.base import FrameRequest, VideoFormat
from renderers.testcard import TestcardRenderer
from tests.control_api_client import API_KEY, AUTH, assert_error
from tests.livekit_server import require_or_skip
from tests.media import speech_like_audio
from tests.stream_fixtures import (
    init,
    recv,
    send,
    send_audio,
    speech_pcm,
    stream_app,
    stream_settings,
)

SIZE = 320


# --- a session fed from a list ----------------------------------------------------------------


class ListSubscription:
    def __init__(self, source: ListSource, max_queue: int) -> None:
        self._source = source
        self._queue: asyncio.Queue[StreamFrame | None] = asyncio.Queue()
        self._max_queue = max_queue
        self.dropped = 0
        self.closed = False

    def offer(self, frame: StreamFrame | None) -> None:
        if frame is not None and self._queue.qsize() >= self._max_queue:
            self.dropped += 1
            return
        self._queue.put_nowait(frame)

    def __aiter__(self) -> AsyncIterator[StreamFrame]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[StreamFrame]:
        while not self.closed:
            frame = await self._queue.get()
            if frame is None:
                return
            yield frame

    def close(self) -> None:
        self.closed = True
        self._queue.put_nowait(None)
        if self in self._source.subscriptions:
            self._source.subscriptions.remove(self)


class ListSource:
    """A FrameSource whose frames are pushed by the test."""

    def __init__(self, session_id: str = "s-test", fps: float = 25.0, size: int = SIZE) -> None:
        self.session_id = session_id
        self.fps = fps
        self.width = self.height = size
        self.subscriptions: list[ListSubscription] = []
        self._closed = False

    def subscribe(self, max_queue: int = 60) -> ListSubscription:
        subscription = ListSubscription(self, max_queue)
        if self._closed:
            subscription.offer(None)
        self.subscriptions.append(subscription)
        return subscription

    @property
    def closed(self) -> bool:
        return self._closed

    def push(self, frames: Iterable[StreamFrame]) -> None:
        for frame in frames:
            for subscription in self.subscriptions:
                subscription.offer(frame)

    def end(self) -> None:
        self._closed = True
        for subscription in self.subscriptions:
            subscription.offer(None)


def stamped_frames(audio: np.ndarray, fps: float, size: int = SIZE) -> list[StreamFrame]:
    """Frames as a testcard session renders them: every frame its own audio window, stamped."""
    renderer = TestcardRenderer(VideoFormat(size, size, fps))
    timeline = FrameTimeline(AUDIO_RATE, fps)
    frames = []
    k = 0
    while timeline.boundary(k + 1) <= audio.size:
        start, stop = timeline.window(k)
        window = audio[start:stop]
        request = FrameRequest(
            index=k,
            audio=window,
            window_offset=0,
            window_length=window.size,
            speech_position=start,
            segment=1,
        )
        rgba = renderer.render([request])[0]
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGR))
        assert ok
        pcm = (np.clip(window, -1, 1) * 32767).astype("<i2").tobytes()
        frames.append(StreamFrame(k, start / AUDIO_RATE, jpeg.tobytes(), pcm, size, size))
        k += 1
    return frames


def assert_each_frame_shown_once(shown: list[VideoSample], count: int) -> None:
    """Frames 0..count-1 arrived in order, each once (then the last one held): a stamp that
    compression damaged reads as none, so one or two may be missing from the list."""
    indices = [v.stamp.frame_index for v in shown if v.stamp is not None]
    distinct = [i for n, i in enumerate(indices) if n == 0 or i != indices[n - 1]]
    assert distinct == sorted(set(distinct)), f"out of order or repeated: {distinct}"
    assert distinct[-1] == count - 1 and set(distinct) <= set(range(count))
    assert len(distinct) >= count - 2, f"only {len(distinct)} of {count} frames arrived"


async def connect(registry: PeerRegistry, source: ListSource) -> tuple[WebRtcObserver, WebRtcPeer]:
    observer = WebRtcObserver()
    peers: list[WebRtcPeer] = []

    async def exchange(offer: str) -> str:
        peers.append(await registry.answer(source, offer))
        return peers[0].answer

    await observer.connect(exchange)
    return observer, peers[0]


async def wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.fixture(autouse=True)
def loopback_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice offers no loopback candidate: on a machine whose only address is 127.0.0.1
    (a container without a network) nothing could connect. Offer it there."""
    host_addresses = aioice.ice.get_host_addresses

    def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        found = host_addresses(use_ipv4, use_ipv6)
        return found if found or not use_ipv4 else ["127.0.0.1"]

    monkeypatch.setattr(aioice.ice, "get_host_addresses", with_loopback)


@pytest.fixture
async def registry() -> AsyncIterator[PeerRegistry]:
    peers = PeerRegistry()
    yield peers
    await peers.aclose()


# --- playback -----------------------------------------------------------------------------------


async def test_frames_play_at_fps_with_their_audio(registry: PeerRegistry, tmp_path: Path) -> None:
    fps = 25.0
    source = ListSource(fps=fps)
    frames = stamped_frames(speech_like_audio(tmp_path / "speech.wav", 3.0), fps)
    observer, peer = await connect(registry, source)
    try:
        # One stream (msid) for both tracks, as browsers need to lip-sync them.
        msids = {line.split()[0] for line in peer.answer.splitlines() if line.startswith("a=msid:")}
        assert len(msids) == 1, peer.answer
        await wait_until(lambda: len(observer.video) > 5, 20, "the first pictures")
        idle = observer.video[-1]
        assert idle.stamp is None  # black before the first frame

        # Streamed as a client streams: 100 ms of audio (2.5 frames) at a time.
        started = time.perf_counter()
        for i in range(0, len(frames), 5):
            source.push(frames[i : i + 5])
            await asyncio.sleep(5 / fps)
        await asyncio.sleep(0.5)
        ended = time.perf_counter()
    finally:
        await observer.aclose()

    speech = [v for v in observer.video if v.stamp is not None]
    assert_each_frame_shown_once(speech, len(frames))
    fps_seen = observer.fps(speech[0].arrived, speech[-1].arrived)
    offset = observer.av_offset_ms()
    print(f"\nwebrtc: {fps_seen:.2f} fps, offset {offset:+.0f} ms, stats {peer.playout.stats()}")
    assert fps_seen == pytest.approx(fps, abs=1.0)
    assert observer.fps(started, ended) == pytest.approx(fps, abs=1.0)
    assert observer.audio_rate == 48000
    assert observer.audio_seconds(started, ended) == pytest.approx(ended - started, abs=0.3)
    assert abs(offset) <= 1.5 * 1000 / fps, f"audio/video offset {offset:.0f} ms"
    assert peer.playout.pictures_skipped == 0


async def test_a_burst_is_played_in_real_time_then_the_picture_holds(
    registry: PeerRegistry, tmp_path: Path
) -> None:
    fps = 30.0
    source = ListSource(fps=fps)
    frames = stamped_frames(speech_like_audio(tmp_path / "speech.wav", 3.0), fps)
    assert len(frames) == 90
    observer, peer = await connect(registry, source)
    try:
        await wait_until(lambda: len(observer.video) > 5, 20, "the first pictures")
        pushed = time.perf_counter()
        source.push(frames)  # 3 s of frames at once
        await asyncio.sleep(0.5)
        assert 10 <= peer.playout.buffered <= 80, "a burst waits in the buffer"
        last = frames[-1].frame_id
        await wait_until(
            lambda: any(v.stamp and v.stamp.frame_index == last for v in observer.video),
            10,
            "the last frame",
        )
        await asyncio.sleep(1.0)  # nothing more comes
    finally:
        await observer.aclose()

    shown = [v for v in observer.video if v.stamp is not None]
    first_shown = shown[0].arrived
    last_shown = next(v.arrived for v in shown if v.stamp.frame_index == last)  # type: ignore[union-attr]
    print(
        f"\nburst of 90: first after {1000 * (first_shown - pushed):.0f} ms, "
        f"played over {last_shown - first_shown:.2f} s"
    )
    assert first_shown - pushed < 0.3
    assert last_shown - first_shown == pytest.approx(89 / fps, abs=0.25)
    assert_each_frame_shown_once(shown, 90)
    assert peer.playout.played == 90 and peer.playout.pictures_skipped == 0

    # Afterwards: the last picture held at fps, and silence.
    held = [v for v in observer.video if v.arrived > last_shown + 0.3]
    assert len(held) >= 15
    assert all(v.stamp is not None and v.stamp.frame_index == last for v in held)
    assert observer.fps(held[0].arrived, held[-1].arrived) == pytest.approx(fps, abs=1.5)
    quiet = [a for a in observer.audio if a.arrived > last_shown + 0.4]
    assert len(quiet) >= 0.5 * 50
    assert max(a.rms_db for a in quiet) < -60


async def test_idle_session_sends_black_pictures_and_silence(registry: PeerRegistry) -> None:
    source = ListSource(fps=20.0)
    observer, _ = await connect(registry, source)
    try:
        await wait_until(lambda: len(observer.video) > 5, 20, "the first pictures")
        start = time.perf_counter()
        await asyncio.sleep(1.0)
        end = time.perf_counter()
    finally:
        await observer.aclose()
    assert observer.fps(start, end) == pytest.approx(20.0, abs=1.5)
    assert observer.audio_seconds(start, end) == pytest.approx(1.0, abs=0.15)
    assert observer.last_picture is not None and observer.last_picture.max() < 20
    assert max(a.rms_db for a in observer.audio) < -60


@pytest.mark.parametrize("kind", ["video", "audio"])
async def test_a_peer_may_take_only_video_or_only_audio(
    registry: PeerRegistry, tmp_path: Path, kind: str
) -> None:
    frames = stamped_frames(speech_like_audio(tmp_path / "speech.wav", 1.0), 25.0)
    source = ListSource()
    observer = WebRtcObserver(kinds=(kind,))
    try:
        await observer.connect(lambda offer: answer(registry, source, offer))
        (peer,) = registry.peers()
        await wait_until(lambda: len(observer.video) + len(observer.audio) > 5, 20, "media")
        source.push(frames)
        await wait_until(lambda: peer.playout.played == len(frames), 10, "the frames")
        await asyncio.sleep(0.3)
    finally:
        await observer.aclose()
    if kind == "video":
        assert observer.audio == [] and len(observer.video) > 25
        assert peer.playout._audio.end == 0  # no audio kept for nobody
    else:
        assert observer.video == [] and len(observer.audio) > 50
        assert peer.playout._pictures == {}  # no pictures kept for nobody


async def answer(registry: PeerRegistry, source: ListSource, offer: str) -> str:
    return (await registry.answer(source, offer)).answer


# --- the peers' lives ---------------------------------------------------------------------------


async def test_bad_offers_are_refused(registry: PeerRegistry) -> None:
    source = ListSource()
    for sdp in ("", "hello", "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"):
        with pytest.raises(ApiError) as refused:
            await registry.answer(source, sdp)
        assert (refused.value.status, refused.value.code) == (400, "invalid_sdp")
    assert len(registry.peers()) == 0


async def test_peer_limits(tmp_path: Path) -> None:
    registry = PeerRegistry(max_per_session=2, max_total=3)
    one, two = ListSource("one"), ListSource("two")
    observers = []
    try:
        for source in (one, one, two):
            observers.append((await connect(registry, source))[0])
        with pytest.raises(ApiError) as refused:
            await connect(registry, one)
        assert (refused.value.status, refused.value.code) == (429, "too_many_peers")
        with pytest.raises(ApiError) as refused:
            await connect(registry, ListSource("three"))
        assert (refused.value.status, refused.value.code) == (503, "webrtc_busy")
        assert len(registry.peers("one")) == 2 and len(registry.peers()) == 3
    finally:
        for observer in observers:
            await observer.aclose()
        await registry.aclose()
    assert len(registry.peers()) == 0
    with pytest.raises(ApiError) as refused:
        await connect(registry, two)
    assert refused.value.code == "webrtc_unavailable"


async def test_ended_session_is_refused(registry: PeerRegistry) -> None:
    source = ListSource()
    source.end()
    with pytest.raises(ApiError) as refused:
        await connect(registry, source)
    assert (refused.value.status, refused.value.code) == (404, "session_not_found")


async def test_peer_closes_when_its_session_ends_after_playing_out(
    registry: PeerRegistry, tmp_path: Path
) -> None:
    source = ListSource(fps=25.0)
    frames = stamped_frames(speech_like_audio(tmp_path / "speech.wav", 1.0), 25.0)
    observer, peer = await connect(registry, source)
    try:
        await wait_until(lambda: len(observer.video) > 3, 20, "the first pictures")
        source.push(frames)
        source.end()
        await wait_until(lambda: len(registry.peers()) == 0, 10, "the peer to be closed")
        shown = {v.stamp.frame_index for v in observer.video if v.stamp}
        assert shown == set(range(len(frames))), "the last frames played before it closed"
        await wait_until(
            lambda: observer.pc.connectionState == "closed", 10, "the client to see it"
        )
        assert peer.playout.closed
    finally:
        await observer.aclose()


async def test_peer_closes_when_the_client_leaves(registry: PeerRegistry) -> None:
    source = ListSource()
    observer, peer = await connect(registry, source)
    await wait_until(lambda: len(observer.video) > 3, 20, "the first pictures")
    assert len(source.subscriptions) == 1
    await observer.aclose()
    await wait_until(lambda: len(registry.peers()) == 0, 10, "the peer to be closed")
    assert peer.playout.closed and source.subscriptions == []


async def test_peer_that_never_connects_is_closed() -> None:
    registry = PeerRegistry(connect_timeout_s=0.5)
    source = ListSource()
    observer = WebRtcObserver()
    try:

        async def exchange(offer: str) -> str:
            await registry.answer(source, offer)
            raise ConnectionError("the client went away before applying the answer")

        with pytest.raises(ConnectionError):
            await observer.connect(exchange)
        assert len(registry.peers()) == 1
        # Out of the registry first, then closed (its subscription ends with its playout).
        await wait_until(
            lambda: len(registry.peers()) == 0 and source.subscriptions == [],
            5,
            "the peer to be closed and unsubscribed",
        )
    finally:
        await observer.aclose()
        await registry.aclose()


async def test_close_peer(registry: PeerRegistry) -> None:
    source = ListSource()
    observer, peer = await connect(registry, source)
    try:
        await wait_until(lambda: len(observer.video) > 3, 20, "the first pictures")
        assert not await registry.close_peer(peer.peer_id, session_id="another")
        assert await registry.close_peer(peer.peer_id, session_id=source.session_id)
        assert not await registry.close_peer(peer.peer_id)
        assert len(registry.peers()) == 0 and source.subscriptions == []
        await wait_until(
            lambda: observer.pc.connectionState in ("closed", "failed"), 10, "the client to see it"
        )
    finally:
        await observer.aclose()


def test_webrtc_settings() -> None:
    settings = Settings.from_env(
        {
            "AVATAR_API_AUTH": "disabled",
            "AVATAR_WEBRTC_MAX_PEERS_PER_SESSION": "3",
            "AVATAR_WEBRTC_MAX_PEERS": "9",
            "AVATAR_WEBRTC_ICE_SERVERS": "stun:stun.example.test:3478, turn:turn.example.test",
            "AVATAR_WEBRTC_ICE_USERNAME": "user",
            "AVATAR_WEBRTC_ICE_CREDENTIAL": "secret",
        }
    )
    registry = peer_registry(settings)
    assert (registry.max_per_session, registry.max_total) == (3, 9)
    stun, turn = registry.ice_servers
    assert (stun.urls, stun.username) == ("stun:stun.example.test:3478", None)
    assert (turn.urls, turn.username, turn.credential) == (
        "turn:turn.example.test",
        "user",
        "secret",
    )
    assert "secret" not in repr(settings)
    defaults = peer_registry(Settings.from_env({"AVATAR_API_AUTH": "disabled"}))
    assert (defaults.max_per_session, defaults.max_total, defaults.ice_servers) == (2, 16, [])
    with pytest.raises(ConfigError, match="AVATAR_WEBRTC_ICE_SERVERS"):
        Settings.from_env({"AVATAR_WEBRTC_ICE_SERVERS": "stun.example.test"})


# --- WHEP on the control API --------------------------------------------------------------------


async def test_whep_routes(tmp_path: Path) -> None:
    source = ListSource("whep-session")
    async with stream_app(stream_settings(tmp_path, webrtc_max_peers_per_session=1)) as app:
        client = app.client
        # A session the test feeds (the real ones are driven over the WebSocket, below).
        streams = client.app[STREAMS]
        real_get = streams.get
        streams.get = lambda sid: source if sid == source.session_id else real_get(sid)  # type: ignore[method-assign]
        path = f"/api/v1/stream/sessions/{source.session_id}/whep"
        sdp_headers = {**AUTH, "Content-Type": "application/sdp"}

        response = await client.post(path, data="v=0", headers={"Content-Type": "application/sdp"})
        assert response.status == 401
        response = await client.post(
            "/api/v1/stream/sessions/nobody/whep", data="v=0", headers=sdp_headers
        )
        assert response.status == 404
        assert_error(await response.json(), "session_not_found")
        response = await client.post(path, json={"sdp": "v=0"}, headers=AUTH)
        assert response.status == 415
        assert_error(await response.json(), "unsupported_media_type")
        response = await client.post(path, data="not an offer", headers=sdp_headers)
        assert response.status == 400
        assert_error(await response.json(), "invalid_sdp")

        locations = []

        async def exchange(offer: str) -> str:
            response = await client.post(path, data=offer, headers=sdp_headers)
            assert response.status == 201, await response.text()
            assert response.content_type == "application/sdp"
            locations.append(response.headers["Location"])
            return await response.text()

        observer = WebRtcObserver()
        try:
            await observer.connect(exchange)
            await observer.wait_for(lambda: len(observer.video) > 3, 20, "the first pictures")
            (peer,) = client.app[WEBRTC_PEERS].peers(source.session_id)
            assert locations == [f"{path}/{peer.peer_id}"]
            # One peer per session here: the next is refused.
            base_url = str(client.make_url(""))
            second = WebRtcObserver()
            try:
                with pytest.raises(RuntimeError, match="429.*too_many_peers"):
                    await second.connect(
                        whep_exchange(client.session, base_url, source.session_id, AUTH)[0]
                    )
            finally:
                await second.aclose()

            other = f"/api/v1/stream/sessions/other/whep/{peer.peer_id}"
            response = await client.delete(other, headers=AUTH)
            assert response.status == 404
            assert_error(await response.json(), "peer_not_found")
            response = await client.delete(f"{path}/{peer.peer_id}", headers=AUTH)
            assert response.status == 200
            assert await response.json() == {"id": peer.peer_id, "deleted": True}
            assert client.app[WEBRTC_PEERS].peers() == []
            response = await client.delete(f"{path}/{peer.peer_id}", headers=AUTH)
            assert response.status == 404
        finally:
            await observer.aclose()


@pytest.mark.slow
async def test_whep_plays_a_real_streaming_session(tmp_path: Path) -> None:
    """End to end, as `make bench` measures it (bench/stream_webrtc.py): a WebSocket session
    (testcard renderer, in its own worker process) fed speech in real time, watched over WHEP
    by an aiortc client."""
    fps, seconds = 25.0, 3.0
    async with stream_app(stream_settings(tmp_path)) as app:
        result = await bench_stream_webrtc(
            str(app.client.make_url("")), API_KEY, seconds=seconds, fps=fps, size=SIZE
        )
        assert app.client.app[WEBRTC_PEERS].peers() == []  # the WHEP DELETE closed it
    print(f"\nwebrtc end to end: {result}")
    frames = round(seconds * fps)
    assert result["speech_pictures"] >= frames - 2
    assert result["speech_fps"] == pytest.approx(fps, abs=1.5)
    assert result["offset_ms"] is not None and abs(result["offset_ms"]) <= 1.5 * 1000 / fps
    assert result["audio_s"] >= seconds and result["size"] == [SIZE, SIZE]
    assert result["ws_frames"] >= frames  # the socket had them all too


@pytest.mark.slow
async def test_a_webrtc_offer_on_the_socket_plays_the_session(tmp_path: Path) -> None:
    """The other way in: `webrtc_offer` on the session's own socket, then the same media."""
    pcm = speech_pcm(2.0, tmp_path)
    async with stream_app(stream_settings(tmp_path)) as app, app.connect() as ws:
        status = await init(ws, width=SIZE, height=SIZE, fps=25)
        answers: asyncio.Queue[dict] = asyncio.Queue()

        async def read_socket() -> None:
            with contextlib.suppress(Exception):
                while True:
                    message = await recv(ws, timeout=60)
                    if message["type"] in ("webrtc_answer", "error"):
                        answers.put_nowait(message)

        async def exchange(offer: str) -> str:
            await send(ws, {"type": "webrtc_offer", "sdp": offer})
            answer = await asyncio.wait_for(answers.get(), 30)
            assert answer["type"] == "webrtc_answer", answer
            return str(answer["sdp"])

        reader = asyncio.create_task(read_socket())
        observer = WebRtcObserver()
        try:
            await observer.connect(exchange)
            # The app's peer, under its limits (as a WHEP peer is).
            assert len(app.client.app[WEBRTC_PEERS].peers(status["session_id"])) == 1
            await observer.wait_for(lambda: len(observer.video) > 3, 20, "the first pictures")
            await send_audio(ws, pcm, chunk_s=0.1, pace=1.0)
            await observer.wait_for(
                lambda: len(first_showings(observer.video)) >= 50, 10, "the frames"
            )
        finally:
            await observer.aclose()
            reader.cancel()
    assert_each_frame_shown_once([v for v in observer.video if v.stamp is not None], 50)
    assert observer.audio_rate == 48000


# --- a real browser -----------------------------------------------------------------------------

CHECK_SCRIPT = Path(__file__).resolve().parent.parent / "client_demo" / "scripts" / "whep_check.mjs"


@pytest.mark.slow
async def test_chromium_plays_a_session_over_whep(tmp_path: Path) -> None:
    """Headless Chromium (whep_check.mjs, whep_player.html) negotiates WHEP with the service and
    plays a testcard session fed speech over its WebSocket: the video plays, is not black,
    and audio arrives; its DELETE closes the peer."""
    node = require_browser_tools()
    pcm = speech_pcm(4.0, tmp_path)
    async with stream_app(stream_settings(tmp_path)) as app:
        async with app.connect() as ws:
            status = await init(ws, width=SIZE, height=SIZE, fps=25)

            async def keep_talking() -> None:
                with contextlib.suppress(Exception):
                    while True:
                        await send_audio(ws, pcm, chunk_s=0.1, pace=1.0)

            async def drain() -> None:
                with contextlib.suppress(Exception):
                    while True:
                        await recv(ws, timeout=120)

            tasks = [asyncio.create_task(keep_talking()), asyncio.create_task(drain())]
            try:
                check = await asyncio.create_subprocess_exec(
                    node,
                    str(CHECK_SCRIPT),
                    "--base",
                    str(app.client.make_url("")),
                    "--session",
                    status["session_id"],
                    "--key",
                    API_KEY,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                out, err = await asyncio.wait_for(check.communicate(), 120)
            finally:
                for task in tasks:
                    task.cancel()
            peers_after = app.client.app[WEBRTC_PEERS].peers()
    lines = out.decode().strip().splitlines()
    assert lines, f"no result from the browser; its log:\n{err.decode()[-3000:]}"
    result = json.loads(lines[-1])
    print(f"\nchromium: {result}")
    assert result["ok"], f"{result}\n{err.decode()[-3000:]}"
    assert result["video"]["advance_s"] >= 0.5 and result["video"]["fps"] >= 15
    assert (result["video"]["width"], result["video"]["height"]) == (SIZE, SIZE)
    assert result["video"]["luminance_mean"] >= 16
    assert result["audio"]["samples_per_s"] > 0 and result["audio"]["energy"] > 0
    assert sorted(result["tracks"]) == ["audio", "video"]
    assert peers_after == []


def require_browser_tools() -> str:
    """node's path, once node, Chromium and client_demo's playwright-core are there."""
    node = shutil.which("node")
    if node is None:
        require_or_skip("node is not installed (Node.js >= 20; `make setup` checks it)")
    chromium = os.environ.get("CHROMIUM_BIN") or "/usr/bin/chromium"
    if not os.access(chromium, os.X_OK):
        require_or_skip(f"no Chromium at {chromium} (`make setup` installs Debian's)")
    if not (CHECK_SCRIPT.parent.parent / "node_modules" / "playwright-core").is_dir():
        require_or_skip("client_demo's node packages are missing: run `make setup`")
    return node
