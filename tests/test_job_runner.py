"""The job supervisor through the real control API on loopback: worker processes, the
concurrency cap, cancel (pending and running), timeouts, a killed worker, retries with backoff,
the internal endpoints and auth. Jobs are held in their download stage by a loopback file server
the test controls, so each takes exactly as long as the test needs."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from tests.control_api_client import AUTH, assert_error, start_client
from tests.job_fixtures import FileServer, eventually, job_settings
from tests.media import speech_like_audio

INTERNAL = "/api/v1/internal/avatar/jobs"


@pytest.fixture
def files() -> Iterator[FileServer]:
    with FileServer().running() as server:
        yield server


@pytest.fixture
def audio(tmp_path: Path) -> Path:
    path = tmp_path / "speech.wav"
    speech_like_audio(path, 1.0)
    return path


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    c = await start_client(job_settings(tmp_path, jobs_concurrency=2))
    yield c
    await c.close()


async def _submit_render(client: TestClient, audio_url: str) -> str:
    resp = await client.post(
        "/api/v1/renders", json={"avatar_id": "astronaut", "audio_url": audio_url}, headers=AUTH
    )
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["status"] == "IN_QUEUE"
    return body["request_id"]


async def _job(client: TestClient, job_id: str) -> dict:
    resp = await client.get(f"{INTERNAL}/{job_id}", headers=AUTH)
    assert resp.status == 200
    return await resp.json()


async def _queue(client: TestClient) -> dict:
    resp = await client.get(f"{INTERNAL}/status", headers=AUTH)
    assert resp.status == 200
    return await resp.json()


async def test_concurrency_cap_holds_and_cancel_works_pending_and_running(
    client: TestClient, files: FileServer, audio: Path
) -> None:
    held = [files.hold(f"/held-{n}.wav", audio) for n in range(3)]
    ids = [await _submit_render(client, url) for url, _ in held]

    async def two_running() -> dict | None:
        queue = await _queue(client)
        return queue if queue["running"] == 2 else None

    queue = await eventually(two_running)
    assert queue["pending"] == 1 and queue["max_concurrent"] == 2
    # The third waits for a slot, first in line; it stays so while the two are held.
    details = [await _job(client, job_id) for job_id in ids]
    assert [d["status"] for d in details].count("processing") == 2
    waiting = next(d for d in details if d["status"] == "pending")
    assert waiting["queue_position"] == 0 and waiting["attempts"] == 0
    status = await client.get(f"/api/v1/renders/{waiting['job_id']}/status", headers=AUTH)
    assert (await status.json())["queue_position"] == 0

    # Cancel the pending one: it never runs.
    resp = await client.post(f"/api/v1/renders/{waiting['job_id']}/cancel", headers=AUTH)
    assert (await resp.json())["status"] == "CANCELLED"

    # Cancel a running one: its worker process is killed.
    running = next(d for d in details if d["status"] == "processing")
    pid = client.app[_jobs_key()].runner.worker_pid(running["job_id"])
    assert pid is not None and _alive(pid)
    resp = await client.post(f"/api/v1/renders/{running['job_id']}/cancel", headers=AUTH)
    assert (await resp.json())["status"] == "CANCELLED"
    await eventually(lambda: _async(not _alive(pid)), timeout=10)
    final = await _job(client, running["job_id"])
    assert final["status"] == "cancelled" and final["attempts"] == 1
    assert (await _job(client, waiting["job_id"]))["attempts"] == 0

    result = await client.get(f"/api/v1/renders/{running['job_id']}", headers=AUTH)
    assert_error(await result.json(), "render_cancelled")
    queue = await _queue(client)
    assert queue["cancelled"] == 2 and queue["running"] == 1


async def test_timeout_kills_the_worker_with_the_seed_message(
    tmp_path: Path, files: FileServer, audio: Path
) -> None:
    client = await start_client(job_settings(tmp_path, jobs_timeout_s=1.5, jobs_max_retries=1))
    try:
        url, _gate = files.hold("/slow.wav", audio)
        job_id = await _submit_render(client, url)

        async def failed() -> dict | None:
            job = await _job(client, job_id)
            return job if job["status"] == "failed" else None

        job = await eventually(failed, timeout=40)
        assert job["error"] == "Processing timed out after 1.5 seconds"
        assert job["attempts"] == 2  # timeouts are retried, then the job fails
        status = await client.get(f"/api/v1/renders/{job_id}/status", headers=AUTH)
        body = await status.json()
        assert body["status"] == "FAILED" and body["error"] == job["error"]
        result = await client.get(f"/api/v1/renders/{job_id}", headers=AUTH)
        assert result.status == 422
        assert assert_error(await result.json(), "render_failed")["message"] == job["error"]
    finally:
        await client.close()


async def test_killed_worker_is_retried_and_retry_endpoint_requeues(
    tmp_path: Path, files: FileServer, audio: Path
) -> None:
    client = await start_client(job_settings(tmp_path, jobs_max_retries=1))
    try:
        url, gate = files.hold("/held.wav", audio)
        job_id = await _submit_render(client, url)
        runner = client.app[_jobs_key()].runner

        first = await eventually(lambda: _async(runner.worker_pid(job_id)))
        os.kill(first, signal.SIGKILL)

        async def second_attempt() -> int | None:
            pid = runner.worker_pid(job_id)
            return pid if pid and pid != first else None

        await eventually(second_attempt, timeout=20)
        job = await _job(client, job_id)
        assert job["attempts"] == 2 and job["status"] == "processing"
        messages = [line["message"] for line in job["logs"]]
        assert any("Worker crashed unexpectedly (killed by SIGKILL)" in m for m in messages)

        os.kill(runner.worker_pid(job_id), signal.SIGKILL)

        async def failed() -> dict | None:
            job = await _job(client, job_id)
            return job if job["status"] == "failed" else None

        job = await eventually(failed, timeout=20)
        assert job["error"] == "Worker crashed unexpectedly (killed by SIGKILL)"

        # Retry: failed -> pending, runs again (and this time the download goes through).
        gate.set()
        resp = await client.post(f"{INTERNAL}/{job_id}/retry", headers=AUTH)
        assert resp.status == 200
        assert (await resp.json())["status"] in ("pending", "processing")
        again = await client.post(f"{INTERNAL}/{job_id}/retry", headers=AUTH)
        assert again.status == 409
        assert_error(await again.json(), "job_not_retryable")
        assert (await _job(client, job_id))["max_attempts"] == 4
    finally:
        await client.close()


async def test_internal_endpoints_need_credentials_and_know_unknown_ids(
    client: TestClient,
) -> None:
    for method, path in [
        ("GET", f"{INTERNAL}/status"),
        ("GET", f"{INTERNAL}/abc"),
        ("POST", f"{INTERNAL}/abc/retry"),
        ("POST", "/api/v1/renders"),
        ("GET", "/api/v1/renders/abc/status"),
        ("GET", "/api/v1/renders/abc"),
        ("POST", "/api/v1/files"),
        ("POST", "/run"),
        ("POST", "/runsync"),
        ("GET", "/status/abc"),
        ("POST", "/cancel/abc"),
        ("POST", "/v2/endpoint-1/runsync"),
        ("POST", "/api/generate/kling-avatar/submit"),
        ("POST", "/api/generate/upload-file"),
    ]:
        resp = await client.request(method, path)
        assert resp.status == 401, (method, path)
        assert_error(await resp.json(), "unauthorized")
    resp = await client.get(f"{INTERNAL}/nope", headers=AUTH)
    assert resp.status == 404
    assert_error(await resp.json(), "job_not_found")
    resp = await client.post(f"{INTERNAL}/nope/retry", headers=AUTH)
    assert resp.status == 404


def _jobs_key():  # noqa: ANN202
    from control_api.context import JOBS

    return JOBS


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


async def _async(value):  # noqa: ANN001, ANN202
    return value


async def test_metrics_count_jobs_queue_depth_and_durations(client: TestClient) -> None:
    resp = await client.post(
        "/api/v1/renders",
        json={"avatar_id": "astronaut", "audio_url": "http://169.254.169.254/a.wav"},
        headers=AUTH,
    )
    request_id = (await resp.json())["request_id"]

    async def failed() -> bool:
        return (await _job(client, request_id))["status"] == "failed"

    await eventually(failed)
    text = await (await client.get("/metrics", headers=AUTH)).text()
    assert 'avatar_jobs{kind="render",status="failed"} 1.0' in text
    assert 'avatar_jobs{kind="prepare",status="pending"} 0.0' in text
    assert 'avatar_jobs_queue_depth{kind="render"} 0.0' in text
    assert 'avatar_job_duration_seconds_count{kind="render",status="failed"} 1.0' in text


async def test_secrets_are_generated_once_with_mode_0600(tmp_path: Path) -> None:
    settings = job_settings(tmp_path, jobs_url_secret=None, webhook_secret=None)
    first = await start_client(settings)
    await first.close()
    cache = tmp_path / "cache"
    secrets = {name: (cache / name).read_text() for name in ("jobs-url-secret", "webhook-secret")}
    for name in secrets:
        assert (cache / name).stat().st_mode & 0o777 == 0o600
    again = await start_client(settings)
    try:
        assert again.app[_jobs_key()].url_secret == secrets["jobs-url-secret"].strip()
    finally:
        await again.close()
    assert {name: (cache / name).read_text() for name in secrets} == secrets
