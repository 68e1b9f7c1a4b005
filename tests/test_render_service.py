"""Seed 001's render service over real loopback HTTP against `python -m control_api`:
`POST /api/v1/render/frame` and `/batch` with meshwarp, the warm-up probe, every refusal's
code, the queue limit, a worker killed mid-request, health and metrics."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import signal
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from avatar_runtime import EMOTIONS
from control_api.errors import ApiError
from control_api.render_service.pool import RenderJob, RenderPool
from tests.control_api_client import make_settings
from tests.control_api_process import ControlApi
from tests.render_service_fixtures import (
    MAX_UPLOAD_BYTES,
    PORTRAIT,
    b64,
    grey_png,
    render_service,
    variant,
    worker_pids,
)

BACKGROUND = Path(__file__).resolve().parent.parent / (
    "avatar_runtime/assets/backgrounds/medical_office.jpg"
)
"""A photo without anyone in it."""


@pytest.fixture(scope="module")
def service() -> Iterator[ControlApi]:
    # One worker and one waiting request at most, so the queue limit is easy to reach; the
    # testcard offered besides meshwarp (a renderer without emotions).
    env = {
        "AVATAR_RENDER_SERVICE_WORKERS": "1",
        "AVATAR_RENDER_SERVICE_QUEUE": "1",
        "AVATAR_RENDER_SERVICE_RENDERERS": "testcard",
    }
    with render_service(env) as api:
        yield api


def post(api: ControlApi, route: str, **kwargs: Any) -> requests.Response:
    return requests.post(
        f"{api.base_url}/api/v1/render/{route}", headers=api.headers(), timeout=60, **kwargs
    )


def picture(result: dict[str, Any]) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(result["image"])))
    image.load()
    return image


def error_of(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    return error


def counter(api: ControlApi, name: str, **labels: str) -> float:
    text = requests.get(f"{api.base_url}/metrics", headers=api.headers(), timeout=10).text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{"):
            series, _, value = line.rpartition(" ")
            got = ",".join(sorted(series[len(name) + 1 : -1].split(",")))
            if got == wanted:
                return float(value)
    return 0.0


# --- health --------------------------------------------------------------------------------------


def test_health_says_ready_and_whether_a_gpu_is_there(service: ControlApi) -> None:
    for path in ("/health", "/api/v1/health"):
        health = requests.get(service.base_url + path, timeout=10).json()
        assert health["ready"] is True
        assert isinstance(health["gpuAvailable"], bool)
        assert health["render"]["state"] == "ready"
        assert health["render"]["renderer"] == "meshwarp"
        assert health["render"]["renderers"] == ["meshwarp", "testcard"]
        assert health["render"]["workersUp"] == 1
        assert {"status", "version", "livekit", "renderers", "gpu"} <= set(health)


# --- renders ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "size", "kind"),
    [
        ("png", (512, 512), "PNG"),
        ("jpeg", (320, 240), "JPEG"),
        ("webp", (256, 256), "WEBP"),
        ("jpeg", (64, 412), "JPEG"),  # far taller than wide: the face is framed smaller
    ],
)
def test_a_frame_in_each_format_has_the_size_asked_for(
    service: ControlApi, fmt: str, size: tuple[int, int], kind: str
) -> None:
    width, height = size
    body = {
        "image": b64(PORTRAIT.read_bytes()),
        "emotion": "happy",
        "intensity": 0.8,
        "format": fmt,
        "width": width,
        "height": height,
    }
    answer = post(service, "frame", json=body)
    assert answer.status_code == 200, answer.text[:300]
    result = answer.json()
    image = picture(result)
    assert image.format == kind and image.size == size
    assert result["format"] == fmt
    assert result["metadata"] == {
        **result["metadata"],
        "emotion": "happy",
        "intensity": 0.8,
        "renderer": "meshwarp",
        "width": width,
        "height": height,
        "format": fmt,
    }
    assert 0 < result["latencyMs"] < 30_000
    assert "warmup" not in result["metadata"]


def test_neutral_and_happy_differ_and_multipart_works_too(service: ControlApi) -> None:
    frames = {}
    for emotion in ("neutral", "happy"):
        answer = post(
            service,
            "frame",
            files={"image": ("portrait.jpg", PORTRAIT.read_bytes(), "image/jpeg")},
            data={"emotion": emotion, "intensity": "1", "width": "256", "height": "256"},
        )
        assert answer.status_code == 200, answer.text[:300]
        frames[emotion] = np.asarray(picture(answer.json()).convert("RGB"), dtype=np.int16)
    assert frames["neutral"].shape == (256, 256, 3)
    changed = np.abs(frames["neutral"] - frames["happy"]).max(axis=2) > 12
    assert changed.sum() > 300, changed.sum()  # the mouth corners, cheeks and eyes move
    assert changed.mean() < 0.25  # and the rest of the picture does not


def test_a_batch_answers_in_order_and_analyses_the_portrait_once(service: ControlApi) -> None:
    portrait = variant(1)
    misses = counter(service, "avatar_render_portraits_total", renderer="meshwarp", cache="miss")
    emotions = list(reversed(EMOTIONS))
    answer = post(
        service,
        "batch",
        json={
            "image": b64(portrait),
            "emotions": emotions,
            "format": "jpeg",
            "width": 256,
            "height": 256,
        },
    )
    assert answer.status_code == 200, answer.text[:300]
    batch = answer.json()
    assert [r["metadata"]["emotion"] for r in batch["results"]] == emotions
    assert [r["metadata"]["analysed"] for r in batch["results"]] == [True] + [False] * 6
    assert all(picture(r).size == (256, 256) for r in batch["results"])
    assert batch["latencyMs"] >= sum(r["latencyMs"] for r in batch["results"]) * 0.9
    assert (
        counter(service, "avatar_render_portraits_total", renderer="meshwarp", cache="miss")
        == misses + 1
    )
    # The same portrait again: found in the worker's cache.
    again = post(
        service,
        "frame",
        json={
            "image": b64(portrait),
            "emotion": "sad",
            "format": "jpeg",
            "width": 256,
            "height": 256,
        },
    )
    assert again.status_code == 200
    assert again.json()["metadata"]["analysed"] is False
    assert again.json()["metadata"]["timings"]["analyseMs"] == 0


def test_seed_warmup_with_a_grey_image_succeeds(service: ControlApi) -> None:
    answer = post(service, "frame", json={"image": b64(grey_png()), "emotion": "neutral"})
    assert answer.status_code == 200, answer.text[:300]
    result = answer.json()
    assert result["metadata"]["warmup"] is True
    image = picture(result)
    assert image.format == "PNG" and image.size == (512, 512)
    assert np.asarray(image.convert("RGB")).std() < 1
    # At another size and format the probe answers in those.
    small = post(
        service,
        "frame",
        data={"format": "webp", "width": "128", "height": "96"},
        files={"image": ("g.png", grey_png(64), "image/png")},
    )
    assert small.status_code == 200 and picture(small.json()).size == (128, 96)


def test_another_offered_renderer_renders_what_it_can_show(service: ControlApi) -> None:
    body = {
        "image": b64(PORTRAIT.read_bytes()),
        "renderer": "testcard",
        "width": 128,
        "height": 128,
        "format": "jpeg",
    }
    answer = post(service, "frame", json=body)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["metadata"]["renderer"] == "testcard"
    assert picture(answer.json()).size == (128, 128)
    # It has no emotion control: only neutral, said so.
    refused = error_of(
        post(service, "batch", json={**body, "emotions": ["neutral", "happy"]}),
        422,
        "emotion_not_supported",
    )
    assert refused["valid"] == ["neutral"]
    text = requests.get(f"{service.base_url}/metrics", headers=service.headers(), timeout=10).text
    assert 'liveportrait_requests_total{endpoint="frame",renderer="testcard"} 1.0' in text


def test_a_photo_without_a_face_is_no_face(service: ControlApi) -> None:
    answer = post(service, "frame", json={"image": b64(BACKGROUND.read_bytes())})
    error_of(answer, 422, "no_face")
    batch = post(
        service, "batch", json={"image": b64(BACKGROUND.read_bytes()), "emotions": ["happy", "sad"]}
    )
    error_of(batch, 422, "no_face")


# --- refusals ------------------------------------------------------------------------------------


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, and a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def test_every_bad_input_is_a_4xx_with_its_code(service: ControlApi) -> None:
    portrait = b64(PORTRAIT.read_bytes())
    corrupt = b"\x89PNG\r\n\x1a\n" + os.urandom(2000)
    error_of(post(service, "frame", json={"image": b64(corrupt)}), 422, "invalid_image")
    error_of(post(service, "frame", json={"image": "not base64!"}), 422, "invalid_image")
    error_of(
        post(service, "frame", json={"image": b64(b"GIF89a" + bytes(64))}), 422, "invalid_image"
    )
    error_of(
        post(service, "frame", files={"image": ("x.png", corrupt, "image/png")}),
        422,
        "invalid_image",
    )
    unknown = error_of(
        post(service, "frame", json={"image": portrait, "emotion": "joyful"}),
        422,
        "invalid_emotion",
    )
    assert unknown["valid"] == list(EMOTIONS)
    error_of(
        post(service, "batch", json={"image": portrait, "emotions": ["happy", "glee"]}),
        422,
        "invalid_emotion",
    )
    # Too many bytes: inline and as an upload; too many pixels: from the header alone.
    too_big = b"\xff\xd8\xff" + bytes(MAX_UPLOAD_BYTES)
    error_of(post(service, "frame", json={"image": b64(too_big)}), 413, "payload_too_large")
    error_of(
        post(service, "frame", files={"image": ("big.jpg", too_big, "image/jpeg")}),
        413,
        "payload_too_large",
    )
    bomb = b64(_png_claiming(50_000, 50_000))
    error_of(post(service, "frame", json={"image": bomb}), 413, "image_too_large")
    error_of(
        post(service, "batch", json={"image": portrait, "emotions": ["happy"] * 17}),
        422,
        "too_many_emotions",
    )
    error_of(post(service, "batch", json={"image": portrait, "emotions": []}), 422, "invalid_field")
    invalid = error_of(
        post(service, "frame", json={"image": portrait, "format": "gif"}), 422, "invalid_format"
    )
    assert invalid["valid"] == ["png", "jpeg", "webp"]
    for size in (63, 1025, 0, -5, 12.5, "big", True):
        error_of(
            post(service, "frame", json={"image": portrait, "width": size}), 422, "invalid_size"
        )
    error_of(
        post(
            service,
            "frame",
            data={"height": "2000"},
            files={"image": ("p.jpg", PORTRAIT.read_bytes(), "image/jpeg")},
        ),
        422,
        "invalid_size",
    )
    error_of(
        post(service, "frame", json={"image": portrait, "intensity": 1.5}), 422, "invalid_intensity"
    )
    error_of(
        post(service, "frame", json={"image": portrait, "renderer": "wav2lip"}),
        422,
        "renderer_not_allowed",
    )
    error_of(
        post(service, "frame", json={"image": portrait, "renderer": "nope"}),
        422,
        "invalid_renderer",
    )
    error_of(
        post(service, "frame", json={"image": portrait, "colour": "red"}), 422, "invalid_field"
    )
    error_of(post(service, "frame", json={}), 422, "invalid_field")
    error_of(post(service, "frame", data=b"{not json"), 400, "invalid_json")
    unauthenticated = requests.post(
        f"{service.base_url}/api/v1/render/frame", json={"image": portrait}, timeout=10
    )
    error_of(unauthenticated, 401, "unauthorized")


def test_metrics_carry_the_seed_names(service: ControlApi) -> None:
    post(service, "frame", json={"image": b64(PORTRAIT.read_bytes()), "emotion": "nope"})
    text = requests.get(f"{service.base_url}/metrics", headers=service.headers(), timeout=10).text
    assert 'liveportrait_requests_total{endpoint="frame",renderer="meshwarp"}' in text
    assert 'liveportrait_request_duration_seconds_bucket{endpoint="frame",le="0.1",' in text
    assert 'liveportrait_errors_total{code="invalid_emotion",renderer="meshwarp"}' in text
    assert "avatar_render_ready 1.0" in text


# --- load and faults (last: they leave the worker busy or new) ----------------------------------


def _slow_batch(api: ControlApi, seed: int) -> requests.Response:
    """A batch that keeps the worker busy for a second or more: a portrait it has not seen
    (analysed first) in every emotion, as PNG, at the largest size."""
    body = {
        "image": b64(variant(seed)),
        "emotions": list(EMOTIONS) * 2,
        "width": 1024,
        "height": 1024,
    }
    return post(api, "batch", json=body)


def _in_threads(*calls: Any) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as error:  # shown by the assertion that uses it
            results[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_a_full_queue_is_503_render_busy_with_retry_after(service: ControlApi) -> None:
    answers = _in_threads(*(lambda i=i: _slow_batch(service, 100 + i) for i in range(4)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200, 503, 503], [a.text[:200] for a in answers]
    for refused in (a for a in answers if a.status_code == 503):
        error_of(refused, 503, "render_busy")
        assert refused.headers["Retry-After"] == "1"
    assert (
        counter(service, "liveportrait_errors_total", renderer="meshwarp", code="render_busy") >= 2
    )


def test_a_worker_killed_mid_request_is_replaced(service: ControlApi) -> None:
    (pid,) = worker_pids(service)
    results: list[requests.Response] = []
    in_flight = threading.Thread(target=lambda: results.append(_slow_batch(service, 200)))
    in_flight.start()
    deadline = time.monotonic() + 20
    while requests.get(f"{service.base_url}/health", timeout=10).json()["render"]["busy"] < 1:
        assert time.monotonic() < deadline, "the batch never reached the worker"
        time.sleep(0.02)
    # Another request waits for the worker meanwhile: the replacement serves it.
    waiting: list[requests.Response] = []
    queued = threading.Thread(
        target=lambda: waiting.append(
            post(service, "frame", json={"image": b64(PORTRAIT.read_bytes()), "emotion": "sad"})
        )
    )
    queued.start()
    while requests.get(f"{service.base_url}/health", timeout=10).json()["render"]["queued"] < 1:
        assert time.monotonic() < deadline, "the second request never queued"
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    in_flight.join(timeout=60)
    queued.join(timeout=60)
    crashed = error_of(results[0], 503, "renderer_crashed")
    assert crashed["retryable"] is True and results[0].headers["Retry-After"]
    assert "killed by SIGKILL" in crashed["message"]
    assert waiting[0].status_code == 200, waiting[0].text[:300]
    assert waiting[0].json()["metadata"]["emotion"] == "sad"
    # Replaced and warmed again; the next request is served by the new worker.
    deadline = time.monotonic() + 60
    while not requests.get(f"{service.base_url}/health", timeout=10).json()["ready"]:
        assert time.monotonic() < deadline, "no new worker"
        time.sleep(0.1)
    (new_pid,) = worker_pids(service)
    assert new_pid != pid
    # The portrait file it was loading is removed with it.
    assert not list(Path(tempfile.gettempdir()).glob(f"render-portrait-{pid}-*"))
    answer = post(service, "frame", json={"image": b64(PORTRAIT.read_bytes()), "format": "jpeg"})
    assert answer.status_code == 200, answer.text[:300]
    health = requests.get(f"{service.base_url}/health", timeout=10).json()
    assert health["render"]["crashes"] == 1


# --- the pool on its own --------------------------------------------------------------------------


def _job(image: bytes) -> RenderJob:
    return RenderJob("meshwarp", 128, 128, ("happy",), 0.7, "jpeg", image, "x" * 64)


async def test_a_worker_that_cannot_start_is_503_render_unavailable(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, render_service_warmup=True)
    pool = RenderPool(settings, command=(sys.executable, "-c", "import sys; sys.exit(3)"))
    await pool.start()
    try:
        with pytest.raises(ApiError) as refused:
            await pool.render(_job(PORTRAIT.read_bytes()))
        assert (refused.value.status, refused.value.code) == (503, "render_unavailable")
        assert "exit code 3" in refused.value.message
        assert refused.value.headers["Retry-After"]
        assert pool.status()["ready"] is False and pool.status()["error"]
    finally:
        await pool.close()


async def test_a_renderer_that_cannot_load_is_not_ready_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AVATAR_MODELS_DIR", str(tmp_path / "no-models"))  # meshwarp's are gone
    pool = RenderPool(make_settings(tmp_path, render_service_warmup=True))
    await pool.start()
    try:
        for _ in range(300):
            if pool.status()["state"] != "warming":
                break
            await asyncio.sleep(0.05)
        status = pool.status()
        assert status["ready"] is False and status["state"] == "failed", status
        assert status["error"]["code"] == "renderer_unavailable"
        with pytest.raises(ApiError) as refused:
            await pool.render(_job(PORTRAIT.read_bytes()))
        assert (refused.value.status, refused.value.code) == (503, "renderer_unavailable")
        assert "download-files" in refused.value.message  # what to do about it
    finally:
        await pool.close()
