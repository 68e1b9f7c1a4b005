"""Errors through the job boundary (issue 12): one coded error base for every `(code, message)`
error class, stable codes from the worker process to the supervisor (which retries by code,
never by parsing a message), user-facing messages that never carry a class name, a traceback
or a local path, and seed 000's upper-case UUID ids in the local avatar store."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from botocore import exceptions as boto

from avatar_runtime.audio_file import AudioFileError
from avatar_runtime.avatars import ANY_CASE_ID, AvatarCatalog, canonical_id
from avatar_runtime.offline import OfflineRenderError
from control_api.errors import ApiError, error_middleware
from control_api.jobs import errors as job_errors
from control_api.jobs.errors import JobError
from control_api.jobs.handlers import fetch_error_code
from control_api.jobs.inputs import InputError, prepare_destination, prepare_input
from control_api.jobs.options import JobOptions
from control_api.jobs.outbound import FetchError, describe_failure, parse_target
from control_api.jobs.routes_runpod import RunPodError
from control_api.jobs.runner import JobRunner, RunnerConfig, worker_env
from control_api.jobs.storage import (
    ANY_CASE_ID_PATTERN,
    S3Config,
    StorageError,
    install_package,
    local_avatar_id,
    s3_failure,
)
from control_api.jobs.store import FAILED, Job, JobStateError, JobStore
from renderers import CodedError, RendererError
from renderers.errors import short_reason
from renderers.preparation import PreparationError
from tests.control_api_client import AUTH, start_client
from tests.job_fixtures import LOOPBACK, FileServer, eventually, job_settings
from tests.test_job_storage import make_tar

UPPER_CASE_UUID = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"
CLASS_NAMES = ("JobRetryable", "JobRejected", "JobError", "FetchError", "StorageError", "Error:")


def assert_plain(message: str) -> None:
    """A user-facing message: no class name, no traceback."""
    assert not any(name in message for name in CLASS_NAMES), message
    assert "Traceback" not in message and "Errno" not in message, message


@pytest.fixture
def files() -> Iterator[FileServer]:
    with FileServer().running() as server:
        yield server


# -- one coded base ------------------------------------------------------------------------------


def test_every_coded_error_class_derives_from_one_base() -> None:
    job = Job(
        **{
            **dict.fromkeys(Job.__dataclass_fields__),
            "id": "j1",
            "kind": "prepare",
            "status": "processing",
            "input": {},
            "attempts": 1,
            "max_attempts": 1,
            "webhook_attempts": 0,
        }
    )
    errors: list[CodedError] = [
        RendererError("corrupt_image", "m"),
        PreparationError("no_face", "No face detected in video"),
        OfflineRenderError("invalid_emotion", "m"),
        AudioFileError("corrupt_audio", "m"),
        StorageError("invalid_package", "m"),
        FetchError("download_failed", "m", upstream_status=503),
        InputError("m"),
        RunPodError(400, "m"),
        JobStateError(job, "m", "job_not_retryable"),
        JobError("no_face", "m"),
        ApiError(422, "invalid_field", "m"),
    ]
    for error in errors:
        assert isinstance(error, CodedError), type(error)
        assert error.code and str(error) == error.message
        assert type(error).__name__ in repr(error)  # for logs only
    # The statuses each layer answers with, unchanged.
    assert (RunPodError(400, "m").code, RunPodError(404, "m").code) == ("bad_request", "not_found")
    assert RunPodError(404, "request does not exist").status == 404
    assert JobStateError(job, "m", "job_not_retryable").status == 409
    assert FetchError("download_failed", "m", upstream_status=404).status is None
    assert isinstance(InputError("m"), ValueError) and InputError("m").code == "invalid_input"
    # Retryable follows the code.
    assert JobError("download_failed", "m").retryable
    assert not JobError("download_refused", "m").retryable
    assert StorageError("s3_unreachable", "m").retryable
    assert not StorageError("s3_upload_failed", "m").retryable
    assert not PreparationError("no_face", "m").retryable


def test_api_error_converts_from_any_coded_error_in_one_place() -> None:
    seed = "No face detected in video"
    error = ApiError.of(PreparationError("no_face", seed), 422)
    assert (error.status, error.code, error.message) == (422, "no_face", seed)
    job = Job(**{**dict.fromkeys(Job.__dataclass_fields__), "status": "pending"})
    state = ApiError.of(JobStateError(job, "busy", "job_not_retryable"), job_status="pending")
    assert state.status == 409
    assert state.body() == {
        "error": {"code": "job_not_retryable", "message": "busy", "job_status": "pending"}
    }
    assert ApiError.of(InputError("bad"), code="invalid_field", status=422).body() == {
        "error": {"code": "invalid_field", "message": "bad"}
    }
    assert ApiError.of(RendererError("x", "y")).status == 500  # no status: a 500


async def test_the_middleware_answers_coded_errors_that_carry_a_status() -> None:
    async def with_status(request: web.Request) -> web.Response:
        raise CodedError("job_not_retryable", "job j1 is pending", status=409)

    async def without_status(request: web.Request) -> web.Response:
        raise StorageError("invalid_package", "avatar package rejected: secret detail")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/with", with_status)
    app.router.add_get("/without", without_status)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        resp = await client.get("/with")
        assert resp.status == 409
        assert await resp.json() == {
            "error": {"code": "job_not_retryable", "message": "job j1 is pending"}
        }
        resp = await client.get("/without")  # nobody said how to answer it: a bug, a 500
        assert resp.status == 500
        assert (await resp.json())["error"]["code"] == "internal_error"
    finally:
        await client.close()


# -- the worker process reports codes -----------------------------------------------------------


def _spec(tmp_path: Path, kind: str, job_input: dict[str, Any], **overrides: Any) -> dict:
    options = JobOptions(
        jobs_dir=str(tmp_path / "jobs"),
        avatars_dir=str(tmp_path / "avatars"),
        url_secret="secret-0123456789",
        fetch_allowed_cidrs=LOOPBACK,
        min_video_s=1.0,
    )
    spec = {
        "job_id": "j1",
        "kind": kind,
        "attempt": 1,
        "input": job_input,
        "work_dir": str(tmp_path / "work"),
        "base_url": "http://127.0.0.1:1",
        "options": options.to_json(),
    }
    spec.update(overrides)
    return spec


def _run_worker(spec: dict | str, tmp_path: Path) -> tuple[int, list[dict], str]:
    """(exit code, events, stderr) of one real worker process."""
    stdin = spec if isinstance(spec, str) else json.dumps(spec)
    result = subprocess.run(
        [sys.executable, "-m", "control_api.jobs.worker"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=worker_env(os.environ),
    )
    events = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result.returncode, events, result.stderr


def _last_error(events: list[dict]) -> dict:
    errors = [event for event in events if event["event"] == "error"]
    assert len(errors) == 1, events
    return errors[0]


def test_a_transient_download_failure_is_reported_by_code_without_a_class_name(
    files: FileServer, tmp_path: Path
) -> None:
    """The issue's "JobRetryable: could not fetch the video: ..."."""
    url = files.add("/down.mp4", b"x", fail_first=1000)
    _code, events, _ = _run_worker(
        _spec(tmp_path, "prepare", {"video_url": url, "avatar_id": "a1"}), tmp_path
    )
    error = _last_error(events)
    assert error["code"] == "download_failed" and error["retry"] is True
    assert error["error"].startswith("could not fetch the video: download failed: ")
    assert "answered HTTP 503" in error["error"]
    assert_plain(error["error"])


