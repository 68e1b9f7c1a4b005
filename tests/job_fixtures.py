"""Pieces shared by the job tests: a loopback file server whose answers a test controls (hold a
download, fail the first N with 503), a real S3-compatible server (moto), settings for a
job-running control API, polling."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from control_api.config import Settings
from control_api.jobs.storage import S3Config
from tests.control_api_client import make_settings
from tests.livekit_server import free_port
from tests.loopback_http import QuietHandler, serving

LOOPBACK = ("127.0.0.0/8",)


@dataclass
class Served:
    data: bytes
    content_type: str = "application/octet-stream"
    fail_first: int = 0
    """Answer this many requests with 503 before serving the file."""
    gate: threading.Event | None = None
    """When set, each request waits for the event before answering."""
    requests: int = 0
    started: threading.Event = field(default_factory=threading.Event)


class FileServer:
    """Files by path on a loopback HTTP server, with per-file failures and holds."""

    def __init__(self) -> None:
        self.files: dict[str, Served] = {}
        self.base_url = ""
        self._lock = threading.Lock()

    def add(self, path: str, data: bytes | Path, **options: Any) -> str:
        body = data.read_bytes() if isinstance(data, Path) else data
        self.files[path] = Served(body, **options)
        return self.base_url + path

    def hold(self, path: str, data: bytes | Path, **options: Any) -> tuple[str, threading.Event]:
        """A URL whose download waits until the returned event is set."""
        gate = threading.Event()
        return self.add(path, data, gate=gate, **options), gate

    def release_all(self) -> None:
        for served in self.files.values():
            if served.gate is not None:
                served.gate.set()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 (stdlib's name)
                served = server.files.get(self.path.split("?")[0])
                if served is None:
                    self.send_body(404, b"not found")
                    return
                with server._lock:
                    served.requests += 1
                    failing = served.requests <= served.fail_first
                served.started.set()
                if failing:
                    self.send_body(503, b"try again")
                    return
                if served.gate is not None:
                    served.gate.wait(timeout=60)
                self.send_body(200, served.data, served.content_type)

        return Handler

    @contextlib.contextmanager
    def running(self) -> Iterator[FileServer]:
        with serving(self._handler()) as base_url:
            self.base_url = base_url
            try:
                yield self
            finally:
                self.release_all()


@contextlib.contextmanager
def moto_s3(**config: Any) -> Iterator[S3Config]:
    """moto's S3 server in this process on a free loopback port, as the S3Config that reaches
    it (region us-east-1; `config` sets more fields, such as credentials)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Config(endpoint_url=f"http://{host}:{port}", region="us-east-1", **config)
    finally:
        server.stop()


def job_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a control API that runs jobs quickly against loopback file servers."""
    values: dict[str, Any] = {
        "fetch_allowed_cidrs": LOOPBACK,
        "webhook_allow_private": True,
        "jobs_backoff_s": 0.2,
        "jobs_backoff_max_s": 1.0,
        "jobs_lease_s": 6.0,
        "jobs_url_secret": "test-url-secret-0123456789",
        "webhook_secret": "test-webhook-secret-0123456789",
        "prepare_min_video_s": 2.0,
    }
    values.update(overrides)
    return make_settings(tmp_path, **values)


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 30.0, every: float = 0.1
) -> Any:
    """Poll `check` until it returns something truthy; that value. AssertionError on timeout
    with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s; last value: {last!r}")
