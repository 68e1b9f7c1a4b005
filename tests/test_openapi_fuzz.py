"""A property-based fuzz of every operation in /openapi.json (schemathesis) against the real
service: `python -m control_api` on a loopback port, with a real livekit-server behind it so the
session routes answer as they do in production (LiveKit down would be a 503 on purpose).

Each operation gets schemathesis' coverage phase (boundary values of every field, and requests
without a body, with another content type or method) and a fuzzing phase of at most MAX_EXAMPLES
requests, schema-valid and schema-violating ones mixed, with the service's API key. Every answer
must: not be a 5xx; have a status, content type and body the document declares for the
operation; refuse what the document says is invalid (4xx) and accept what it says is valid (2xx,
or a 4xx only where the document cannot know: an id that names nothing yet, a file whose bytes
are not an image); answer 401 without the key.

Reproducible: the run is seeded (hypothesis derandomized, schemathesis' seed fixed, no example
database). The budget keeps the fuzz near 40 s on a 2-core machine (the file about 50 s);
BUDGET_S bounds it (checked at the end), and each example has a deadline.

The routes the generated requests cannot reach with real ids (a job's details, a finished
render, a signed download) are driven once by `test_real_answers_conform_to_the_document`.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import settings
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from control_api.app import ROUTES
from control_api.config import CLIENT_DIR
from control_api.openapi import openapi_document
from tests.control_api_client import png_bytes
from tests.control_api_process import ControlApi, running_control_api
from tests.livekit_server import LiveKitServer
from tests.media import speech_like_audio

pytestmark = pytest.mark.livekit

SEED = 20261121
MAX_EXAMPLES = 50
"""Per operation, in the fuzzing phase."""
DEADLINE = timedelta(seconds=5)
"""Per example: the request, and the checks' own requests (the one without credentials)."""
BUDGET_S = 120.0
"""The fuzz's wall-clock bound, from its first request to its last: about 40 s is usual on a
2-core machine, so this fails only when the fuzz runs away (a request that hangs, a budget
raised by mistake), not when the machine is busy."""

NAMES_NOTHING = frozenset(
    {
        "invalid_avatar",
        "invalid_background",
        "invalid_image",
        "invalid_package",
        "invalid_audio",
        "renderer_not_allowed",
    }
)
"""Codes of a 422 that a schema-valid request may still get: an avatar or background id that
matches the id rule but names nothing in this service's catalog (the document cannot list
what will exist), an upload or data: URI whose bytes are not an image, an avatar package
or audio (a schema says "binary" or "string"), or a registered renderer that this service's
configuration does not offer for single-frame renders (AVATAR_RENDER_SERVICE_RENDERERS)."""


def _document() -> dict[str, Any]:
    # What /openapi.json serves (test_the_fuzzed_document_is_the_served_one), built here because
    # the schema must exist when pytest collects the tests.
    return json.loads(json.dumps(openapi_document(ROUTES)))


config = schemathesis.Config(seed=SEED)
# WHEP's body, an SDP offer, is text (control_api/streaming/whep.py).
schemathesis.serializer.alias("application/sdp", "text/plain")
schema = schemathesis.openapi.from_dict(_document(), config=config)
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True, database="none")
fuzzed = schema
if not CLIENT_DIR.joinpath("dist", "app.js").is_file():
    # `GET /` answers 503 client_not_built, as documented, until `make client` has run (make
    # setup, and so make test, runs it).
    fuzzed = schema.exclude(path="/", method="GET")
# Seed 004's streaming WebSocket answers only a WebSocket handshake (a plain GET is 400): its
# protocol is tested over real sockets by tests/test_stream_ws.py.
fuzzed = fuzzed.exclude(path="/api/v1/stream/ws", method="GET")


