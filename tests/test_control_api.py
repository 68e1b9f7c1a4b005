"""Control API over real loopback HTTP; needs no livekit-server."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from livekit import api

from control_api import Settings, create_app

REPO_ROOT = Path(__file__).resolve().parent.parent
KEY = "test-key"
SECRET = "test-secret-0123456789-0123456789-abcdef"


def _closed_port() -> int:
    """A loopback port with (almost certainly) nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "livekit_url": f"ws://127.0.0.1:{_closed_port()}",
        "public_livekit_url": "wss://livekit.example.test",
        "livekit_api_key": KEY,
        "livekit_api_secret": SECRET,
        "agent_name": "test-avatar-agent",
        "client_dir": REPO_ROOT / "client_demo",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def _client(settings: Settings) -> TestClient:
    client = TestClient(TestServer(create_app(settings), host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    c = await _client(_settings())
    yield c
    await c.close()


async def _raw_get(client: TestClient, path: str) -> tuple[int, bytes]:
    """Send `path` byte-for-byte; HTTP client libraries would normalise `..` away first."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


def _assert_error(body: dict, code: str) -> None:
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


# --- health ---------------------------------------------------------------------------------


async def test_health_livekit_unreachable(client: TestClient) -> None:
    resp = await client.get("/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok"
    assert body["livekit"]["url"].startswith("ws://127.0.0.1:")
    assert body["livekit"]["reachable"] is False


async def test_health_livekit_reachable() -> None:
    # A stand-in HTTP server plays LiveKit: any HTTP answer counts as reachable.
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="OK")

    fake = web.Application()
    fake.router.add_get("/", ok)
    server = TestServer(fake, host="127.0.0.1")
    await server.start_server()
    c = await _client(_settings(livekit_url=f"ws://127.0.0.1:{server.port}"))
    try:
        body = await (await c.get("/health")).json()
        assert body["livekit"] == {"url": f"ws://127.0.0.1:{server.port}", "reachable": True}
    finally:
        await c.close()
        await server.close()


# --- token ----------------------------------------------------------------------------------


def _verify(token: str) -> api.access_token.Claims:
    return api.TokenVerifier(KEY, SECRET).verify(token)


async def test_token_with_given_room_and_identity(client: TestClient) -> None:
    resp = await client.post(
        "/token", json={"room": "my-room_1.x", "identity": "alice", "name": "Alice A."}
    )
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert set(body) == {"url", "token", "room", "identity"}
    assert body["url"] == "wss://livekit.example.test"  # the public URL, not the internal one
    assert (body["room"], body["identity"]) == ("my-room_1.x", "alice")

    claims = _verify(body["token"])
    assert claims.identity == "alice"
    assert claims.name == "Alice A."
    video = claims.video
    assert video is not None
    assert video.room == "my-room_1.x"
    assert video.room_join is True
    assert video.can_publish is True
    assert video.can_subscribe is True
    assert video.can_publish_data is True
    assert not video.room_admin and not video.room_create
    assert claims.room_config is not None
    assert [a.agent_name for a in claims.room_config.agents] == ["test-avatar-agent"]


async def test_token_generates_room_and_identity(client: TestClient) -> None:
    first = await (await client.post("/token")).json()  # empty body = all defaults
    second = await (await client.post("/token", json={})).json()
    for body in (first, second):
        assert body["room"].startswith("avatar-")
        assert body["identity"]
        claims = _verify(body["token"])
        assert claims.identity == body["identity"]
        assert claims.video is not None and claims.video.room == body["room"]
    assert first["room"] != second["room"]
    assert first["identity"] != second["identity"]


async def test_token_ttl_is_one_hour(client: TestClient) -> None:
    import jwt  # PyJWT, a dependency of livekit-api

    body = await (await client.post("/token", json={})).json()
    payload = jwt.decode(body["token"], SECRET, algorithms=["HS256"], issuer=KEY)
    assert payload["exp"] - payload["nbf"] == 3600


async def test_token_rejects_bad_json(client: TestClient) -> None:
    resp = await client.post(
        "/token", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    _assert_error(await resp.json(), "invalid_json")


@pytest.mark.parametrize(
    "payload",
    [
        {"room": "bad room"},
        {"room": ""},
        {"room": "x" * 129},
        {"room": "a/b"},
        {"identity": 42},
        {"identity": "é"},
        {"name": ["not", "a", "string"]},
        {"roomName": "typo"},
    ],
)
async def test_token_rejects_bad_fields(client: TestClient, payload: dict) -> None:
    resp = await client.post("/token", json=payload)
    assert resp.status == 422
    _assert_error(await resp.json(), "invalid_field")


async def test_token_rejects_non_object_body(client: TestClient) -> None:
    resp = await client.post("/token", json=["room"])
    assert resp.status == 422
    _assert_error(await resp.json(), "invalid_body")


async def test_token_rejects_huge_body(client: TestClient) -> None:
    resp = await client.post("/token", json={"name": "x" * 200_000})
    assert resp.status == 413
    _assert_error(await resp.json(), "payload_too_large")


# --- errors ---------------------------------------------------------------------------------


async def test_unknown_path_is_json_404(client: TestClient) -> None:
    resp = await client.get("/no/such/thing")
    assert resp.status == 404
    assert resp.content_type == "application/json"
    _assert_error(await resp.json(), "not_found")


async def test_wrong_method_is_json_405(client: TestClient) -> None:
    resp = await client.get("/token")
    assert resp.status == 405
    assert "POST" in resp.headers["Allow"]
    _assert_error(await resp.json(), "method_not_allowed")


async def test_unexpected_error_does_not_leak_traceback(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_args: object, **_kwargs: object) -> str:
        raise RuntimeError("secret internals")

    monkeypatch.setattr("control_api.app.mint_token", boom)
    resp = await client.post("/token", json={})
    assert resp.status == 500
    text = await resp.text()
    assert "secret internals" not in text and "Traceback" not in text
    _assert_error(json.loads(text), "internal_error")


# --- demo page ------------------------------------------------------------------------------


async def test_index_serves_demo_page(client: TestClient) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    html = await resp.text()
    assert "/vendor/livekit-client.umd.js" in html
    assert "/static/app.js" in html


async def test_static_serves_client_files(client: TestClient) -> None:
    resp = await client.get("/static/app.js")
    assert resp.status == 200
    assert "avatarDemo" in await resp.text()


async def test_vendor_missing_is_clear_503(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>x</title>")
    c = await _client(_settings(client_dir=tmp_path))
    try:
        resp = await c.get("/vendor/livekit-client.umd.js")
        assert resp.status == 503
        body = await resp.json()
        _assert_error(body, "vendor_missing")
        assert "make setup" in body["error"]["message"]
    finally:
        await c.close()


@pytest.mark.parametrize(
    "path",
    [
        "/static/../control_api/app.py",
        "/static/%2e%2e/control_api/app.py",
        "/static/%2E%2E%2Fcontrol_api%2Fapp.py",
        "/static/..%2fcontrol_api%2fapp.py",
        "/static/%2e%2e%2f%2e%2e%2fcontrol_api/app.py",
        f"/static/{REPO_ROOT}/control_api/app.py",  # absolute path after the prefix
    ],
)
async def test_static_path_traversal_is_refused(client: TestClient, path: str) -> None:
    # Control: the raw helper does fetch real files when the path is legitimate.
    ok_status, ok_body = await _raw_get(client, "/static/app.js")
    assert ok_status == 200 and b"avatarDemo" in ok_body

    status, body = await _raw_get(client, path)
    assert status in (400, 403, 404)
    assert b"create_app" not in body
    assert b"import" not in body
