"""Seed 004's WebSocket streaming (`WS /api/v1/stream/ws`, control_api/streaming,
docs/streaming.md) over real loopback sockets, with real worker processes and no mocks: the
seed's own Python client as written, audio streamed in and frames out (each frame paired with
exactly its own audio, checked from the testcard's stamps), every message type, bad messages,
the session limit, idle expiry, a slow reader, a crashed and a hung renderer ending only their
own session, what a session frees, the session list and statistics, and Ditto's `emo` mapped
onto our emotions. Most sessions use the testcard renderer (about a millisecond a frame); one
uses meshwarp."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import websockets

from control_api.config import ConfigError, Settings
from control_api.streaming.emo import (
    DITTO_EMOTIONS,
    Emo,
    EmoError,
    Run,
    expression_at,
    parse_emo,
    plan_for,
    to_expression,
)
from control_api.streaming.messages import sniff_source
from renderers.bundled import DEFAULT_PORTRAIT
from renderers.testcard import read_stamp
from tests.control_api_client import API_KEY
from tests.media import write_video
from tests.stream_fixtures import (
    RATE,
    StreamApp,
    b64,
    expect,
    expect_error,
    expected_frames,
    init,
    init_message,
    jpeg_picture,
    kill,
    png,
    process_alive,
    recv,
    send,
    send_audio,
    session_folders,
    speech_pcm,
    stream_app,
    stream_settings,
    until_closed,
    wait_gone,
)

pytestmark = pytest.mark.usefixtures("private_cache")

SEED_CLIENT = """
import asyncio
import websockets
import json
import base64
from PIL import Image
import io

async def stream_inference():
    async with websockets.connect("ws://localhost:8000/api/v1/stream/ws") as ws:
        # Receive initial status
        msg = await ws.recv()
        print(json.loads(msg))

        # Send init with source image
        with open("source.jpg", "rb") as f:
            img_b64 = base64.b64encode(f.read()).decode()

        await ws.send(json.dumps({
            "type": "init",
            "source": img_b64,
            "config": {"emo": 4}
        }))

        # Wait for ready
        msg = await ws.recv()
        print(json.loads(msg))

        # Send audio chunks
        # (Your audio streaming logic here)

        # Stop
        await ws.send(json.dumps({"type": "stop"}))

asyncio.run(stream_inference())
"""
"""The seed's Python client example, verbatim (seeds/004, "Example Client")."""


# --- the seed's client ------------------------------------------------------------------------


async def test_the_seeds_python_client_runs_as_written(tmp_path: Path) -> None:
    settings = stream_settings(tmp_path, auth="disabled")
    async with stream_app(settings) as app:
        script = tmp_path / "client.py"
        # Only the port differs: the test's server listens where it can.
        script.write_text(SEED_CLIENT.replace("localhost:8000", f"localhost:{app.port}"))
        (tmp_path / "source.jpg").write_bytes(DEFAULT_PORTRAIT.read_bytes())
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        printed = out.decode().splitlines()
        assert len(printed) == 2, printed
        assert "'type': 'status'" in printed[0]
        assert "Session initialized. Ready for audio chunks." in printed[1]
        assert "'session_id'" in printed[1]
        # The client closed the socket right after stop: its session is gone, worker included.
        await app.wait_for(lambda: _no_sessions(app), what="the session to end")
        stats = await app.stats()
        assert stats["sessions_started"] == 1 and stats["sessions_active"] == 0


async def _no_sessions(app: StreamApp) -> bool:
    return not await app.sessions()