@pytest.fixture(scope="module")
def control(
    livekit_server: LiveKitServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlApi]:
    from renderers.vision import models_dir

    work = tmp_path_factory.mktemp("fuzz")
    env = {
        # What the render routes prepare (meshwarp's rigs) stays out of the user's cache.
        "AVATAR_CACHE": str(work / "cache"),
        "AVATAR_MODELS_DIR": str(models_dir()),
        "AVATAR_JOBS_DB": str(work / "jobs.sqlite3"),
        "AVATAR_JOBS_DIR": str(work / "jobs"),
        "AVATAR_JOBS_URL_SECRET": "fuzz-url-secret-0123456789-0123456789",
        "AVATAR_WEBHOOK_SECRET": "fuzz-webhook-secret-0123456789",
        # The fuzz is one fast caller: no rate limit; runsync answers at once; the jobs it
        # queues (their URLs are made up) fail on their own, one at a time, never retried.
        "AVATAR_API_RATE_LIMIT": "1000000",
        "AVATAR_API_RATE_BURST": "1000000",
        "AVATAR_JOBS_RUNSYNC_WAIT_S": "0",
        "AVATAR_JOBS_CONCURRENCY": "1",
        "AVATAR_JOBS_MAX_RETRIES": "0",
        "AVATAR_FETCH_TIMEOUT_S": "2",
        "AVATAR_WEBHOOK_MAX_ATTEMPTS": "1",
        "AVATAR_WEBHOOK_TIMEOUT_S": "1",
    }
    with running_control_api(livekit_server, env, extra_args=["--no-access-log"]) as api:
        try:
            yield api
        finally:
            _delete_sessions(api)  # LiveKit keeps the rooms, and the next service finds them


def _delete_sessions(api: ControlApi) -> None:
    listed = requests.get(f"{api.base_url}/avatars", headers=api.headers(), timeout=10).json()
    for session in listed.get("sessions", []):
        requests.delete(
            f"{api.base_url}/avatars/{session['session_id']}", headers=api.headers(), timeout=10
        )


@pytest.fixture(scope="module")
def fuzz_clock() -> Iterator[list[float]]:
    """When each example started and ended; the span is held to BUDGET_S after the last."""
    times: list[float] = []
    yield times
    if times:
        span = max(times) - min(times)
        print(f"\nfuzz: {len(times) // 2} examples in {span:.1f} s")
        assert span < BUDGET_S, f"the fuzz took {span:.0f} s, over its budget of {BUDGET_S:.0f} s"


