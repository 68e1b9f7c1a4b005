"""Seed 003's offline renders end to end over loopback HTTP: upload the portrait and the speech
through the file endpoint, submit, poll the status with logs, fetch the result and download the
MP4 by its signed link (with a Range request), through both our paths and the seed's own."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import av
import numpy as np
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from PIL import Image

from tests.control_api_client import AUTH, assert_error, start_client
from tests.job_fixtures import eventually, job_settings
from tests.media import astronaut_head, speech_like_audio

AUDIO_S = 1.6


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    c = await start_client(job_settings(tmp_path, jobs_max_upload_bytes=2_000_000))
    yield c
    await c.close()


def _portrait_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(astronaut_head()).save(buffer, format="PNG")
    return buffer.getvalue()


async def _upload(client: TestClient, path: str, name: str, data: bytes) -> str:
    form = FormData()
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    resp = await client.post(path, data=form, headers=AUTH)
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert set(body) == {"url"}
    return body["url"]


def _read_mp4(data: bytes) -> tuple[float, float, int, list[np.ndarray]]:
    """(video duration, audio duration, audio rate, frames as gray arrays)."""
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        frames, samples, rate = [], 0, audio.rate
        for packet in container.demux(video, audio):
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    frames.append(frame.to_ndarray(format="gray"))
                else:
                    samples += frame.samples
        fps = float(video.average_rate)  # while open: PyAV 18.1.1 refuses it after close
    return len(frames) / fps, samples / rate, rate, frames


async def _finished(client: TestClient, request_id: str) -> dict:
    async def done() -> dict | None:
        resp = await client.get(f"/api/v1/renders/{request_id}/status?logs=1", headers=AUTH)
        body = await resp.json()
        return body if body["status"] in ("COMPLETED", "FAILED") else None

    return await eventually(done, timeout=90)


async def test_render_from_uploaded_image_and_audio(client: TestClient, tmp_path: Path) -> None:
    speech_like_audio(tmp_path / "speech.wav", AUDIO_S)
    image_url = await _upload(client, "/api/v1/files", "me.png", _portrait_png())
    audio_url = await _upload(
        client, "/api/v1/files", "speech.wav", (tmp_path / "speech.wav").read_bytes()
    )
    # The upload links work without an API key, and only with their signature.
    image = await client.session.get(image_url)
    assert image.status == 200 and await image.read() == _portrait_png()
    assert image.headers["Content-Type"] == "image/png"
    assert (await client.session.get(image_url.split("?")[0])).status == 403
    tampered = image_url.replace("me.png", "me2.png")
    assert (await client.session.get(tampered)).status == 403

    resp = await client.post(
        "/api/v1/renders",
        json={"image_url": image_url, "audio_url": audio_url, "emotion": "happy", "prompt": "hi"},
        headers=AUTH,
    )
    assert resp.status == 202
    request_id = (await resp.json())["request_id"]
    early = await client.get(f"/api/v1/renders/{request_id}", headers=AUTH)
    if early.status == 409:  # still queued or running
        assert_error(await early.json(), "not_ready")

    status = await _finished(client, request_id)
    assert status["status"] == "COMPLETED", status
    assert status["progress"] == 1 and status["queue_position"] is None
    messages = [line["message"] for line in status["logs"]]
    assert any(m.startswith("rendered ") for m in messages), messages
    assert all(line["timestamp"].endswith("Z") for line in status["logs"])

    resp = await client.get(f"/api/v1/renders/{request_id}", headers=AUTH)
    assert resp.status == 200
    result = await resp.json()
    assert set(result) == {"video", "duration"} and set(result["video"]) == {"url"}
    assert result["duration"] == pytest.approx(AUDIO_S, abs=1 / 30)

    # The video link: no API key, MP4 content type, Range requests answered.
    video_url = result["video"]["url"]
    assert video_url.startswith(str(client.make_url("/files/")))
    download = await client.session.get(video_url)
    assert download.status == 200 and download.headers["Content-Type"] == "video/mp4"
    data = await download.read()
    ranged = await client.session.get(video_url, headers={"Range": "bytes=0-99"})
    assert ranged.status == 206 and await ranged.read() == data[:100]
    assert ranged.headers["Content-Range"] == f"bytes 0-99/{len(data)}"

    video_s, audio_s, _rate, frames = _read_mp4(data)
    assert video_s == pytest.approx(AUDIO_S, abs=1 / 30)
    assert audio_s == pytest.approx(AUDIO_S, abs=0.05)
    # The face moves with the speech: consecutive frames differ, somewhere.
    gray = np.stack(frames).astype(np.int16)
    changes = np.abs(np.diff(gray, axis=0)).mean(axis=(1, 2))
    assert max(changes) > 0.5


async def test_seed_alias_paths_render_a_catalog_avatar(client: TestClient, tmp_path: Path) -> None:
    speech_like_audio(tmp_path / "speech.wav", 1.0)
    audio_url = await _upload(
        client, "/api/generate/upload-file", "speech.wav", (tmp_path / "speech.wav").read_bytes()
    )
    resp = await client.post(
        "/api/generate/kling-avatar/submit",
        json={"avatar_id": "astronaut", "audio_url": audio_url},
        headers=AUTH,
    )
    assert resp.status == 202
    request_id = (await resp.json())["request_id"]

    async def completed() -> dict | None:
        resp = await client.post(
            "/api/generate/kling-avatar/status",
            json={"request_id": request_id, "logs": True},
            headers=AUTH,
        )
        assert resp.status == 200
        body = await resp.json()
        return body if body["status"] == "COMPLETED" else None

    status = await eventually(completed, timeout=90)
    assert status["request_id"] == request_id and status["logs"]
    resp = await client.post(
        "/api/generate/kling-avatar/result", json={"request_id": request_id}, headers=AUTH
    )
    result = await resp.json()
    assert result["duration"] == pytest.approx(1.0, abs=1 / 30)
    video = await client.session.get(result["video"]["url"])
    assert video.status == 200 and (await video.read())[4:8] == b"ftyp"


async def test_render_input_errors(client: TestClient) -> None:
    cases = [
        ({"audio_url": "http://127.0.0.1/a.wav"}, "invalid_field"),  # no image or avatar
        ({"avatar_id": "astronaut"}, "invalid_field"),  # no audio
        ({"avatar_id": "nobody", "audio_url": "http://h/a.wav"}, "invalid_avatar"),
        ({"avatar_id": "astronaut", "audio_url": "ftp://h/a.wav"}, "invalid_field"),
        ({"avatar_id": "astronaut", "audio_url": "http://h/a", "emotion": "x"}, "invalid_emotion"),
        (
            {"avatar_id": "astronaut", "audio_url": "http://h/a", "renderer": "x"},
            "invalid_renderer",
        ),
        ({"avatar_id": "astronaut", "audio_url": "http://h/a", "intensity": 2}, "invalid_field"),
        ({"avatar_id": "astronaut", "audio_url": "http://h/a", "extra": 1}, "invalid_field"),
    ]
    for body, code in cases:
        resp = await client.post("/api/v1/renders", json=body, headers=AUTH)
        assert resp.status == 422, body
        assert_error(await resp.json(), code)
    resp = await client.get("/api/v1/renders/unknown/status", headers=AUTH)
    assert resp.status == 404
    assert_error(await resp.json(), "render_not_found")


async def test_a_render_that_cannot_succeed_fails_once_with_the_reason(
    client: TestClient,
) -> None:
    # A URL the policy refuses (a link-local address) is an input error: no retries.
    resp = await client.post(
        "/api/v1/renders",
        json={"avatar_id": "astronaut", "audio_url": "http://169.254.169.254/latest/meta-data"},
        headers=AUTH,
    )
    request_id = (await resp.json())["request_id"]
    status = await _finished(client, request_id)
    assert status["status"] == "FAILED" and status["attempts"] == 1
    assert "could not fetch the audio" in status["error"]


async def test_upload_limits(client: TestClient) -> None:
    form = FormData()
    form.add_field("file", b"x" * 2_100_000, filename="big.bin")
    resp = await client.post("/api/v1/files", data=form, headers=AUTH)
    assert resp.status == 413
    assert_error(await resp.json(), "payload_too_large")
    resp = await client.post("/api/v1/files", json={"file": "x"}, headers=AUTH)
    assert resp.status == 415
    form = FormData()
    form.add_field("other", b"abc", filename="a.bin")
    resp = await client.post("/api/v1/files", data=form, headers=AUTH)
    assert resp.status == 422
