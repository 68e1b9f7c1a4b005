"""control_api/runpod_worker.py under the RunPod SDK's own local test mode
(`python control_api/runpod_worker.py --test_input '{"input": ...}'`), as a subprocess: the
handler a user deploys to RunPod unchanged, with a real S3-compatible server (moto)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from control_api.jobs.storage import S3Config, s3_client
from tests.job_fixtures import FileServer, moto_s3
from tests.media import no_face_video, talking_head_video

REPO = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "Job result: "


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Config]:
    with moto_s3(access_key_id="moto-key", secret_access_key="moto-secret") as config:
        s3_client(config).create_bucket(Bucket="runpod-avatars")
        yield config


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    root = tmp_path_factory.mktemp("videos")
    talking_head_video(root / "head.mp4", seconds=3.0, fps=10, size=(320, 240))
    no_face_video(root / "empty.mp4", seconds=3.0, fps=10)
    with FileServer().running() as server:
        server.add("/head.mp4", root / "head.mp4")
        server.add("/empty.mp4", root / "empty.mp4")
        server.add("/down.mp4", b"", fail_first=1000)
        yield server


def _local_test(job_input: dict, s3: S3Config, **env: str) -> tuple[int, dict | None, str]:
    """Run the worker in the SDK's local test mode: (exit code, the job result, the output)."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AWS_ACCESS_KEY_ID": s3.access_key_id or "",
        "AWS_SECRET_ACCESS_KEY": s3.secret_access_key or "",
        "AVATAR_S3_ENDPOINT_URL": s3.endpoint_url or "",
        "AVATAR_S3_REGION": s3.region or "",
        "AVATAR_FETCH_ALLOWED_CIDRS": "127.0.0.0/8",
        "AVATAR_JOBS_MIN_VIDEO_S": "2",
        **env,
    }
    done = subprocess.run(
        [sys.executable, "control_api/runpod_worker.py", "--test_input", json.dumps(job_input)],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = done.stdout + done.stderr
    result = None
    for line in output.splitlines():
        if RESULT_PREFIX in line:
            # The SDK logs the result as a Python literal.
            result = ast.literal_eval(line.split(RESULT_PREFIX, 1)[1])
    return done.returncode, result, output


def test_local_test_mode_uploads_and_returns_the_seed_output(
    s3: S3Config, files: FileServer
) -> None:
    code, result, output = _local_test(
        {
            "input": {
                "video_url": f"{files.base_url}/head.mp4",
                "avatar_id": "abc123",
                "s3_bucket": "runpod-avatars",
                "s3_prefix": "avatars/42",
            }
        },
        s3,
    )
    assert code == 0, output
    assert result is not None and set(result) == {"output"}, output
    body = result["output"]
    assert body["status"] == "success" and body["avatar_id"] == "abc123"
    assert body["model"] == "wav2lip" and body["num_frames"] == 30
    assert "/runpod-avatars/avatars/42/abc123.tar?" in body["upload_url"]
    with urllib.request.urlopen(body["upload_url"], timeout=10) as response:
        assert response.read()[257:262] == b"ustar"  # a TAR header


def test_an_input_error_completes_with_the_seed_error_output(
    s3: S3Config, files: FileServer
) -> None:
    code, result, output = _local_test(
        {"input": {"video_url": f"{files.base_url}/empty.mp4", "avatar_id": "e1"}},
        s3,
        AVATAR_S3_BUCKET="runpod-avatars",
    )
    assert code == 0, output
    assert result == {"output": {"status": "error", "error": "No face detected in video"}}


def test_without_a_bucket_it_says_so(s3: S3Config, files: FileServer) -> None:
    code, result, output = _local_test(
        {"input": {"video_url": f"{files.base_url}/head.mp4", "avatar_id": "e2"}}, s3
    )
    assert code == 0, output
    assert result["output"]["status"] == "error"
    assert "AVATAR_S3_BUCKET" in result["output"]["error"]


def test_a_lasting_transient_failure_fails_the_job(s3: S3Config, files: FileServer) -> None:
    code, result, output = _local_test(
        {"input": {"video_url": f"{files.base_url}/down.mp4", "avatar_id": "d1"}},
        s3,
        AVATAR_S3_BUCKET="runpod-avatars",
        AVATAR_JOBS_MAX_RETRIES="1",
        AVATAR_JOBS_BACKOFF_S="0.1",
    )
    assert code == 1, output  # the SDK's local mode exits 1 for a FAILED job
    assert "answered HTTP 503" in output
    assert "attempt 1 failed" in output
    assert files.files["/down.mp4"].requests >= 2