async def test_streamed_audio_comes_back_as_frames_each_with_its_own_audio(
    tmp_path: Path,
) -> None:
    pcm = speech_pcm(2.0, tmp_path)
    fps = 25.0
    total = expected_frames(pcm, fps)
    async with stream_app(stream_settings(tmp_path)) as app, app.connect() as ws:
        status = await init(ws, emo=4)
        assert (status["renderer"], status["width"], status["height"], status["fps"]) == (
            "testcard",
            512,
            512,
            fps,
        )
        session_id = status["session_id"]
        (listed,) = await app.sessions()
        assert listed["session_id"] == session_id and listed["state"] == "ready"
        pid = listed["pid"]
        assert process_alive(pid)
        assert session_folders(session_id)

        received: list[tuple[float, dict]] = []

        async def read() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for text in ws:
                    received.append((time.monotonic(), json.loads(text)))

        reader = asyncio.create_task(read())
        # The first second in real time (40 ms chunks), then the rest at once.
        started = time.monotonic()
        await send_audio(ws, pcm[: RATE * 2], chunk_s=0.04, pace=1.0)
        real_time_sent = time.monotonic()
        await send_audio(ws, pcm[RATE * 2 :], chunk_s=0.25)
        await send(ws, {"type": "ping"})
        await send(ws, {"type": "stop"})
        await asyncio.wait_for(reader, 30)
        assert ws.close_code == 1000
    messages = [message for _, message in received]
    # In real time, the frames kept up with the audio: each of the first second's frames came
    # back while the audio was still arriving, soon after its own audio was sent.
    paced = [(at, m) for at, m in received if m["type"] == "frame" and m["frame_id"] < fps]
    assert len(paced) == fps
    for at, frame in paced:
        assert at < real_time_sent + 0.5, frame["frame_id"]
        assert at - started < (frame["frame_id"] + 1) / fps + 0.75, frame["frame_id"]

    frames = [m for m in messages if m["type"] == "frame"]
    progress = [m for m in messages if m["type"] == "progress"]
    (complete,) = [m for m in messages if m["type"] == "complete"]
    assert {m["type"] for m in messages} == {"frame", "progress", "pong", "complete"}
    assert messages[-1] == complete  # complete comes after every frame, then the socket closes
    assert [f["frame_id"] for f in frames] == list(range(total))
    assert all(f["timestamp"] == pytest.approx(f["frame_id"] / fps, abs=1e-6) for f in frames)
    assert complete["total_frames"] == total
    assert complete["duration_seconds"] == pytest.approx(total / fps, abs=1e-3)
    assert complete["audio_seconds"] == pytest.approx(len(pcm) / 2 / RATE, abs=1e-3)
    assert complete["dropped"] == 0
    assert progress and progress[-1]["processed"] == total
    for report in progress:
        assert set(report) >= {"processed", "fps", "latency_ms", "dropped"}
        assert report["fps"] >= 0 and report["dropped"] == 0
    # Each picture is the testcard's for exactly its own window of the audio.
    for frame in frames:
        picture = jpeg_picture(frame["data"])
        assert picture.shape == (512, 512, 3)
        stamp = read_stamp(picture)
        assert stamp is not None, frame["frame_id"]
        assert stamp.frame_index == frame["frame_id"]
        assert stamp.speech_position == int(frame["frame_id"] * RATE / fps)
    # Stopped: the worker and the session's folder are gone, and the stats say so.
    assert not process_alive(pid)
    assert not session_folders(session_id)


