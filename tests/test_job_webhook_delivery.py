"""Webhooks of finished jobs through the control API: delivered to a real loopback receiver,
signed (the signature verifies with the configured secret), retried with backoff after a 500
under one event id, for renders and for RunPod jobs."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from control_api.jobs.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, verify_webhook
from tests.control_api_client import AUTH, start_client
from tests.job_fixtures import FileServer, eventually, job_settings
from tests.loopback_http import QuietHandler, serving
from tests.media import speech_like_audio

SECRET = "test-webhook-secret-0123456789"


@dataclass
class Receiver:
    fail_first: int = 0
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(fail_first=1)

    class Handler(QuietHandler):
        def do_POST(self) -> None:  # noqa: N802 (stdlib's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with state.lock:
                state.calls.append((dict(self.headers), body))
                failing = len(state.calls) <= state.fail_first
            self.send_body(500 if failing else 200, b"no" if failing else b"ok")

    with serving(Handler) as base_url:
        state.url = base_url + "/hook"
        yield state


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    c = await start_client(job_settings(tmp_path, webhook_backoff_s=0.3, webhook_secret=SECRET))
    yield c
    await c.close()


async def test_render_webhook_is_signed_and_retried_after_a_500(
    client: TestClient, receiver: Receiver, tmp_path: Path
) -> None:
    speech_like_audio(tmp_path / "a.wav", 1.0)
    with FileServer().running() as files:
        audio_url = files.add("/a.wav", tmp_path / "a.wav")
        resp = await client.post(
            "/api/v1/renders",
            json={"avatar_id": "astronaut", "audio_url": audio_url, "webhook_url": receiver.url},
            headers=AUTH,
        )
        request_id = (await resp.json())["request_id"]

        async def delivered() -> dict | None:
            resp = await client.get(f"/api/v1/internal/avatar/jobs/{request_id}", headers=AUTH)
            job = await resp.json()
            return job if job.get("webhook", {}).get("state") == "delivered" else None

        job = await eventually(delivered, timeout=60)
    assert job["webhook"]["attempts"] == 2 and job["status"] == "completed"
    assert len(receiver.calls) == 2
    (first_headers, _first_body), (headers, body) = receiver.calls
    assert headers[EVENT_ID_HEADER] == first_headers[EVENT_ID_HEADER]
    assert verify_webhook(body, headers[SIGNATURE_HEADER], SECRET.encode())
    assert not verify_webhook(body, headers[SIGNATURE_HEADER], b"another-secret")
    assert not verify_webhook(body + b" ", headers[SIGNATURE_HEADER], SECRET.encode())
    payload = json.loads(body)
    assert payload["request_id"] == request_id and payload["status"] == "OK"
    assert set(payload["payload"]) == {"video", "duration"}
    video = await client.session.get(payload["payload"]["video"]["url"])
    assert video.status == 200 and video.headers["Content-Type"] == "video/mp4"
    logs = [line["message"] for line in job["logs"]]
    assert any("webhook failed (webhook receiver answered HTTP 500" in m for m in logs)


async def test_runpod_webhook_gets_the_status_body(client: TestClient, receiver: Receiver) -> None:
    receiver.fail_first = 0
    job = {"video_url": "http://127.0.0.1:9/v.mp4", "avatar_id": "w1", "model": "sadtalker"}
    resp = await client.post("/run", json={"input": job, "webhook": receiver.url}, headers=AUTH)
    job_id = (await resp.json())["id"]

    async def one_call() -> bool:
        return len(receiver.calls) == 1

    await eventually(one_call, timeout=30)
    headers, body = receiver.calls[0]
    assert verify_webhook(body, headers[SIGNATURE_HEADER], SECRET.encode())
    payload = json.loads(body)
    assert payload["id"] == job_id and payload["status"] == "COMPLETED"
    assert payload["output"]["status"] == "error"
    assert payload["output"]["error"].startswith("Unsupported model: sadtalker")