def test_a_final_download_failure_has_its_own_code(files: FileServer, tmp_path: Path) -> None:
    audio = f"{files.base_url}/missing.wav"  # 404
    _code, events, _ = _run_worker(
        _spec(tmp_path, "render", {"avatar_id": "astronaut", "audio_url": audio}), tmp_path
    )
    error = _last_error(events)
    assert (error["code"], error["retry"]) == ("download_refused", False)
    assert error["error"].startswith("could not fetch the audio: download failed: ")
    assert_plain(error["error"])
    # A prepare job keeps the seed's contract: COMPLETED with the error in its output.
    _code, events, _ = _run_worker(
        _spec(tmp_path, "prepare", {"video_url": audio, "avatar_id": "a1"}), tmp_path
    )
    assert events[-1]["event"] == "result"
    assert events[-1]["output"]["status"] == "error"
    assert_plain(events[-1]["output"]["error"])


def test_an_unforeseen_failure_is_internal_error_with_the_details_on_stderr(
    tmp_path: Path,
) -> None:
    spec = _spec(tmp_path, "render", {})
    del spec["options"]  # a KeyError inside run_job
    code, events, stderr = _run_worker(spec, tmp_path)
    error = _last_error(events)
    assert code == 1
    assert error == {
        "event": "error",
        "code": "internal_error",
        "error": job_errors.INTERNAL_ERROR_MESSAGE,
        "retry": True,
    }
    assert "KeyError" in stderr and "Traceback" in stderr  # the attempt's log file has it


