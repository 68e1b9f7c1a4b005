"""Control API instances sharing one job store (PostgreSQL) and one file bucket (moto's S3
server), as real processes on loopback: what tests/test_jobs_two_instances.py and
bench/jobs_cluster.py run. Also a webhook receiver that records every delivery."""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.control_api_process import ControlApi, running_control_api
from tests.livekit_server import LiveKitServer, free_port
from tests.loopback_http import QuietHandler, serving

# No LiveKit is needed for jobs; the control API starts without one (health says degraded).
NO_LIVEKIT = LiveKitServer(
    url=f"ws://127.0.0.1:{free_port()}",
    http_url="http://127.0.0.1:1",
    api_key="unused",
    api_secret="unused-secret-0123456789-0123456789",
)
BUCKET = "avatar-jobs-shared"
URL_SECRET = "cluster-url-secret-0123456789"
WEBHOOK_SECRET = "cluster-webhook-secret-0123456789"


@dataclass
class Delivery:
    event_id: str
    signature: str
    body: bytes


@dataclass
class WebhookReceiver:
    deliveries: list[Delivery] = field(default_factory=list)
    url: str = ""
    delay_s: float = 0.0
    """Answer each delivery this late: a slow receiver, while which a delivery is in flight."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def by_request(self) -> dict[str, list[Delivery]]:
        """Deliveries by the job they are about (`request_id`, or `id` for RunPod's)."""
        found: dict[str, list[Delivery]] = {}
        with self._lock:
            for delivery in self.deliveries:
                body = json.loads(delivery.body)
                found.setdefault(body.get("request_id") or body.get("id"), []).append(delivery)
        return found

    @contextlib.contextmanager
    def running(self) -> Iterator[WebhookReceiver]:
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 (stdlib's name)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.deliveries.append(
                        Delivery(
                            self.headers.get("X-Avatar-Event-Id", ""),
                            self.headers.get("X-Avatar-Signature", ""),
                            body,
                        )
                    )
                time.sleep(receiver.delay_s)
                self.send_body(200, b"ok")

        with serving(Handler) as base_url:
            self.url = base_url + "/hook"
            yield self


def create_bucket(endpoint_url: str, bucket: str = BUCKET) -> None:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=bucket)


def cluster_env(database_url: str, s3_endpoint: str, work: Path, **extra: str) -> dict[str, str]:
    """What every instance shares: the database, the bucket, the secrets; plus `extra`."""
    return {
        "AVATAR_JOBS_DATABASE_URL": database_url,
        "AVATAR_JOBS_S3_BUCKET": BUCKET,
        "AVATAR_S3_ENDPOINT_URL": s3_endpoint,
        "AVATAR_S3_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AVATAR_JOBS_URL_SECRET": URL_SECRET,
        "AVATAR_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "AVATAR_WEBHOOK_ALLOW_PRIVATE": "1",
        "AVATAR_FETCH_ALLOWED_CIDRS": "127.0.0.0/8",
        "AVATAR_JOBS_BACKOFF_S": "0.2",
        "AVATAR_JOBS_LEASE_S": "3",
        "AVATAR_JOBS_MIN_VIDEO_S": "2",
        "AVATAR_API_RATE_LIMIT": "1000",  # the tests poll each job
        **extra,
    }


@contextlib.contextmanager
def running_instances(
    count: int, shared_env: dict[str, str], work: Path, api_key: str | None = None
) -> Iterator[list[ControlApi]]:
    """`count` control APIs with the shared settings, each with its own cache, jobs directory
    and avatar store (separate machines in all but the host), all accepting the same key."""
    from renderers.vision import models_dir  # before AVATAR_CACHE moves for each instance

    key = api_key or uuid.uuid4().hex
    models = str(models_dir())
    with contextlib.ExitStack() as stack:
        apis = []
        for n in range(count):
            own = work / f"instance-{n}-{uuid.uuid4().hex[:6]}"
            env = {
                **shared_env,
                "AVATAR_API_KEYS": key,
                "AVATAR_CACHE": str(own / "cache"),
                "AVATAR_MODELS_DIR": models,  # MediaPipe's face models, set up once
                "AVATAR_JOBS_DIR": str(own / "jobs"),
                "AVATAR_AVATARS_DIR": str(own / "avatars"),
            }
            apis.append(stack.enter_context(running_control_api(NO_LIVEKIT, env)))
        yield apis


def call(
    api: ControlApi, method: str, path: str, body: Any = None, *, timeout: float = 30.0
) -> tuple[int, Any]:
    """(status, parsed JSON) of one request; HTTP errors are answers too."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        api.base_url + path,
        method=method,
        data=data,
        headers={**api.headers(), "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def upload(api: ControlApi, name: str, data: bytes) -> str:
    """POST /api/v1/files (multipart); the signed URL."""
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    body.write(f"--{boundary}\r\n".encode())
    body.write(f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'.encode())
    body.write(b"Content-Type: application/octet-stream\r\n\r\n")
    body.write(data)
    body.write(f"\r\n--{boundary}--\r\n".encode())
    request = urllib.request.Request(
        api.base_url + "/api/v1/files",
        method="POST",
        data=body.getvalue(),
        headers={**api.headers(), "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
        return json.loads(response.read())["url"]


def render_status(api: ControlApi, request_id: str) -> str:
    status, body = call(api, "GET", f"/api/v1/renders/{request_id}/status")
    assert status == 200, body
    return body["status"]


def wait_all(api: ControlApi, ids: list[str], timeout: float = 120.0) -> float:
    """Poll until every render in `ids` has ended; the time it took."""
    started = time.monotonic()
    left = set(ids)
    while left:
        for request_id in list(left):
            if render_status(api, request_id) in ("COMPLETED", "FAILED", "CANCELLED"):
                left.discard(request_id)
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{len(left)} of {len(ids)} renders not done in {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - started


def owner_pid(owner: str | None) -> int | None:
    """The pid in a job's `owner` (runner._owner_id: host:pid:token)."""
    parts = (owner or "").split(":")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")
