"""Restart safety with the control API as a real subprocess (`python -m control_api`): kill -9
it while a job is processing, start it again, and the job completes exactly once; kill it again
after that, and the completed job is neither lost nor run again."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import psutil

from tests.control_api_process import ControlApi, running_control_api
from tests.job_fixtures import FileServer
from tests.livekit_server import LiveKitServer, free_port
from tests.media import talking_head_video

# No LiveKit is needed for jobs; the control API starts without one (health says degraded).
NO_LIVEKIT = LiveKitServer(
    url=f"ws://127.0.0.1:{free_port()}",
    http_url="http://127.0.0.1:1",
    api_key="unused",
    api_secret="unused-secret-0123456789-0123456789",
)


def _call(api: ControlApi, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        api.base_url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={**api.headers(), "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _wait_for(check, timeout: float = 60.0):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s")


def _workers(api_pid: int) -> list[psutil.Process]:
    children = psutil.Process(api_pid).children(recursive=True)
    return [p for p in children if "control_api.jobs.worker" in " ".join(p.cmdline())]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_kill_the_service_mid_job_and_the_job_finishes_exactly_once(tmp_path: Path) -> None:
    video = tmp_path / "head.mp4"
    talking_head_video(video, seconds=3.0, fps=10, size=(320, 240))
    env = {
        "AVATAR_JOBS_DB": str(tmp_path / "jobs.sqlite3"),
        "AVATAR_JOBS_DIR": str(tmp_path / "jobs"),
        "AVATAR_WEBHOOK_SECRET": "restart-test-webhook-secret",
        "AVATAR_AVATARS_DIR": str(tmp_path / "avatars"),
        "AVATAR_FETCH_ALLOWED_CIDRS": "127.0.0.0/8",
        "AVATAR_JOBS_URL_SECRET": "restart-test-secret-0123456789",
        "AVATAR_JOBS_MIN_VIDEO_S": "2",
        "AVATAR_JOBS_BACKOFF_S": "0.2",
    }
    with FileServer().running() as files:
        url, gate = files.hold("/head.mp4", video)
        with running_control_api(NO_LIVEKIT, env) as api:
            job_id = _call(api, "POST", "/run", {"input": {"video_url": url, "avatar_id": "r1"}})[
                "id"
            ]
            _wait_for(files.files["/head.mp4"].started.is_set)
            workers = _wait_for(lambda: _workers(api.pid))
            assert len(workers) == 1
            assert _call(api, "GET", f"/status/{job_id}")["status"] == "IN_PROGRESS"
            os.kill(api.pid, signal.SIGKILL)
            # The worker dies with its supervisor (PR_SET_PDEATHSIG): no orphan finishes it.
            _wait_for(lambda: _gone(workers[0].pid), timeout=10)

        gate.set()
        with running_control_api(NO_LIVEKIT, env) as api:
            done = _wait_for(
                lambda: (
                    (body := _call(api, "GET", f"/status/{job_id}"))["status"]
                    in ("COMPLETED", "FAILED")
                    and body
                )
            )
            assert done["status"] == "COMPLETED" and done["output"]["status"] == "success", done
            details = _call(api, "GET", f"/api/v1/internal/avatar/jobs/{job_id}")
            assert details["attempts"] == 2
            messages = [line["message"] for line in details["logs"]]
            assert sum("lost" in m for m in messages) == 1, messages
            assert messages.count("completed") == 1, messages
            os.kill(api.pid, signal.SIGKILL)

        # Outputs were written once: one published folder, the later attempt's.
        folders = sorted(p.name for p in (tmp_path / "jobs" / "files").iterdir())
        assert folders == [f"{job_id}-2"]
        requests = files.files["/head.mp4"].requests

        with running_control_api(NO_LIVEKIT, env) as api:
            again = _call(api, "GET", f"/status/{job_id}")
            assert again == done
            time.sleep(1.0)
            assert _call(api, "GET", f"/api/v1/internal/avatar/jobs/{job_id}")["attempts"] == 2
            assert _workers(api.pid) == []
        assert files.files["/head.mp4"].requests == requests