async def test_sessions_and_stats_describe_the_service(tmp_path: Path) -> None:
    pcm = speech_pcm(1.0, tmp_path)
    async with stream_app(stream_settings(tmp_path)) as app:
        empty = await app.stats()
        assert empty["sessions_active"] == 0 and empty["frames"] == 0
        assert empty["max_sessions"] == 2
        async with app.connect() as ws:
            status = await init(ws, width=320, height=240, fps=30)
            await send_audio(ws, pcm)
            await app.wait_for(
                lambda: _frames_listed(app, expected_frames(pcm, 30.0) - 1), what="frames"
            )
            (listed,) = await app.sessions()
            assert listed["session_id"] == status["session_id"]
            assert (listed["renderer"], listed["width"], listed["height"], listed["fps"]) == (
                "testcard",
                320,
                240,
                30.0,
            )
            assert listed["state"] == "streaming"
            assert listed["audio_seconds"] == pytest.approx(1.0)
            assert listed["age_s"] > 0 and listed["idle_s"] >= 0
            assert listed["subscribers"] == 1 and listed["dropped"] == 0
            stats = await app.stats()
            assert stats["sessions_active"] == 1 and stats["sessions_started"] == 1
            assert stats["frames"] >= expected_frames(pcm, 30.0) - 1
            await send(ws, {"type": "stop"})
            messages = await until_closed(ws)
            assert messages[-1]["type"] == "complete"
        stats = await app.stats()
        assert stats["sessions_active"] == 0 and stats["sessions_completed"] == 1
        assert stats["frames"] == expected_frames(pcm, 30.0)
        for key in ("sessions_refused", "sessions_expired", "sessions_crashed", "dropped"):
            assert stats[key] == 0, key
        # The same totals on /metrics, for Prometheus.
        response = await app.client.get("/metrics", headers={"X-API-Key": API_KEY})
        metrics = await response.text()
        assert f"avatar_stream_frames_total {float(expected_frames(pcm, 30.0))}" in metrics
        assert 'avatar_stream_sessions_total{outcome="completed"} 1.0' in metrics
        assert "avatar_stream_sessions_active 0.0" in metrics
        assert "avatar_stream_sessions_max 2.0" in metrics


async def _frames_listed(app: StreamApp, at_least: int) -> bool:
    sessions = await app.sessions()
    return bool(sessions) and sessions[0]["frames"] >= at_least


# --- authentication ---------------------------------------------------------------------------


async def test_the_socket_takes_the_apis_credentials(tmp_path: Path) -> None:
    async with stream_app(stream_settings(tmp_path)) as app:
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with app.connect(auth=False):
                pass
        assert refused.value.response.status_code == 401
        # Browsers cannot set headers on a WebSocket: the key may come as ?access_token=.
        async with websockets.connect(f"{app.ws_url}?access_token={API_KEY}") as ws:
            assert (await expect(ws, "status"))["session_id"]
        async with websockets.connect(
            app.ws_url, additional_headers={"Authorization": f"Bearer {API_KEY}"}
        ) as ws:
            assert (await expect(ws, "status"))["session_id"]


# --- bad messages -----------------------------------------------------------------------------


