"""Shared pieces of the control API tests: settings for a test app and its client."""

from __future__ import annotations

import io
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from control_api import Settings, create_app
from control_api.config import CLIENT_DIR
from tests.livekit_server import free_port

API_KEY = "test-api-key-0123456789"
AUTH = {"X-API-Key": API_KEY}


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "livekit_url": f"ws://127.0.0.1:{free_port()}",
        "public_livekit_url": "wss://livekit.example.test",
        "livekit_api_key": "test-key",
        "livekit_api_secret": "test-secret-0123456789-0123456789-abcdef",
        "agent_name": "test-avatar-agent",
        "client_dir": CLIENT_DIR,
        "api_keys": (API_KEY,),
        "cache_dir": tmp_path / "cache",
        "backgrounds_dir": tmp_path / "backgrounds",
        "avatars_dir": tmp_path / "avatars",
        "rate_limit_per_s": 1000.0,
        "rate_burst": 1000,
        # No render worker at start (one starts at a test's first render, if any): an app per
        # test must not pay for a process that imports the renderers.
        "render_service_warmup": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def start_client(settings: Settings) -> TestClient:
    client = TestClient(TestServer(create_app(settings), host="127.0.0.1"))
    await client.start_server()
    return client


def png_bytes(rgb: tuple[int, int, int] = (40, 90, 160), size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def assert_error(body: dict, code: str) -> dict:
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]
