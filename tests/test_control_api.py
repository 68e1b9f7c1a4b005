"""The control API over real loopback HTTP, for everything that needs no livekit-server:
auth, CORS, rate limits, body and upload limits, the error shape, tokens, the catalog, health
with LiveKit down, the OpenAPI document and the web client's files."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from livekit import api

import renderers
from avatar_runtime import EMOTIONS
from avatar_runtime.backgrounds import ID_PATTERN as BACKGROUND_ID
from control_api import app as app_module
from control_api import create_app, openapi
from control_api.app import ROUTES
from control_api.config import ConfigError, Settings
from control_api.errors import ApiError
from control_api.security import KEY_FILE_NAME, ensure_credentials
from control_api.validation import ID_PATTERN, boolean, string, unit_interval
from tests.control_api_client import (
    API_KEY,
    AUTH,
    assert_error,
    make_settings,
    png_bytes,
    start_client,
)

JWT_SECRET = "jwt-secret-for-tests-0123456789-abcdef"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    c = await start_client(make_settings(tmp_path))
    yield c
    await c.close()


async def _raw_get(client: TestClient, path: str, headers: str = "") -> tuple[int, bytes]:
    """Send `path` byte-for-byte; HTTP client libraries would normalise `..` away first."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# --- auth -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/emotions", "/backgrounds", "/avatars", "/metrics", "/api/v1/ready"]
)
async def test_protected_routes_refuse_requests_without_credentials(
    client: TestClient, path: str
) -> None:
    resp = await client.get(path)
    assert resp.status == 401
    assert "Bearer" in resp.headers["WWW-Authenticate"]
    error = assert_error(await resp.json(), "unauthorized")
    assert "X-API-Key" in error["message"]


async def test_wrong_key_is_refused_and_right_key_in_either_header_is_accepted(
    client: TestClient,
) -> None:
    assert (await client.get("/emotions", headers={"X-API-Key": "nope"})).status == 401
    assert (await client.get("/emotions", headers={"Authorization": "Bearer nope"})).status == 401
    assert (
        await client.get("/emotions", headers={"Authorization": "Basic " + API_KEY})
    ).status == 401
    assert (await client.get("/emotions", headers=AUTH)).status == 200
    assert (
        await client.get("/emotions", headers={"Authorization": f"Bearer {API_KEY}"})
    ).status == 200


async def test_query_token_is_only_accepted_on_the_websocket(client: TestClient) -> None:
    resp = await client.get(f"/emotions?access_token={API_KEY}")
    assert resp.status == 401
    # On /ws/ the key in the query authenticates (the unknown session then answers 503/404,
    # not 401: LiveKit is down in this test).
    resp = await client.get(f"/ws/some-session?access_token={API_KEY}")
    assert resp.status != 401
    assert (await client.get("/ws/some-session")).status == 401


@pytest.mark.parametrize(
    "path", ["/health", "/api/v1/health", "/api/v1/live", "/openapi.json", "/docs"]
)
async def test_probes_and_docs_are_open(client: TestClient, path: str) -> None:
    assert (await client.get(path)).status == 200


def _jwt(secret: str = JWT_SECRET, **claims: object) -> str:
    payload = {"sub": "alice", "exp": int(time.time()) + 60, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


async def test_jwt_is_accepted_when_signed_with_the_secret_and_unexpired(tmp_path: Path) -> None:
    c = await start_client(make_settings(tmp_path, api_keys=(), jwt_secret=JWT_SECRET))
    try:

        async def status(token: str) -> tuple[int, dict]:
            resp = await c.get("/emotions", headers={"Authorization": f"Bearer {token}"})
            return resp.status, await resp.json()

        assert (await status(_jwt()))[0] == 200
        code, body = await status(_jwt(exp=int(time.time()) - 60))
        assert code == 401 and "expired" in body["error"]["message"]
        assert (await status(_jwt(secret="another-secret-0123456789-0123456789")))[0] == 401
        no_exp = jwt.encode({"sub": "alice"}, JWT_SECRET, algorithm="HS256")
        assert (await status(no_exp))[0] == 401
        none_alg = jwt.encode({"sub": "a", "exp": int(time.time()) + 60}, None, algorithm="none")
        assert (await status(none_alg))[0] == 401
    finally:
        await c.close()


def test_a_development_key_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_keys=())
    first, key = ensure_credentials(settings)
    assert key and first.api_keys == (key,)
    path = tmp_path / "cache" / KEY_FILE_NAME
    assert path.stat().st_mode & 0o777 == 0o600
    again, same = ensure_credentials(settings)
    assert same == key and again.api_keys == (key,)
    # Configured credentials win; nothing is generated.
    configured, none = ensure_credentials(make_settings(tmp_path, api_keys=("k",)))
    assert none is None and configured.api_keys == ("k",)