async def test_bad_messages_get_an_error_and_the_session_goes_on(tmp_path: Path) -> None:
    settings = stream_settings(tmp_path, stream_max_chunk_s=0.5, stream_max_audio_s=0.5)
    async with stream_app(settings) as app, app.connect() as ws:
        await expect(ws, "status")
        # Before init.
        await ws.send("not json")
        await expect_error(ws, "invalid_json")
        await ws.send("[1, 2]")
        await expect_error(ws, "invalid_message")
        await ws.send(b"\x00\x01")
        await expect_error(ws, "invalid_message")
        await send(ws, {"type": "dance"})
        await expect_error(ws, "unknown_message_type")
        await send(ws, {"data": "AAAA"})
        await expect_error(ws, "invalid_message")
        await send(ws, {"type": "audio_chunk", "data": b64(b"\x00\x00" * 160)})
        await expect_error(ws, "not_initialized")
        await send(ws, {"type": "webrtc_offer", "sdp": "v=0"})
        await expect_error(ws, "not_initialized")
        # A bad init: each refused, the socket still open for a good one.
        await send(ws, {"type": "init", "source": "%%% not base64 %%%"})
        await expect_error(ws, "invalid_base64")
        await send(ws, {"type": "init"})
        await expect_error(ws, "invalid_source")
        await send(ws, {"type": "init", "source": b64(b"just some text, no picture")})
        await expect_error(ws, "unsupported_source")
        for config in (
            {"emo": 9},
            {"emo": [0.5] * 7 + ["x"]},
            {"emo": [0] * 8},
            {"width": 513},
            {"width": 8},
            {"fps": 0},
            {"fps": "fast"},
            {"crop_scale": True},
            {"max_size": "big"},
            {"sampling_timesteps": 2.5},
        ):
            await send(ws, {**init_message(), "config": config})
            await expect_error(ws, "invalid_config")
        await send(ws, init_message(renderer="no-such-renderer"))
        await expect_error(ws, "invalid_renderer")
        await send(ws, init_message(renderer="wav2lip"))
        await expect_error(ws, "renderer_not_allowed")
        # Magic bytes of a JPEG, then nothing a decoder can read: refused by the worker.
        await send(ws, init_message(b"\xff\xd8\xff\xe0" + b"\x00" * 64))
        await expect_error(ws, "corrupt_image", timeout=30)
        assert await app.sessions() == []

        await send(ws, init_message(emo=3, extra_knob=1))
        status = await expect(ws, "status", timeout=30)
        assert status["ignored_config"] == ["extra_knob"]
        # After init.
        await send(ws, init_message())
        await expect_error(ws, "already_initialized")
        await send(ws, {"type": "audio_chunk", "data": "***"})
        await expect_error(ws, "invalid_base64")
        await send(ws, {"type": "audio_chunk", "data": b64(b"\x00\x00\x00")})
        await expect_error(ws, "invalid_audio")
        await send(ws, {"type": "audio_chunk", "data": 12})
        await expect_error(ws, "invalid_audio")
        await send(ws, {"type": "audio_chunk", "data": b64(b"\x00\x00" * RATE)})  # 1 s > 0.5 s
        await expect_error(ws, "audio_chunk_too_large")
        await send(ws, {"type": "audio_chunk", "data": b64(b"\x00\x00"), "timestamp": "now"})
        await expect_error(ws, "invalid_message")
        await send(ws, {"type": "webrtc_offer"})
        await expect_error(ws, "invalid_message")
        await send(ws, {"type": "dance"})
        await expect_error(ws, "unknown_message_type")
        # The session survived all of that; past its 0.5 s of audio a chunk is refused.
        pcm = speech_pcm(0.4, tmp_path)
        await send_audio(ws, pcm)
        await send_audio(ws, pcm[: RATE // 5 * 2], chunk_s=0.2)  # 0.2 s more, one chunk
        await send(ws, {"type": "stop"})
        messages = await until_closed(ws)
    errors = [m for m in messages if m["type"] == "error"]
    assert [e["code"] for e in errors] == ["audio_limit_exceeded"]
    assert "AVATAR_STREAM_MAX_AUDIO_S" in errors[0]["message"]
    frames = [m for m in messages if m["type"] == "frame"]
    assert len(frames) == expected_frames(pcm, 25.0)
    assert messages[-1]["type"] == "complete"


async def test_a_message_over_the_limit_closes_the_socket(tmp_path: Path) -> None:
    settings = stream_settings(tmp_path, max_upload_bytes=64 * 1024)
    limit = settings.stream_max_message_bytes
    async with stream_app(settings) as app:
        async with app.connect() as ws:
            await expect(ws, "status")
            await send(ws, {"type": "init", "source": "A" * limit})
            error = await expect_error(ws, "message_too_large")
            assert str(limit) in error["message"]
            assert await until_closed(ws) == []
            assert ws.close_code == 1009
        # Far over it: aiohttp itself refuses it, with the same close code.
        async with app.connect() as ws:
            await expect(ws, "status")
            await ws.send("x" * (limit + 2 * 1024 * 1024))
            await until_closed(ws)
            assert ws.close_code == 1009
        # A source over AVATAR_MAX_UPLOAD_BYTES in a message under the limit: refused, open.
        async with app.connect() as ws:
            await expect(ws, "status")
            await send(ws, init_message(b"\xff\xd8\xff" + b"\x00" * (64 * 1024 + 10)))
            await expect_error(ws, "source_too_large")
            await send(ws, {"type": "stop"})  # stop before init: complete, nothing rendered
            (complete,) = await until_closed(ws)
            assert complete == {"type": "complete", "total_frames": 0, "duration_seconds": 0.0}


# --- limits and timers ------------------------------------------------------------------------


async def test_past_the_session_limit_an_init_is_refused(tmp_path: Path) -> None:
    async with stream_app(stream_settings(tmp_path, stream_max_sessions=2)) as app:
        async with app.connect() as first, app.connect() as second, app.connect() as third:
            await asyncio.gather(init(first), init(second))
            await expect(third, "status")
            await send(third, init_message())
            error = await expect_error(third, "too_many_sessions")
            assert "AVATAR_STREAM_MAX_SESSIONS" in error["message"]
            await until_closed(third)
            assert third.close_code == 1013  # try again later
            assert len(await app.sessions()) == 2
            stats = await app.stats()
            assert stats["sessions_refused"] == 1 and stats["sessions_active"] == 2
        # The two closed with their sockets: the next one may start.
        await app.wait_for(lambda: _no_sessions(app), what="the sessions to end")
        async with app.connect() as fourth:
            await init(fourth)


async def test_an_idle_session_expires(tmp_path: Path) -> None:
    settings = stream_settings(tmp_path, stream_idle_timeout_s=1.0)
    async with stream_app(settings) as app:
        async with app.connect() as ws:
            status = await init(ws)
            (listed,) = await app.sessions()
            pcm = speech_pcm(0.3, tmp_path)
            await send_audio(ws, pcm)
            frames = 0
            while (message := await recv(ws, timeout=10))["type"] != "error":
                frames += message["type"] == "frame"
            assert message["code"] == "session_expired"
            assert frames == len(pcm) // 2 // (RATE // 25)  # the windows complete so far
            await until_closed(ws)
            assert ws.close_code == 1000
        await wait_gone(listed["pid"])
        assert not session_folders(status["session_id"])
        stats = await app.stats()
        assert stats["sessions_expired"] == 1 and stats["sessions_active"] == 0
        # A socket that never sends init expires too.
        async with app.connect() as ws:
            await expect(ws, "status")
            await expect_error(ws, "session_expired", timeout=5)
            await until_closed(ws)


async def test_a_slow_reader_loses_frames_and_memory_stays_bounded(tmp_path: Path) -> None:
    queue = 4
    settings = stream_settings(tmp_path, stream_send_queue=queue)
    pcm = speech_pcm(4.0, tmp_path)
    total = expected_frames(pcm, 25.0)
    # A client that takes nothing off its socket while the frames are made, with small
    # buffers on both sides (the server's is the app's own socket: this test runs the app).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    async with stream_app(settings) as app:
        sock.connect(("127.0.0.1", app.port))
        async with app.connect(sock=sock, max_queue=1, compression=None) as ws:
            await init(ws)
            manager = app.manager
            (server_side,) = manager.sockets()
            server_socket = server_side.transport.get_extra_info("socket")
            server_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            await send_audio(ws, pcm, chunk_s=0.5)
            await app.wait_for(lambda: _frames_listed(app, total), what="every frame rendered")
            (listed,) = await app.sessions()
            assert listed["dropped"] > 0  # the frames the client could not take were dropped
            (subscription,) = manager.session(listed["session_id"])._subscriptions
            assert subscription.queued <= queue  # what waits for the client stays bounded
            await send(ws, {"type": "stop"})
            messages = await until_closed(ws, timeout=60)
        stats = await app.stats()
    frames = [m for m in messages if m["type"] == "frame"]
    (complete,) = [m for m in messages if m["type"] == "complete"]
    progress = [m for m in messages if m["type"] == "progress"]
    assert complete["total_frames"] == total
    assert complete["dropped"] == listed["dropped"] > 0
    assert len(frames) + complete["dropped"] == total  # every frame sent or counted
    assert progress[-1]["dropped"] == complete["dropped"]
    ids = [f["frame_id"] for f in frames]
    assert ids == sorted(ids) and ids[-1] == total - 1  # the newest frames are kept
    assert stats["dropped"] == complete["dropped"]


# --- failures stay in their session -----------------------------------------------------------


async def test_a_crashed_renderer_ends_only_its_own_session(tmp_path: Path) -> None:
    pcm = speech_pcm(0.6, tmp_path)
    async with stream_app(stream_settings(tmp_path)) as app:
        async with app.connect() as doomed, app.connect() as survivor:
            doomed_status, survivor_status = await asyncio.gather(init(doomed), init(survivor))
            pids = {s["session_id"]: s["pid"] for s in await app.sessions()}
            kill(pids[doomed_status["session_id"]], signal.SIGKILL)
            error = await expect_error(doomed, "renderer_crashed")
            assert "SIGKILL" in error["message"]
            await until_closed(doomed)
            assert doomed.close_code == 1011
            # The other session streams on.
            await send_audio(survivor, pcm)
            await send(survivor, {"type": "stop"})
            messages = await until_closed(survivor)
            frames = [m for m in messages if m["type"] == "frame"]
            assert len(frames) == expected_frames(pcm, 25.0)
            assert messages[-1]["type"] == "complete"
        assert not session_folders(doomed_status["session_id"])
        stats = await app.stats()
        assert stats["sessions_crashed"] == 1 and stats["sessions_completed"] == 1
        assert process_alive(pids[survivor_status["session_id"]]) is False


async def test_a_hung_renderer_is_killed_and_its_session_ends(tmp_path: Path) -> None:
    settings = stream_settings(tmp_path, stream_render_timeout_s=1.0)
    async with stream_app(settings) as app, app.connect() as ws:
        await init(ws)
        (listed,) = await app.sessions()
        kill(listed["pid"], signal.SIGSTOP)  # it hangs: alive, answering nothing
        await send_audio(ws, speech_pcm(0.2, tmp_path))
        await expect_error(ws, "render_timeout", timeout=10)
        await until_closed(ws)
        await wait_gone(listed["pid"])
        assert (await app.stats())["sessions_crashed"] == 1


async def test_a_closed_socket_frees_the_worker_and_its_files(tmp_path: Path) -> None:
    async with stream_app(stream_settings(tmp_path)) as app:
        async with app.connect() as ws:
            status = await init(ws)
            (listed,) = await app.sessions()
            await send_audio(ws, speech_pcm(0.3, tmp_path))
        await wait_gone(listed["pid"])
        await app.wait_for(lambda: _no_sessions(app), what="the session to end")
        assert not session_folders(status["session_id"])
        assert (await app.stats())["sessions_disconnected"] == 1


async def test_a_service_shutting_down_closes_its_streams(tmp_path: Path) -> None:
    async with stream_app(stream_settings(tmp_path)) as app, app.connect() as ws:
        await init(ws)
        (listed,) = await app.sessions()
        stopping = asyncio.create_task(app.client.close())
        await expect_error(ws, "server_shutdown")
        await until_closed(ws)
        assert ws.close_code == 1001  # going away
        await asyncio.wait_for(stopping, 30)
        await wait_gone(listed["pid"])


# --- sources, sizes, renderers ----------------------------------------------------------------


async def test_a_video_source_and_max_size(tmp_path: Path) -> None:
    video = write_video(
        tmp_path / "source.mp4",
        (np.full((96, 128, 3), 40 * k, dtype=np.uint8) for k in range(5)),
        fps=25,
    )
    async with stream_app(stream_settings(tmp_path)) as app, app.connect() as ws:
        status = await init(ws, source=video.read_bytes(), width=1280, height=720, max_size=640)
        assert (status["width"], status["height"]) == (640, 360)
        await send_audio(ws, b"\x00\x01" * 1600)
        frame = await expect(ws, "frame")
        assert jpeg_picture(frame["data"]).shape == (360, 640, 3)


async def test_meshwarp_streams_a_portrait_and_refuses_a_faceless_picture(tmp_path: Path) -> None:
    pcm = speech_pcm(1.0, tmp_path)
    async with stream_app(stream_settings(tmp_path)) as app, app.connect() as ws:
        await expect(ws, "status")
        await send(ws, init_message(png((320, 320), (30, 120, 200)), renderer="meshwarp"))
        await expect_error(ws, "no_face", timeout=60)  # the renderer's own code
        await send(ws, init_message(renderer="meshwarp", emo=[3, 4]))
        status = await expect(ws, "status", timeout=60)
        assert status["renderer"] == "meshwarp"
        await send_audio(ws, pcm, chunk_s=0.2)
        await send(ws, {"type": "stop"})
        messages = await until_closed(ws, timeout=60)
    frames = [m for m in messages if m["type"] == "frame"]
    assert [f["frame_id"] for f in frames] == list(range(expected_frames(pcm, 25.0)))
    pictures = [jpeg_picture(f["data"]) for f in frames]
    assert all(p.shape == (512, 512, 3) for p in pictures)
    # The mouth moves with the speech: the pictures are not all the same.
    assert max(float(np.abs(p.astype(int) - pictures[0]).mean()) for p in pictures) > 0.5


async def test_a_webrtc_offer_on_the_socket_is_answered(tmp_path: Path) -> None:
    aiortc = pytest.importorskip("aiortc")
    peer = aiortc.RTCPeerConnection()
    try:
        peer.addTransceiver("video", direction="recvonly")
        peer.addTransceiver("audio", direction="recvonly")
        await peer.setLocalDescription(await peer.createOffer())
        async with stream_app(stream_settings(tmp_path)) as app, app.connect() as ws:
            await init(ws)
            await send(ws, {"type": "webrtc_offer", "sdp": peer.localDescription.sdp})
            answer = await recv(ws, timeout=30)
            if answer.get("code") == "webrtc_unavailable":
                pytest.skip("control_api/streaming/webrtc.py is not there yet")
            assert answer["type"] == "webrtc_answer", answer
            assert answer["sdp"].startswith("v=0")
            assert "m=video" in answer["sdp"] and "m=audio" in answer["sdp"]
    finally:
        await peer.close()


# --- Ditto's emo ------------------------------------------------------------------------------

MESHWARP = ("neutral", "happy", "sad", "concerned", "surprised", "angry", "reassuring")


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (0, ("angry", 1.0)),
        (1, ("angry", 0.6)),
        (2, ("concerned", 1.0)),
        (3, ("happy", 1.0)),
        (4, ("neutral", 0.0)),
        (5, ("sad", 1.0)),
        (6, ("surprised", 1.0)),
        (7, ("angry", 0.4)),
    ],
)
def test_each_of_dittos_emotions_has_its_nearest_of_ours(
    index: int, expected: tuple[str, float]
) -> None:
    (weights,) = parse_emo(index).frames
    assert to_expression(weights, MESHWARP) == expected
    assert parse_emo(DITTO_EMOTIONS[index].lower()) == parse_emo(index)


