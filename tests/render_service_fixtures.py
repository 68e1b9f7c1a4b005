"""The control API as a process for the render service's tests (seed 001): no LiveKit (the
render routes need none; the session routes then answer 503), its own cache, and waited on
until its render workers are warm."""

from __future__ import annotations

import base64
import io
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import requests
from PIL import Image

from renderers.bundled import DEFAULT_PORTRAIT
from tests.control_api_process import ControlApi, running_control_api
from tests.livekit_server import LiveKitServer, free_port

PORTRAIT = DEFAULT_PORTRAIT
"""renderers/assets/portraits/astronaut.jpg"""
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
"""The services here take images of up to 2 MiB (AVATAR_MAX_UPLOAD_BYTES), so that the
oversized-image checks send little."""


def unreachable_livekit() -> LiveKitServer:
    port = free_port()
    return LiveKitServer(
        url=f"ws://127.0.0.1:{port}",
        http_url=f"http://127.0.0.1:{port}",
        api_key="devkey",
        api_secret="avatar-agents-local-dev-secret-0123456789",
    )


@contextmanager
def render_service(
    extra_env: Mapping[str, str] | None = None, *, ready_timeout: float = 90.0
) -> Iterator[ControlApi]:
    """`python -m control_api` with the render service warm: /health says `ready`."""
    from renderers.vision import models_dir

    cache = Path(tempfile.mkdtemp(prefix="render-service-cache-"))
    env = {
        # What meshwarp prepares stays out of the user's cache; the face models are shared.
        "AVATAR_CACHE": str(cache),
        "AVATAR_MODELS_DIR": str(models_dir()),
        "AVATAR_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
        "AVATAR_API_RATE_LIMIT": "100000",
        "AVATAR_API_RATE_BURST": "100000",
        **(extra_env or {}),
    }
    try:
        with running_control_api(unreachable_livekit(), env, extra_args=["--no-access-log"]) as api:
            deadline = time.monotonic() + ready_timeout
            while not requests.get(f"{api.base_url}/health", timeout=10).json().get("ready"):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        "the render service did not get ready:\n" + api.log_path.read_text()[-3000:]
                    )
                time.sleep(0.1)
            yield api
    finally:
        shutil.rmtree(cache, ignore_errors=True)  # meshwarp's rigs: megabytes each


def worker_pids(api: ControlApi) -> list[int]:
    """The render worker processes of the control API `api` (its children running
    control_api.render_service.worker)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent == api.pid and b"control_api.render_service.worker" in cmdline:
            pids.append(int(entry))
    return pids


def variant(seed: int, source: Path = PORTRAIT) -> bytes:
    """The portrait, mirrored and re-encoded with `seed` in a JPEG comment: bytes (and so a
    hash) no worker has seen, with the same face in it."""
    image = Image.open(source).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92, comment=f"variant {seed} {os.getpid()} {time.time()}")
    return out.getvalue()


def grey_png(size: int = 512, level: int = 0x88) -> bytes:
    """Seed 001's warm-up input: a square PNG filled with #888."""
    out = io.BytesIO()
    Image.new("RGB", (size, size), (level, level, level)).save(out, "PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