def test_an_app_without_any_credentials_does_not_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AVATAR_API_KEYS"):
        create_app(make_settings(tmp_path, api_keys=()))


async def test_auth_can_be_disabled_explicitly(tmp_path: Path) -> None:
    c = await start_client(make_settings(tmp_path, api_keys=(), auth="disabled"))
    try:
        assert (await c.get("/emotions")).status == 200
    finally:
        await c.close()


def test_settings_from_env_reject_what_cannot_work() -> None:
    base = {"AVATAR_API_KEYS": "k"}
    with pytest.raises(ConfigError, match="AVATAR_API_AUTH"):
        Settings.from_env({**base, "AVATAR_API_AUTH": "maybe"})
    with pytest.raises(ConfigError, match="AVATAR_API_JWT_SECRET"):
        Settings.from_env({**base, "AVATAR_API_JWT_SECRET": "short"})
    with pytest.raises(ConfigError, match="AVATAR_CORS_ORIGINS"):
        Settings.from_env({**base, "AVATAR_CORS_ORIGINS": "localhost:3000"})
    with pytest.raises(ConfigError, match="AVATAR_MAX_SESSIONS"):
        Settings.from_env({**base, "AVATAR_MAX_SESSIONS": "lots"})
    settings = Settings.from_env(
        {
            **base,
            "AVATAR_CORS_ORIGINS": "http://a.test, https://b.test/",
            "AVATAR_API_RATE_LIMIT": "5",
        }
    )
    assert settings.cors_origins == ("http://a.test", "https://b.test")
    assert settings.rate_limit_per_s == 5.0 and settings.api_keys == ("k",)


# --- CORS -------------------------------------------------------------------------------------


@pytest.fixture
async def cors_client(tmp_path: Path) -> AsyncIterator[TestClient]:
    c = await start_client(make_settings(tmp_path, cors_origins=("http://localhost:3001",)))
    yield c
    await c.close()