def test_emo_mixes_weights_and_per_frame_lists() -> None:
    assert parse_emo(None) == parse_emo(4)  # Ditto's default: Neutral
    # Indices mixed in equal parts: the strongest share wins, at that share.
    (happy_neutral,) = parse_emo([3, 4]).frames
    assert to_expression(happy_neutral, MESHWARP) == ("happy", 0.5)
    (happy_sad,) = parse_emo([5, 3]).frames
    assert to_expression(happy_sad, MESHWARP) == ("happy", 0.5)  # a tie: our order decides
    # Eight weights (normalised).
    (weights,) = parse_emo([0, 0, 0, 2, 6, 0, 0, 0]).frames
    assert to_expression(weights, MESHWARP) == ("happy", 0.25)
    # Disgust and Angry add up on angry.
    (angry,) = parse_emo([1, 1, 0, 0, 0, 0, 0, 0]).frames
    assert to_expression(angry, MESHWARP) == ("angry", 0.8)
    # Per frame: the last entry holds after the list.
    emo = parse_emo([[3], [3], [0, 0, 0, 0, 0, 1, 0, 0], 6])
    assert emo.per_frame and len(emo.frames) == 4
    runs = plan_for(emo, MESHWARP)
    assert runs == (Run(0, "happy", 1.0), Run(2, "sad", 1.0), Run(3, "surprised", 1.0))
    assert [expression_at(runs, k) for k in (0, 1, 2, 3, 99)] == [
        ("happy", 1.0),
        ("happy", 1.0),
        ("sad", 1.0),
        ("surprised", 1.0),
        ("surprised", 1.0),
    ]
    assert parse_emo("Happy") == parse_emo(3) and parse_emo("surprised") == parse_emo(6)


