"""Two control API processes with job runners on one PostgreSQL database and one S3 bucket
(moto's server), over real loopback HTTP: every job runs exactly once and its webhook is sent
once; the render, file and RunPod routes answer the same on either instance; an instance killed
with SIGKILL mid-job has its job finished by the other once the lease is gone."""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from PIL import Image

from tests.control_api_process import ControlApi
from tests.job_fixtures import FileServer, moto_s3
from tests.jobs_cluster import (
    WEBHOOK_SECRET,
    WebhookReceiver,
    call,
    cluster_env,
    create_bucket,
    owner_pid,
    render_status,
    running_instances,
    upload,
    wait_all,
)
from tests.media import astronaut_head, speech_like_audio, talking_head_video
from tests.postgres_server import PostgresServer, running_postgres

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as config:
        assert config.endpoint_url is not None
        create_bucket(config.endpoint_url)
        yield config.endpoint_url


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """(a portrait PNG, one second of speech-like WAV)."""
    folder = tmp_path_factory.mktemp("inputs")
    buffer = io.BytesIO()
    Image.fromarray(astronaut_head()).resize((256, 256)).save(buffer, format="PNG")
    speech_like_audio(folder / "speech.wav", 1.0)
    return buffer.getvalue(), (folder / "speech.wav").read_bytes()


def _rows(database: str) -> dict[str, dict]:
    with psycopg.connect(database) as db:
        db.row_factory = psycopg.rows.dict_row
        jobs = db.execute("SELECT id, status, attempts, owner FROM jobs").fetchall()
        starts = db.execute(
            "SELECT job_id, COUNT(*) AS n FROM job_logs WHERE message LIKE 'attempt % started' "
            "GROUP BY job_id"
        ).fetchall()
    started = {row["job_id"]: row["n"] for row in starts}
    return {row["id"]: {**row, "starts": started.get(row["id"], 0)} for row in jobs}


def _without_origin(value: object, apis: list[ControlApi]) -> object:
    """`value` with each instance's origin replaced, so answers can be compared."""
    text = repr(value)
    for api in apis:
        text = text.replace(api.base_url, "ORIGIN")
    return text


def _get(url: str) -> tuple[int, bytes, str]:
    """Follow redirects (to the presigned S3 URL): status, body, content type."""
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read(), response.headers.get("Content-Type", "")


def _signed_ok(delivery_body: bytes, header: str) -> bool:
    fields = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    expected = hmac.new(
        WEBHOOK_SECRET.encode(), f"{fields.get('t')}.".encode() + delivery_body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, fields.get("v1", ""))