def test_refusals_of_the_worker_itself_have_codes(tmp_path: Path) -> None:
    code, events, _ = _run_worker("not json", tmp_path)
    assert code == 2
    assert (_last_error(events)["code"], _last_error(events)["retry"]) == (
        "invalid_job_spec",
        False,
    )
    _code, events, _ = _run_worker(_spec(tmp_path, "nonsense", {}), tmp_path)
    error = _last_error(events)
    assert (error["code"], error["retry"]) == ("unknown_job_kind", False)
    assert_plain(error["error"])


def test_fetch_codes_at_the_job_boundary() -> None:
    def code(fetch_code: str, status: int | None = None) -> str:
        return fetch_error_code(FetchError(fetch_code, "m", upstream_status=status))

    assert code("download_failed", 503) == "download_failed"
    assert code("download_failed", 429) == "download_failed"
    assert code("download_failed", 408) == "download_failed"
    assert code("download_failed", None) == "download_failed"  # refused, reset, TLS, cut off
    assert code("download_failed", 404) == "download_refused"
    assert code("download_failed", 403) == "download_refused"
    assert code("url_host_not_allowed") == "url_host_not_allowed"
    for retried in ("download_failed", "download_timeout", "url_host_unresolved"):
        assert job_errors.retryable(retried), retried
    for final in ("download_refused", "url_host_not_allowed", "download_too_large", "no_face"):
        assert not job_errors.retryable(final), final


# -- the supervisor decides by code -------------------------------------------------------------

# A stand-in worker: prints the error event its spec carries.
_FAKE_WORKER = (
    "import json, sys; spec = json.load(sys.stdin); print(json.dumps(spec['event']), flush=True)"
)


async def _run_fake_job(tmp_path: Path, event: dict) -> tuple[Job, list[str]]:
    store = JobStore(tmp_path / "jobs.sqlite3")
    runner = JobRunner(
        store,
        RunnerConfig(
            jobs_dir=tmp_path / "jobs",
            max_retries=1,
            backoff_s=0.01,
            backoff_max_s=0.01,
            poll_s=0.05,
            worker_command=(sys.executable, "-c", _FAKE_WORKER),
        ),
        lambda job, work_dir: {"event": event},
    )
    await runner.start()
    try:
        job = await asyncio.to_thread(store.create, "render", {}, max_attempts=2)
        runner.wake()

        async def ended() -> Job | None:
            current = await asyncio.to_thread(store.get, job.id)
            return current if current is not None and current.terminal else None

        final = await eventually(ended, timeout=30, every=0.05)
        return final, [line.message for line in store.logs(job.id)]
    finally:
        await runner.close()
        store.close()