def test_emo_falls_back_to_what_the_renderer_shows() -> None:
    fear = Emo((parse_emo(2).frames[0],))
    assert plan_for(fear, ("neutral", "happy", "sad")) == (Run(0, "sad", 1.0),)
    assert plan_for(fear, ("neutral", "happy")) == (Run(0, "neutral", 0.0),)
    assert plan_for(parse_emo(3), ()) == (Run(0, "neutral", 0.0),)  # no emotion control


@pytest.mark.parametrize(
    "value",
    [8, -1, 2.5, True, "joyful", [], [9], [0.1] * 8 + [0.1], [-1, 0, 0, 0, 0, 0, 0, 1], {"a": 1}],
)
def test_emo_that_is_none_of_dittos_forms_is_refused(value: object) -> None:
    with pytest.raises(EmoError) as error:
        parse_emo(value)
    assert "emo" in str(error.value)


def test_sources_are_told_apart_by_their_first_bytes(tmp_path: Path) -> None:
    assert sniff_source(DEFAULT_PORTRAIT.read_bytes()[:64]) == ("image", ".jpg")
    assert sniff_source(png()[:64]) == ("image", ".png")
    video = write_video(tmp_path / "v.mp4", [np.zeros((64, 64, 3), np.uint8)] * 2, fps=25)
    assert sniff_source(video.read_bytes()[:64]) == ("video", ".mp4")
    webm = write_video(
        tmp_path / "v.webm", [np.zeros((64, 64, 3), np.uint8)] * 2, fps=25, codec="libvpx"
    )
    assert sniff_source(webm.read_bytes()[:64]) == ("video", ".webm")
    assert sniff_source(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None
    assert sniff_source(json.dumps({"a": 1}).encode()) is None


def test_stream_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "AVATAR_STREAM_RENDERER": "testcard",
            "AVATAR_STREAM_RENDERERS": "meshwarp, wav2lip",
            "AVATAR_STREAM_MAX_SESSIONS": "3",
            "AVATAR_STREAM_IDLE_TIMEOUT_S": "5",
            "AVATAR_STREAM_RENDER_TIMEOUT_S": "12",
            "AVATAR_STREAM_FPS": "30",
            "AVATAR_STREAM_MAX_CHUNK_S": "2",
            "AVATAR_STREAM_MAX_AUDIO_S": "120",
            "AVATAR_STREAM_SEND_QUEUE": "10",
        }
    )
    assert settings.stream_allowed == ("testcard", "meshwarp", "wav2lip")
    assert (settings.stream_max_sessions, settings.stream_send_queue) == (3, 10)
    assert (settings.stream_idle_timeout_s, settings.stream_render_timeout_s) == (5.0, 12.0)
    assert (settings.stream_fps, settings.stream_max_chunk_s) == (30.0, 2.0)
    assert settings.stream_max_audio_s == 120.0
    defaults = Settings.from_env({})
    assert defaults.stream_renderer == "meshwarp" and defaults.stream_max_sessions == 2
    for bad in (
        {"AVATAR_STREAM_RENDERER": "nope"},
        {"AVATAR_STREAM_RENDERERS": "testcard,nope"},
        {"AVATAR_STREAM_MAX_SESSIONS": "0"},
        {"AVATAR_STREAM_FPS": "fast"},
    ):
        with pytest.raises(ConfigError) as error:
            Settings.from_env(bad)
        assert next(iter(bad)) in str(error.value)