def test_jobs_run_once_webhooks_are_sent_once_and_either_instance_answers(
    postgres: PostgresServer,
    s3_endpoint: str,
    inputs: tuple[bytes, bytes],
    tmp_path: Path,
) -> None:
    database = postgres.create_database("two_" + uuid.uuid4().hex[:8])
    env = cluster_env(database, s3_endpoint, tmp_path, AVATAR_JOBS_CONCURRENCY="2")
    portrait, speech = inputs
    with (
        # Slow to answer: both instances see each delivery due while one is sending it.
        WebhookReceiver(delay_s=1.5).running() as hooks,
        FileServer().running() as files,
        running_instances(2, env, tmp_path) as apis,
    ):
        a, b = apis
        # Uploaded to one instance, usable by a job on either and downloadable from both.
        image_url = upload(a, "me.png", portrait)
        audio_url = upload(b, "speech.wav", speech)
        for api in apis:
            assert _get(image_url.replace(a.base_url, api.base_url))[1] == portrait
        ids = []
        for n in range(8):
            api = apis[n % 2]
            status, body = call(
                api,
                "POST",
                "/api/v1/renders",
                {
                    "image_url": image_url,
                    "audio_url": audio_url,
                    "renderer": "testcard",
                    "webhook_url": hooks.url,
                },
            )
            assert status == 202, body
            ids.append(body["request_id"])
        # A RunPod job whose input can never succeed (404) completes with the seed's error.
        missing = files.base_url + "/missing.mp4"
        status, run = call(b, "POST", "/run", {"input": {"video_url": missing, "avatar_id": "x1"}})
        assert status == 200, run
        wait_all(a, ids)

        rows = _rows(database)
        renders = [rows[i] for i in ids]
        assert all(r["status"] == "completed" for r in renders), renders
        assert all(r["attempts"] == 1 and r["starts"] == 1 for r in renders), renders
        owners = {owner_pid(r["owner"]) for r in renders}
        assert owners == {a.pid, b.pid}, "both instances should have run some of the jobs"

        # The same answers from either instance (links differ only in their origin).
        for request_id in ids:
            answers = [call(api, "GET", f"/api/v1/renders/{request_id}") for api in apis]
            assert answers[0][0] == answers[1][0] == 200
            assert _without_origin(answers[0][1], apis) == _without_origin(answers[1][1], apis)
        videos = []
        for api in apis:
            _, body = call(api, "GET", f"/api/v1/renders/{ids[0]}")
            status, data, content_type = _get(body["video"]["url"])
            assert status == 200 and content_type == "video/mp4" and len(data) > 1000
            videos.append(data)
        assert videos[0] == videos[1]
        runpod = [call(api, "GET", f"/status/{run['id']}") for api in apis]
        deadline = time.monotonic() + 60
        while runpod[0][1]["status"] != "COMPLETED" and time.monotonic() < deadline:
            time.sleep(0.2)
            runpod = [call(api, "GET", f"/status/{run['id']}") for api in apis]
        assert runpod[0] == runpod[1] and runpod[0][1]["output"]["status"] == "error"
        assert call(a, "GET", "/status/nope")[0] == call(b, "GET", "/status/nope")[0] == 404

        # Each webhook once: one delivery per render, each signed, no event twice.
        deadline = time.monotonic() + 30
        while len(hooks.deliveries) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # a duplicate would come within a tick or two
        by_request = hooks.by_request()
        assert sorted(by_request) == sorted(ids)
        assert all(len(d) == 1 for d in by_request.values()), by_request
        assert len({d.event_id for d in hooks.deliveries}) == len(ids)
        assert all(_signed_ok(d.body, d.signature) for d in hooks.deliveries)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_an_instance_killed_mid_job_has_its_job_finished_by_the_other(
    how: str,
    postgres: PostgresServer,
    s3_endpoint: str,
    inputs: tuple[bytes, bytes],
    tmp_path: Path,
) -> None:
    database = postgres.create_database("kill_" + uuid.uuid4().hex[:8])
    env = cluster_env(database, s3_endpoint, tmp_path)
    portrait, speech = inputs
    with (
        WebhookReceiver().running() as hooks,
        FileServer().running() as files,
        running_instances(2, env, tmp_path) as apis,
    ):
        audio_url, gate = files.hold("/speech.wav", speech)
        image_url = files.add("/me.png", portrait)
        status, body = call(
            apis[0],
            "POST",
            "/api/v1/renders",
            {
                "image_url": image_url,
                "audio_url": audio_url,
                "renderer": "testcard",
                "webhook_url": hooks.url,
            },
        )
        assert status == 202, body
        request_id = body["request_id"]
        deadline = time.monotonic() + 30
        while files.files["/speech.wav"].requests == 0:  # a worker is downloading: mid-job
            assert time.monotonic() < deadline, "no instance started the job"
            time.sleep(0.05)
        holder_pid = owner_pid(_rows(database)[request_id]["owner"])
        holder = next(api for api in apis if api.pid == holder_pid)
        survivor = next(api for api in apis if api.pid != holder_pid)
        # SIGKILL: the process is gone, which an instance on the same host sees at once (its
        # pid is dead). SIGSTOP: frozen with its pid alive, as another machine that stopped
        # answering looks; only its lease running out can tell, which is what must be waited.
        os.kill(holder.pid, getattr(signal, how))
        killed_at = time.monotonic()
        gate.set()
        wait_all(survivor, [request_id], timeout=60)
        took = time.monotonic() - killed_at
        print(f"{how}: taken over and finished {took:.2f} s after the signal")
        if how == "SIGSTOP":
            os.kill(holder.pid, signal.SIGKILL)
            # Renewed every lease/3, the lease had at least 2/3 of its 3 s left when frozen.
            assert took >= 2.0 - 0.1, f"taken over after {took:.1f} s, before the lease ended"
        row = _rows(database)[request_id]
        assert row["status"] == "completed" and row["attempts"] == 2 and row["starts"] == 2
        assert owner_pid(row["owner"]) == survivor.pid
        assert took < 3 * 3 + 10, f"takeover took {took:.1f} s with a 3 s lease"
        _, result = call(survivor, "GET", f"/api/v1/renders/{request_id}")
        assert _get(result["video"]["url"])[0] == 200
        assert render_status(survivor, request_id) == "COMPLETED"
        deadline = time.monotonic() + 20
        while not hooks.deliveries and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)
        assert [len(d) for d in hooks.by_request().values()] == [1]


def test_an_avatar_prepared_on_one_instance_renders_on_another(
    postgres: PostgresServer,
    s3_endpoint: str,
    inputs: tuple[bytes, bytes],
    tmp_path: Path,
) -> None:
    database = postgres.create_database("pkg_" + uuid.uuid4().hex[:8])
    env = cluster_env(database, s3_endpoint, tmp_path)
    video = tmp_path / "head.mp4"
    talking_head_video(video, seconds=3.0, fps=10, size=(320, 240))
    _, speech = inputs
    with FileServer().running() as files:
        video_url = files.add("/head.mp4", video)
        with running_instances(1, env, tmp_path, api_key="k" * 24) as (a,):
            status, body = call(
                a, "POST", "/runsync", {"input": {"video_url": video_url, "avatar_id": "Shared1"}}
            )
            assert status == 200 and body["status"] == "COMPLETED", body
            assert body["output"]["status"] == "success", body
            upload_url = body["output"]["upload_url"]
        # A new instance, its own avatar store empty: the package link works there, and a render
        # of the avatar installs it from the shared bucket.
        with running_instances(1, env, tmp_path, api_key="k" * 24) as (b,):
            package = _get(upload_url.replace(a.base_url, b.base_url))
            assert package[0] == 200 and package[2] == "application/x-tar"
            audio_url = upload(b, "speech.wav", speech)
            status, body = call(
                b,
                "POST",
                "/api/v1/renders",
                {"avatar_id": "shared1", "audio_url": audio_url, "renderer": "testcard"},
            )
            assert status == 202, body
            request_id = body["request_id"]
            wait_all(b, [request_id], timeout=90)
            status, result = call(b, "GET", f"/api/v1/renders/{request_id}")
            assert status == 200, result
            _, details = call(b, "GET", f"/api/v1/internal/avatar/jobs/{request_id}")
            messages = [line["message"] for line in details["logs"]]
            assert "installed avatar 'shared1' from the shared store" in messages, messages