def positive_data_accepted(ctx: CheckContext, response: Any, case: Any) -> bool | None:
    """schemathesis' positive_data_acceptance, but for the refusals NAMES_NOTHING lists."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        if response.status_code == 422 and _error_code(response) in NAMES_NOTHING:
            return None
        raise


def _error_code(response: Any) -> str | None:
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        return None
    return error.get("code") if isinstance(error, dict) else None


@fuzzed.parametrize()
@settings(deadline=DEADLINE, derandomize=True, database=None)
def test_every_operation_answers_as_documented(
    case: schemathesis.Case, control: ControlApi, fuzz_clock: list[float]
) -> None:
    fuzz_clock.append(time.monotonic())
    try:
        case.call_and_validate(
            base_url=control.base_url,
            headers=control.headers(),
            excluded_checks=[positive_data_acceptance],
            additional_checks=[positive_data_accepted],
            timeout=10,
        )
    finally:
        fuzz_clock.append(time.monotonic())


# --- beside the fuzz --------------------------------------------------------------------------


def test_the_fuzzed_document_is_the_served_one(control: ControlApi) -> None:
    with urllib.request.urlopen(f"{control.base_url}/openapi.json", timeout=10) as response:
        assert json.loads(response.read()) == _document()


SCHEMA_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _call(
    control: ControlApi,
    method: str,
    path: str,
    *,
    status: int | tuple[int, ...],
    path_parameters: dict[str, str] | None = None,
    **kwargs: Any,
) -> Any:
    """One request made from the document's operation, its answer checked against it and
    its status one of `status`."""
    case = schema[path][method].Case(path_parameters=path_parameters or {}, **kwargs)
    response = case.call_and_validate(
        base_url=control.base_url, headers=control.headers(), checks=SCHEMA_CHECKS, timeout=30
    )
    assert response.status_code in (status if isinstance(status, tuple) else (status,)), (
        response.text
    )
    content_type = response.headers.get("content-type", [""])[0]
    return response.json() if content_type.startswith("application/json") else response


def test_real_answers_conform_to_the_document(control: ControlApi, tmp_path: Path) -> None:
    # A file upload and its signed link.
    audio = tmp_path / "speech.wav"
    speech_like_audio(audio, seconds=0.5)
    uploaded = _call(
        control,
        "POST",
        "/api/v1/files",
        status=201,
        body={"file": audio.read_bytes()},
        media_type="multipart/form-data",
    )
    url = requests.utils.urlparse(uploaded["url"])
    folder, name = url.path.split("/")[2:4]
    query = dict(part.split("=", 1) for part in url.query.split("&"))
    download = _call(
        control,
        "GET",
        "/files/{folder}/{name}",
        status=200,
        path_parameters={"folder": folder, "name": name},
        query=query,
    )
    assert download.content == audio.read_bytes()

    # A render: queued, its status (with logs), its details, cancelled, its result, retried.
    # The fuzz's jobs are queued ahead of it, so where it stands when it is cancelled varies:
    # a cancelled or not yet finished render is 409, a failed one 422, both documented.
    queued = _call(
        control,
        "POST",
        "/api/v1/renders",
        status=202,
        body={"avatar_id": "default", "audio_url": uploaded["url"], "emotion": "happy"},
    )
    request_id = {"request_id": queued["request_id"]}
    _call(
        control,
        "GET",
        "/api/v1/renders/{request_id}/status",
        status=200,
        path_parameters=request_id,
        query={"logs": "1"},
    )
    _call(
        control,
        "POST",
        "/api/generate/kling-avatar/status",
        status=200,
        body={**request_id, "logs": True},
    )
    job_id = {"job_id": queued["request_id"]}
    _call(
        control, "GET", "/api/v1/internal/avatar/jobs/{job_id}", status=200, path_parameters=job_id
    )
    _call(
        control,
        "POST",
        "/api/v1/renders/{request_id}/cancel",
        status=200,
        path_parameters=request_id,
    )
    _call(
        control,
        "GET",
        "/api/v1/renders/{request_id}",
        status=(200, 409, 422),
        path_parameters=request_id,
    )
    _call(
        control,
        "POST",
        "/api/v1/internal/avatar/jobs/{job_id}/retry",
        status=(200, 409),
        path_parameters=job_id,
    )
    _call(control, "GET", "/api/v1/internal/avatar/jobs/status", status=200)

    # A RunPod job: queued, its status, cancelled; an unknown one in RunPod's error shape.
    job = _call(
        control,
        "POST",
        "/run",
        status=200,
        body={"input": {"video_url": "https://example.invalid/v.mp4", "avatar_id": "Fuzz-1"}},
    )
    _call(control, "GET", "/status/{job_id}", status=200, path_parameters={"job_id": job["id"]})
    _call(control, "POST", "/cancel/{job_id}", status=200, path_parameters={"job_id": job["id"]})
    missing = _call(
        control, "GET", "/status/{job_id}", status=404, path_parameters={"job_id": "nope"}
    )
    assert isinstance(missing["error"], str)

    # A session: made, read, listed, a token for its room, deleted (after the fuzz's, which may
    # be as many as AVATAR_MAX_SESSIONS allows).
    _delete_sessions(control)
    created = _call(control, "POST", "/avatars", status=201, body={"avatar_id": "default"})
    session = {"session_id": created["session_id"]}
    _call(control, "GET", "/avatars/{session_id}", status=200, path_parameters=session)
    _call(control, "GET", "/avatars", status=200)
    _call(control, "POST", "/token", status=200, body={"room": created["room"]})
    _call(control, "POST", "/token", status=200)  # no body: every field has a default
    _call(control, "DELETE", "/avatars/{session_id}", status=200, path_parameters=session)

    # A background: uploaded, listed, fetched, deleted; a bundled one fetched.
    _call(
        control,
        "POST",
        "/backgrounds",
        status=201,
        body={"id": "fuzz-room", "file": png_bytes()},
        media_type="multipart/form-data",
    )
    _call(control, "GET", "/backgrounds", status=200)
    for background in ("fuzz-room", "clinic_room"):
        _call(
            control,
            "GET",
            "/backgrounds/{background_id}.png",
            status=200,
            path_parameters={"background_id": background},
        )
    _call(
        control,
        "DELETE",
        "/backgrounds/{background_id}",
        status=200,
        path_parameters={"background_id": "fuzz-room"},
    )