async def test_preflight_from_an_allowed_origin_needs_no_credentials(
    cors_client: TestClient,
) -> None:
    resp = await cors_client.options(
        "/avatars/s1/emotion",
        headers={
            "Origin": "http://localhost:3001",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-api-key",
        },
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:3001"
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    allowed_headers = resp.headers["Access-Control-Allow-Headers"].lower()
    assert "x-api-key" in allowed_headers and "content-type" in allowed_headers
    assert "authorization" in allowed_headers
    assert int(resp.headers["Access-Control-Max-Age"]) > 0


async def test_preflight_from_another_origin_is_refused(cors_client: TestClient) -> None:
    resp = await cors_client.options(
        "/avatars",
        headers={"Origin": "http://evil.test", "Access-Control-Request-Method": "POST"},
    )
    assert resp.status == 403
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert_error(await resp.json(), "cors_origin_not_allowed")


async def test_responses_carry_cors_headers_only_for_allowed_origins(
    cors_client: TestClient,
) -> None:
    ok = await cors_client.get("/health", headers={"Origin": "http://localhost:3001"})
    assert ok.headers["Access-Control-Allow-Origin"] == "http://localhost:3001"
    assert "Origin" in ok.headers["Vary"]
    # Errors too, so the page can read them.
    denied = await cors_client.get("/emotions", headers={"Origin": "http://localhost:3001"})
    assert denied.status == 401
    assert denied.headers["Access-Control-Allow-Origin"] == "http://localhost:3001"
    other = await cors_client.get("/health", headers={"Origin": "http://evil.test"})
    assert "Access-Control-Allow-Origin" not in other.headers


async def test_without_configured_origins_no_cross_origin_access(client: TestClient) -> None:
    resp = await client.get("/health", headers={"Origin": "http://localhost:3001"})
    assert "Access-Control-Allow-Origin" not in resp.headers


# --- rate limits and sizes ---------------------------------------------------------------------


async def test_rate_limit_is_per_caller_and_says_when_to_retry(tmp_path: Path) -> None:
    c = await start_client(
        make_settings(
            tmp_path, api_keys=(API_KEY, "second-key"), rate_limit_per_s=1.0, rate_burst=3
        )
    )
    try:
        statuses = [(await c.get("/emotions", headers=AUTH)).status for _ in range(3)]
        assert statuses == [200, 200, 200]
        limited = await c.get("/emotions", headers=AUTH)
        assert limited.status == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert_error(await limited.json(), "rate_limited")
        # Another caller has its own bucket; probes are never limited.
        assert (await c.get("/emotions", headers={"X-API-Key": "second-key"})).status == 200
        assert (await c.get("/health")).status == 200
    finally:
        await c.close()


async def test_bad_json_bodies_get_clear_errors(client: TestClient) -> None:
    bad = await client.post(
        "/token", data=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert bad.status == 400
    assert_error(await bad.json(), "invalid_json")
    not_object = await client.post("/token", json=["room"], headers=AUTH)
    assert not_object.status == 422
    assert_error(await not_object.json(), "invalid_body")
    huge = await client.post("/token", json={"name": "x" * 200_000}, headers=AUTH)
    assert huge.status == 413
    assert_error(await huge.json(), "payload_too_large")


async def test_unknown_path_and_wrong_method_are_json(client: TestClient) -> None:
    resp = await client.get("/no/such/thing", headers=AUTH)
    assert resp.status == 404 and resp.content_type == "application/json"
    assert_error(await resp.json(), "not_found")
    resp = await client.get("/token", headers=AUTH)
    assert resp.status == 405 and "POST" in resp.headers["Allow"]
    assert_error(await resp.json(), "method_not_allowed")


async def test_unexpected_error_does_not_leak_a_traceback(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_args: object, **_kwargs: object) -> str:
        raise RuntimeError("secret internals")

    monkeypatch.setattr("control_api.tokens.mint_token", boom)
    resp = await client.post("/token", json={}, headers=AUTH)
    assert resp.status == 500
    text = await resp.text()
    assert "secret internals" not in text and "Traceback" not in text
    assert_error(json.loads(text), "internal_error")
    assert resp.headers["X-Request-Id"]


# --- tokens -----------------------------------------------------------------------------------


async def test_token_for_a_given_room_dispatches_the_agent(client: TestClient) -> None:
    resp = await client.post(
        "/token",
        json={"room": "my-room_1.x", "identity": "alice", "name": "Alice A."},
        headers=AUTH,
    )
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert set(body) == {"url", "token", "room", "identity"}
    assert body["url"] == "wss://livekit.example.test"  # the public URL, not the internal one
    claims = api.TokenVerifier("test-key", "test-secret-0123456789-0123456789-abcdef").verify(
        body["token"]
    )
    assert (claims.identity, claims.name) == ("alice", "Alice A.")
    assert claims.video is not None and claims.video.room == "my-room_1.x"
    assert claims.video.room_join and claims.video.can_publish and claims.video.can_subscribe
    assert not claims.video.room_admin and not claims.video.room_create
    assert claims.room_config is not None
    assert [a.agent_name for a in claims.room_config.agents] == ["test-avatar-agent"]
    payload = jwt.decode(body["token"], options={"verify_signature": False})
    assert payload["exp"] - payload["nbf"] == 3600


@pytest.mark.parametrize(
    "payload",
    [
        {"room": "bad room"},
        {"room": ""},
        {"room": "x" * 129},
        {"identity": 42},
        {"identity": "é"},
        {"name": ["x"]},
        {"roomName": "typo"},
    ],
)
async def test_token_rejects_bad_fields(client: TestClient, payload: dict) -> None:
    resp = await client.post("/token", json=payload, headers=AUTH)
    assert resp.status == 422
    assert_error(await resp.json(), "invalid_field")


async def test_token_body_may_be_left_out_as_the_document_says(client: TestClient) -> None:
    """Every field of POST /token has a default (a new room, a new identity), so no body at all
    is a request for a fresh room, and JSON null is a field not given."""
    spec = await (await client.get("/openapi.json")).json()
    assert spec["paths"]["/token"]["post"]["requestBody"]["required"] is False
    for body in (None, {}, {"room": None, "identity": None, "name": None}):
        resp = await client.post("/token", json=body, headers=AUTH)
        assert resp.status == 200, body
        answer = await resp.json()
        assert answer["room"].startswith("avatar-") and answer["identity"].startswith("user-")
    # Routes with required fields keep their bodies required.
    assert spec["paths"]["/avatars"]["post"]["requestBody"]["required"] is True


def test_null_is_a_field_not_given() -> None:
    assert string({"name": None}, "name", max_length=8, default="") == ""
    assert boolean({"interrupt": None}, "interrupt", False) is False
    assert unit_interval({"intensity": None}, "intensity", 0.7, "invalid_intensity") == 0.7
    with pytest.raises(ApiError, match="must be a string"):  # a required field stays required
        string({"text": None}, "text", max_length=8)


# --- catalog ----------------------------------------------------------------------------------


async def test_emotions_lists_every_emotion_the_runtime_knows(client: TestClient) -> None:
    body = await (await client.get("/emotions", headers=AUTH)).json()
    assert [e["id"] for e in body["emotions"]] == list(EMOTIONS)
    assert all(e["description"] for e in body["emotions"])
    assert body["default"] == "neutral"


def _upload(
    background_id: str | None, data: bytes | None, filename: str = "bg.png"
) -> aiohttp.FormData:
    form = aiohttp.FormData(default_to_multipart=True)
    if background_id is not None:
        form.add_field("id", background_id)
    if data is not None:
        form.add_field("file", data, filename=filename, content_type="image/png")
    return form


# The images bundled with the runtime, listed after the built-in specs with any upload
# (tests/test_backgrounds_bundled.py tests them).
BUNDLED = ["clinic_room", "consultation_room", "hospital_room", "medical_office"]


async def test_background_upload_list_fetch_and_delete(client: TestClient) -> None:
    resp = await client.post("/backgrounds", data=_upload("beach", png_bytes()), headers=AUTH)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["url"] == "/backgrounds/beach.png"

    listed = await (await client.get("/backgrounds", headers=AUTH)).json()
    ids = [b["id"] for b in listed["backgrounds"]]
    assert ids == ["original", "blur", "color:#RRGGBB", "beach", *BUNDLED]

    image = await client.get("/backgrounds/beach.png", headers=AUTH)
    assert image.status == 200 and (await image.read()).startswith(b"\x89PNG")

    deleted = await client.delete("/backgrounds/beach", headers=AUTH)
    assert (await deleted.json()) == {"id": "beach", "deleted": True}
    again = await client.delete("/backgrounds/beach", headers=AUTH)
    assert again.status == 404
    assert_error(await again.json(), "background_not_found")
    assert (await client.get("/backgrounds/beach.png", headers=AUTH)).status == 404


async def test_background_uploads_are_validated(tmp_path: Path) -> None:
    c = await start_client(make_settings(tmp_path, max_upload_bytes=50_000))
    try:

        async def upload(form: aiohttp.FormData | bytes, **headers: str) -> tuple[int, dict]:
            resp = await c.post("/backgrounds", data=form, headers={**AUTH, **headers})
            return resp.status, await resp.json()

        status, body = await upload(_upload("big", b"\x89PNG" + b"\0" * 60_000))
        assert status == 413 and "50000" in assert_error(body, "payload_too_large")["message"]
        status, body = await upload(_upload("junk", b"not an image at all"))
        assert status == 422
        assert_error(body, "invalid_image")
        for bad_id in ("../etc", "Has Caps", "original", "blur", ""):
            status, body = await upload(_upload(bad_id, png_bytes()))
            assert status == 422, bad_id
            assert_error(body, "invalid_field")
        status, body = await upload(_upload("only-id", None))
        assert status == 422
        status, body = await upload(b'{"id": "x"}', **{"Content-Type": "application/json"})
        assert status == 415
        assert_error(body, "unsupported_media_type")
        # Nothing half-written was left behind.
        listed = await (await c.get("/backgrounds", headers=AUTH)).json()
        assert [b["id"] for b in listed["backgrounds"]][3:] == BUNDLED
    finally:
        await c.close()


# --- health -----------------------------------------------------------------------------------


async def test_health_reports_livekit_down_renderers_and_gpu(client: TestClient) -> None:
    body = await (await client.get("/health")).json()
    assert body["status"] == "degraded"
    assert body["livekit"]["url"].startswith("ws://127.0.0.1:")
    assert body["livekit"]["reachable"] is False
    names = {r["name"]: r for r in body["renderers"]}
    assert names["testcard"]["available"] is True
    assert (
        isinstance(body["gpuAvailable"], bool) and body["gpu"]["available"] == body["gpuAvailable"]
    )
    assert body["sessions"] == 0
    same = await (await client.get("/api/v1/health")).json()
    assert set(same) == set(body) and same["livekit"] == body["livekit"]


async def test_ready_fails_while_livekit_is_down_and_passes_when_it_answers(tmp_path: Path) -> None:
    down = await start_client(make_settings(tmp_path))
    try:
        resp = await down.get("/api/v1/ready", headers=AUTH)
        assert resp.status == 503
        assert "LiveKit" in assert_error(await resp.json(), "not_ready")["message"]
        assert (await down.get("/api/v1/live")).status == 200
    finally:
        await down.close()

    async def ok(_: web.Request) -> web.Response:  # any HTTP answer counts as reachable
        return web.Response(text="OK")

    fake = web.Application()
    fake.router.add_get("/", ok)
    server = TestServer(fake, host="127.0.0.1")
    await server.start_server()
    up = await start_client(make_settings(tmp_path, livekit_url=f"ws://127.0.0.1:{server.port}"))
    try:
        assert await (await up.get("/api/v1/ready", headers=AUTH)).json() == {"ready": True}
        assert (await (await up.get("/health")).json())["status"] == "ok"
    finally:
        await up.close()
        await server.close()


async def test_sessions_answer_503_while_livekit_is_down(client: TestClient) -> None:
    resp = await client.post("/avatars", json={"avatar_id": "default"}, headers=AUTH)
    assert resp.status == 503
    assert (
        "cannot reach LiveKit" in assert_error(await resp.json(), "livekit_unavailable")["message"]
    )
    resp = await client.get("/avatars/some-session", headers=AUTH)
    assert resp.status == 503


# --- metrics ----------------------------------------------------------------------------------


async def test_metrics_count_requests_by_route_and_errors_by_code(client: TestClient) -> None:
    await client.get("/emotions", headers=AUTH)
    await client.get("/emotions")  # 401
    await client.get("/avatars/abc", headers=AUTH)  # 503, LiveKit down
    text = await (await client.get("/metrics", headers=AUTH)).text()
    assert 'avatar_api_requests_total{method="GET",route="/emotions",status="200"} 1.0' in text
    assert 'avatar_api_requests_total{method="GET",route="/emotions",status="401"} 1.0' in text
    assert 'route="/avatars/{session_id}",status="503"' in text  # the pattern, not the id
    assert 'avatar_api_errors_total{code="unauthorized"} 1.0' in text
    assert 'avatar_api_errors_total{code="livekit_unavailable"} 1.0' in text
    assert "avatar_api_request_duration_seconds_bucket" in text
    assert "avatar_sessions_active 0.0" in text


# --- OpenAPI and docs -------------------------------------------------------------------------


async def test_openapi_describes_exactly_the_served_routes(client: TestClient) -> None:
    spec = await (await client.get("/openapi.json")).json()
    described = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    served = set()
    for resource in client.app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter")
        if path is None or path.startswith("/static"):
            continue
        for route in resource:
            if route.method != "HEAD":
                served.add((route.method, path))
    assert described == served
    assert described == {(r.method, r.path) for r in ROUTES}
    emotion = spec["paths"]["/avatars/{session_id}/emotion"]["post"]
    assert emotion["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "emotion"
    ]
    assert spec["paths"]["/health"]["get"]["security"] == []
    assert spec["paths"]["/avatars"]["post"]["security"]


async def test_openapi_is_valid_and_says_what_every_operation_answers(client: TestClient) -> None:
    spec = await (await client.get("/openapi.json")).json()
    validator = pytest.importorskip("openapi_spec_validator")  # comes with moto[server]
    validator.validate(spec)  # operation ids unique, every $ref resolves
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            responses = operation["responses"]
            assert responses["default"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }, where
            (success,) = [status for status in responses if status.startswith(("1", "2"))]
            content = responses[success].get("content", {})
            if success == "101":  # a WebSocket upgrade: session events, seed 004's streaming
                assert path in ("/ws/{session_id}", "/api/v1/stream/ws") and not content
                continue
            assert content, where
            if "application/json" in content:
                assert content["application/json"].get("schema"), where
            declared = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            assert declared == re.findall(r"\{(\w+)\}", path), where
    # The WebSockets alone take credentials in the query, as the service does.
    websockets = ("/ws/{session_id}", "/api/v1/stream/ws")
    for path in websockets:
        assert {"accessToken": []} in spec["paths"][path]["get"]["security"]
    assert all(
        {"accessToken": []} not in operation.get("security", [])
        for path, operations in spec["paths"].items()
        if path not in websockets
        for operation in operations.values()
    )


def _body_schema(spec: dict, path: str, method: str = "post") -> dict:
    content = spec["paths"][path][method]["requestBody"]["content"]
    return next(iter(content.values()))["schema"]


async def test_openapi_takes_its_values_and_patterns_from_the_validators(
    client: TestClient,
) -> None:
    spec = await (await client.get("/openapi.json")).json()
    emotion = _body_schema(spec, "/avatars/{session_id}/emotion")["properties"]["emotion"]
    assert emotion["enum"] == list(EMOTIONS)
    render = _body_schema(spec, "/api/v1/renders")["properties"]
    assert render["emotion"]["enum"] == [*EMOTIONS, None]  # null: not given, the default
    assert render["renderer"]["enum"] == [*renderers.available(), None]

    def path_pattern(path: str, name: str) -> str:
        operation = next(iter(spec["paths"][path].values()))
        (parameter,) = [p for p in operation["parameters"] if p["name"] == name]
        return parameter["schema"]["pattern"]

    session_ids = {
        path_pattern("/avatars/{session_id}", "session_id"),
        _body_schema(spec, "/avatars")["properties"]["session_id"]["pattern"],
        _body_schema(spec, "/token")["properties"]["room"]["pattern"],
        _body_schema(spec, "/token")["properties"]["identity"]["pattern"],
    }
    background_ids = {path_pattern("/backgrounds/{background_id}.png", "background_id")}
    for patterns, rule in ((session_ids, ID_PATTERN), (background_ids, BACKGROUND_ID)):
        (schema_pattern,) = patterns
        # A JSON Schema pattern is searched; anchored, it says what the validator's fullmatch
        # says (newlines aside: Python's `$` also matches before a last one, ECMA-262's not).
        for sample in ("a", "A.b-c_9", "room_123", "", "x" * 129, "bad room", "é", "a/b", "-x"):
            assert bool(re.search(schema_pattern, sample)) == bool(rule.fullmatch(sample)), sample


def test_not_blank_in_the_document_is_what_strip_leaves() -> None:
    """`say` trims its text with str.strip(); the document's pattern spells the same set out
    (JSON Schema's `\\s` is ECMA-262's, which differs: U+001C..U+001F, U+0085, U+FEFF)."""
    not_blank = re.compile(openapi.NOT_BLANK)
    for code in range(0x110000):
        char = chr(code)
        assert bool(not_blank.fullmatch(char)) == bool(char.strip()), hex(code)


async def test_runpod_routes_answer_the_error_shape_the_document_declares(
    client: TestClient,
) -> None:
    spec = await (await client.get("/openapi.json")).json()
    plain = {"$ref": "#/components/schemas/PlainError"}
    for path, method, status in (
        ("/run", "post", "400"),
        ("/runsync", "post", "400"),
        ("/status/{job_id}", "get", "404"),
        ("/v2/{endpoint_id}/cancel/{job_id}", "post", "404"),
    ):
        responses = spec["paths"][path][method]["responses"]
        assert responses[status]["content"]["application/json"]["schema"] == plain, path
    bad = await client.post("/run", json={"input": {"video_url": "ftp://x"}}, headers=AUTH)
    assert bad.status == 400 and isinstance((await bad.json())["error"], str)
    missing = await client.get("/v2/endpoint/status/no-such-job", headers=AUTH)
    assert missing.status == 404 and isinstance((await missing.json())["error"], str)
    # Refusals made before the route runs keep the service's shape (the `default` response).
    assert_error(await (await client.post("/run", json={})).json(), "unauthorized")


async def test_docs_page_lists_every_route(client: TestClient) -> None:
    page = await (await client.get("/docs")).text()
    for route in ROUTES:
        assert route.path in page, route.path


# --- web client files -------------------------------------------------------------------------


async def test_index_is_the_web_client_or_says_how_to_build_it(tmp_path: Path) -> None:
    built = tmp_path / "client"
    (built / "dist").mkdir(parents=True)
    (built / "index.html").write_text("<!doctype html><title>demo</title>")
    (built / "dist" / "app.js").write_text("console.log(1)")
    c = await start_client(make_settings(tmp_path, client_dir=built))
    try:
        page = await c.get("/")
        assert page.status == 200 and page.content_type == "text/html"
        assert (await c.get("/static/dist/app.js")).status == 200
        (built / "dist" / "app.js").unlink()
        resp = await c.get("/")
        assert resp.status == 503
        assert "make setup" in assert_error(await resp.json(), "client_not_built")["message"]
    finally:
        await c.close()


@pytest.mark.parametrize(
    "path",
    [
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/%2E%2E%2Fapp.py",
        "/static/..%2fapp.py",
        "/static/%2e%2e%2f%2e%2e%2fcontrol_api/app.py",
        "/static/{package}/app.py",  # absolute path after the prefix
        "/backgrounds/..%2f..%2fetc%2fpasswd.png",
    ],
)
async def test_path_traversal_is_refused(tmp_path: Path, path: str) -> None:
    # The page's folder laid out as it is for real (control_api/web/ beside control_api's
    # code), so a traversal that got through would find the code.
    package = tmp_path / "control_api"
    (package / "web").mkdir(parents=True)
    (package / "web" / "index.html").write_text("<!doctype html><html><title>demo</title></html>")
    shutil.copyfile(Path(app_module.__file__), package / "app.py")
    c = await start_client(make_settings(tmp_path, client_dir=package / "web"))
    try:
        ok_status, ok_body = await _raw_get(c, "/static/index.html")
        assert ok_status == 200 and b"<html" in ok_body.lower()  # control: the helper works
        request = path.format(package=package)
        status, body = await _raw_get(c, request, headers=f"X-API-Key: {API_KEY}\r\n")
        assert status in (400, 403, 404)
        assert b"create_app" not in body and b"root:" not in body
    finally:
        await c.close()