async def test_the_runner_retries_by_code_not_by_the_flag_or_the_message(tmp_path: Path) -> None:
    # A code that another attempt cannot cure, whatever the flag says: one attempt.
    event = {"event": "error", "code": "download_refused", "error": "timed out", "retry": True}
    job, _ = await _run_fake_job(tmp_path / "a", event)
    assert (job.status, job.attempts, job.error) == (FAILED, 1, "timed out")
    # A retryable code is retried even with the flag down, and a message that once read as
    # transient ("could not connect") decides nothing.
    event = {"event": "error", "code": "s3_unreachable", "error": "x", "retry": False}
    job, logs = await _run_fake_job(tmp_path / "b", event)
    assert (job.status, job.attempts) == (FAILED, 2)
    assert any("retry in" in line for line in logs)
    event = {"event": "error", "code": "s3_upload_failed", "error": "Failed to upload avatar "
             "to S3: could not connect to http://x", "retry": False}  # fmt: skip
    job, _ = await _run_fake_job(tmp_path / "c", event)
    assert (job.status, job.attempts) == (FAILED, 1)


async def test_a_failed_job_reads_no_class_name_through_the_api(
    tmp_path: Path, files: FileServer
) -> None:
    """End to end: a render whose audio keeps answering 503 is retried, then FAILED with a
    plain message in its status, its result and its details."""
    client = await start_client(job_settings(tmp_path, jobs_max_retries=1))
    try:
        url = files.add("/down.wav", b"x", fail_first=1000)
        resp = await client.post(
            "/api/v1/renders", json={"avatar_id": "astronaut", "audio_url": url}, headers=AUTH
        )
        request_id = (await resp.json())["request_id"]

        async def failed() -> dict | None:
            resp = await client.get(f"/api/v1/renders/{request_id}/status", headers=AUTH)
            body = await resp.json()
            return body if body["status"] == "FAILED" else None

        status = await eventually(failed, timeout=60)
        assert status["attempts"] == 2  # retried: 503 is download_failed
        assert status["error"].startswith("could not fetch the audio: download failed: ")
        assert_plain(status["error"])
        details = await (
            await client.get(f"/api/v1/internal/avatar/jobs/{request_id}", headers=AUTH)
        ).json()
        for line in details["logs"]:
            assert_plain(line["message"])
    finally:
        await client.close()


# -- messages without class names, paths or error numbers ----------------------------------------


def test_transport_failures_are_described_without_class_names() -> None:
    target = parse_target("http://files.example.test/v.mp4")
    for error, words in [
        (http.client.RemoteDisconnected("Remote end closed connection"), "closed the connection"),
        (http.client.IncompleteRead(b"abc", 10), "cut its response short"),
        (http.client.BadStatusLine("garbage"), "sent an invalid HTTP response"),
        (http.client.LineTooLong("header line"), "sent an invalid HTTP response"),
        (ConnectionResetError(), "connection reset"),
        (OSError(), "network error"),
    ]:
        message = describe_failure(error, target)
        assert words in message, message
        assert type(error).__name__ not in message, message


def test_s3_failures_have_codes_and_no_class_names(tmp_path: Path) -> None:
    config = S3Config(endpoint_url="http://127.0.0.1:9")
    unreachable = boto.EndpointConnectionError(endpoint_url="http://127.0.0.1:9/b")
    assert s3_failure(unreachable, config) == (
        "s3_unreachable",
        "could not connect to http://127.0.0.1:9",
    )
    slow = boto.ClientError({"Error": {"Code": "SlowDown", "Message": "Reduce"}}, "PutObject")
    assert s3_failure(slow, config)[0] == "s3_unreachable"
    missing = boto.ClientError(
        {"Error": {"Code": "NoSuchBucket", "Message": "The specified bucket does not exist"}},
        "PutObject",
    )
    assert s3_failure(missing, config) == (
        "s3_upload_failed",
        "NoSuchBucket: The specified bucket does not exist",
    )
    code, reason = s3_failure(ValueError("secret detail"), config)
    assert code == "s3_upload_failed" and "ValueError" not in reason and "secret" not in reason
    code, reason = s3_failure(FileNotFoundError(2, "No such file or directory", "/x"), config)
    assert reason == "could not read the package: no such file or directory"


