"""Shared pieces of the streaming tests (seed 004, control_api/streaming): an app on a loopback
port, a WebSocket client (the `websockets` package, as the seed's own client uses), audio, and
what the service's worker processes look like from outside."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import websockets
from aiohttp.test_utils import TestClient
from PIL import Image

from avatar_runtime.timeline import FrameTimeline
from control_api import Settings
from control_api.context import STREAMS
from renderers.bundled import DEFAULT_PORTRAIT
from tests.control_api_client import API_KEY, AUTH, make_settings, start_client
from tests.media import speech_like_audio

WS_PATH = "/api/v1/stream/ws"
RATE = 16000


def stream_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings of a test app that streams with the testcard renderer (about a millisecond a
    frame) and offers meshwarp besides."""
    values: dict[str, Any] = {
        "stream_renderer": "testcard",
        "stream_renderers": ("meshwarp",),
        "max_upload_bytes": 2 * 1024 * 1024,
    }
    values.update(overrides)
    return make_settings(tmp_path, **values)


@dataclass
class StreamApp:
    client: TestClient

    @property
    def port(self) -> int:
        port = self.client.server.port
        assert port is not None
        return port

    @property
    def manager(self) -> Any:
        """The app's StreamManager (this test runs the app in its own process)."""
        return self.client.app[STREAMS]

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{WS_PATH}"

    async def get(self, path: str) -> Any:
        response = await self.client.get(path, headers=AUTH)
        assert response.status == 200, await response.text()
        return await response.json()

    async def sessions(self) -> list[dict[str, Any]]:
        return list((await self.get("/api/v1/stream/sessions"))["sessions"])

    async def stats(self) -> dict[str, Any]:
        return dict(await self.get("/api/v1/stream/stats"))

    async def wait_for(self, predicate: Any, timeout: float = 15.0, what: str = "") -> Any:
        """Poll `await predicate()` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = await predicate()
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
            await asyncio.sleep(0.05)

    def connect(self, *, auth: bool = True, **kwargs: Any) -> Any:
        headers = {"X-API-Key": API_KEY} if auth else None
        kwargs.setdefault("max_size", None)
        return websockets.connect(self.ws_url, additional_headers=headers, **kwargs)


@asynccontextmanager
async def stream_app(settings: Settings) -> AsyncIterator[StreamApp]:
    client = await start_client(settings)
    try:
        yield StreamApp(client)
    finally:
        await client.close()


# --- messages ---------------------------------------------------------------------------------


async def recv(ws: Any, timeout: float = 20.0) -> dict[str, Any]:
    message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    assert isinstance(message, dict)
    return message


async def expect(ws: Any, kind: str, timeout: float = 20.0) -> dict[str, Any]:
    """The next message, which must be of type `kind`."""
    message = await recv(ws, timeout)
    assert message["type"] == kind, message
    return message


async def expect_error(ws: Any, code: str, timeout: float = 20.0) -> dict[str, Any]:
    message = await expect(ws, "error", timeout)
    assert message["code"] == code, message
    assert isinstance(message["message"], str) and message["message"], message
    return message


async def send(ws: Any, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def init(
    ws: Any, source: bytes | None = None, timeout: float = 30.0, **config: Any
) -> dict[str, Any]:
    """Connect's greeting, an init with `source` (the bundled portrait), its `status`."""
    greeting = await expect(ws, "status")
    assert greeting["session_id"]
    await send(ws, init_message(source, **config))
    status = await expect(ws, "status", timeout)
    assert status["message"] == "Session initialized. Ready for audio chunks.", status
    assert status["session_id"] == greeting["session_id"]
    return status


def init_message(source: bytes | None = None, **config: Any) -> dict[str, Any]:
    data = source if source is not None else DEFAULT_PORTRAIT.read_bytes()
    return {"type": "init", "source": b64(data), "config": config}


async def send_audio(ws: Any, pcm: bytes, chunk_s: float = 0.1, pace: float = 0.0) -> None:
    """`pcm` in audio_chunk messages of `chunk_s` seconds; `pace` 1.0: in real time."""
    step = int(RATE * chunk_s) * 2
    started = time.monotonic()
    for offset in range(0, len(pcm), step):
        if pace:
            due = started + offset / 2 / RATE / pace
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        await send(
            ws,
            {
                "type": "audio_chunk",
                "data": b64(pcm[offset : offset + step]),
                "timestamp": offset / 2 / RATE,
            },
        )


async def until_closed(ws: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every message until the server closes the socket."""
    messages = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "the socket was not closed"
            messages.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
    except websockets.ConnectionClosed:
        pass
    return messages


# --- media ------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def speech_pcm(seconds: float, folder: Path) -> bytes:
    """Syllable-like speech, PCM int16 mono at 16 kHz (the seed's audio format)."""
    samples = speech_like_audio(folder / f"speech-{seconds:g}.wav", seconds)
    return (samples * 32767).astype("<i2").tobytes()


def expected_frames(pcm: bytes, fps: float) -> int:
    """The frames that cover this audio: the last window padded with silence."""
    return FrameTimeline(RATE, fps).frames_covering(len(pcm) // 2)


def png(
    size: tuple[int, int] = (256, 256), rgb: tuple[int, int, int] = (0x88, 0x88, 0x88)
) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, rgb).save(out, "PNG")
    return out.getvalue()


def jpeg_picture(data: str) -> np.ndarray:
    """A frame's `data` (base64 JPEG) as an RGB array."""
    raw = base64.b64decode(data)
    assert raw[:3] == b"\xff\xd8\xff", "not a JPEG"
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


# --- processes --------------------------------------------------------------------------------


def process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie is gone for this purpose)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def session_folders(session_id: str) -> list[Path]:
    """The temporary folders of session `session_id` (session.py names them after it)."""
    return list(Path(tempfile.gettempdir()).glob(f"avatar-stream-{session_id[:12]}-*"))


async def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        assert time.monotonic() < deadline, f"worker {pid} still runs"
        await asyncio.sleep(0.05)


def kill(pid: int, sig: int) -> None:
    os.kill(pid, sig)