def test_ffmpeg_reasons_leave_the_file_name_and_error_number_out(tmp_path: Path) -> None:
    path = tmp_path / "attempt-1" / "audio"
    path.parent.mkdir()
    path.write_bytes(b"no media at all")
    with pytest.raises(av.FFmpegError) as caught:
        av.open(str(path))
    assert str(path) in str(caught.value)  # what the messages used to carry
    reason = short_reason(caught.value)
    assert reason == "invalid data found when processing input"


# -- seed 000's upper-case UUIDs in the local store ---------------------------------------------


def test_local_ids_are_lower_case_and_never_leave_the_directory() -> None:
    assert local_avatar_id(UPPER_CASE_UUID) == UPPER_CASE_UUID.lower()
    assert local_avatar_id("abc_1-x") == "abc_1-x"
    assert ANY_CASE_ID_PATTERN.pattern == ANY_CASE_ID.pattern
    for refused in (
        "../x",
        "A/B",
        "..",
        ".hidden",
        "a.b",
        "ABC\n",
        "\u212a",  # the Kelvin sign, which lower-cases to an ASCII "k"
        "\u0130",  # İ, which lower-cases to "i" plus a combining dot
        "a" * 65,
        "",
        "DEFAULT",
        "MeshWarp",
        None,
    ):
        with pytest.raises(StorageError) as caught:
            local_avatar_id(refused)
        assert caught.value.code == "invalid_avatar_id", refused


def test_prepare_input_accepts_an_upper_case_uuid_for_the_local_store() -> None:
    job = prepare_input({"video_url": "http://x/v.mp4", "avatar_id": UPPER_CASE_UUID})
    assert job["avatar_id"] == UPPER_CASE_UUID  # echoed back as sent
    assert prepare_destination(job, default_bucket=None, local_store=True) is None
    with pytest.raises(InputError) as caught:
        prepare_destination(
            {**job, "avatar_id": "3F2504E0.4F89"}, default_bucket=None, local_store=True
        )
    assert caught.value.code == "invalid_avatar_id"


def test_an_installed_upper_case_id_is_found_by_either_spelling(tmp_path: Path) -> None:
    avatars = tmp_path / "avatars"
    installed = install_package(
        make_tar(tmp_path / "p.tar", {"coords.pkl": b"v1"}), avatars, UPPER_CASE_UUID
    )
    assert installed == avatars / UPPER_CASE_UUID.lower()
    catalog = AvatarCatalog(avatars)
    assert UPPER_CASE_UUID.lower() in catalog.ids() and UPPER_CASE_UUID not in catalog.ids()
    mixed = "3f2504E0-4F89-11d3-9A0C-0305E82C3301"
    for spelling in (UPPER_CASE_UUID, UPPER_CASE_UUID.lower(), mixed):
        assert catalog.resolve(spelling) == installed.resolve()
        assert spelling in catalog
    # Installing again under another spelling replaces the same package.
    again = install_package(
        make_tar(tmp_path / "q.tar", {"coords.pkl": b"v2"}), avatars, UPPER_CASE_UUID.lower()
    )
    assert again == installed and (again / "coords.pkl").read_bytes() == b"v2"
    assert catalog.resolve("ASTRONAUT") == catalog.resolve("astronaut") is not None
    assert canonical_id("\u212a") == "\u212a" and "\u212a" not in catalog
    for outside in ("../avatars", "..", "A/../B"):
        assert outside not in catalog
