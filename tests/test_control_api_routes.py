"""What every route answers by its method and its body's size, walked over the router and
asked over real loopback HTTP: HEAD wherever GET is (seed 002's `curl -I` check), a 405's
`Allow` naming exactly the route's methods, and each route's body limit (seed 003's data:
URIs on the render routes, 64 KiB elsewhere)."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from PIL import Image

from control_api.app import ROUTES
from tests.control_api_client import AUTH, assert_error, start_client
from tests.job_fixtures import job_settings

ORIGIN = "http://localhost:3001"
# Path parameters filled in to make a path each route serves (a 404 for the id is fine:
# the point is what the route answers, not that the thing exists).
SAMPLES = {"background_id": "medical_office"}
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
_PARAM = re.compile(r"\{(\w+)\}")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    page = tmp_path / "page"
    (page / "dist").mkdir(parents=True)
    (page / "index.html").write_text("<!doctype html><title>demo</title>")
    (page / "dist" / "app.js").write_text("console.log(1)")
    settings = job_settings(tmp_path, cors_origins=(ORIGIN,), client_dir=page)
    c = await start_client(settings)
    yield c
    await c.close()


def _served(app: web.Application) -> Iterator[tuple[str, str, set[str]]]:
    """(pattern, a path it serves, the methods it answers) for every resource."""
    for resource in app.router.resources():
        info = resource.get_info()
        methods = {route.method for route in resource}
        if "prefix" in info:  # the web page's static files
            yield info["prefix"], info["prefix"] + "/index.html", methods
            continue
        pattern = info.get("path") or info["formatter"]
        path = _PARAM.sub(lambda m: SAMPLES.get(m[1], "x"), pattern)
        yield pattern, path, methods


def _declared_methods(pattern: str) -> set[str]:
    """The methods the route table gives `pattern`, HEAD beside each GET."""
    methods = {route.method for route in ROUTES if route.path == pattern}
    return methods | {"HEAD"} if "GET" in methods else methods


async def test_head_answers_wherever_get_does_with_the_same_headers(client: TestClient) -> None:
    checked = 0
    for pattern, path, methods in _served(client.app):
        if "GET" not in methods:
            continue
        assert "HEAD" in methods, pattern
        headers = {**AUTH, "Origin": ORIGIN}
        get = await client.get(path, headers=headers)
        head = await client.head(path, headers=headers)
        assert head.status == get.status, (pattern, head.status, get.status)
        assert head.status != 405, pattern  # (503s are GET's too: LiveKit is not running)
        assert await head.read() == b"", pattern
        for name in (
            "Content-Type",
            "Access-Control-Allow-Origin",
            "Access-Control-Expose-Headers",
            "Vary",
            "Cache-Control",
            "X-Content-Type-Options",
            "Accept-Ranges",
            "WWW-Authenticate",
        ):
            assert head.headers.get(name) == get.headers.get(name), (pattern, name)
        assert head.headers["X-Request-Id"]
        await get.read()
        checked += 1
    assert checked >= 20  # every GET of the route table and the static files


async def test_seed_002_curl_head_of_health_shows_the_cors_headers(client: TestClient) -> None:
    # curl -I -H "Origin: http://localhost:3001" http://localhost:8080/health
    resp = await client.head("/health", headers={"Origin": ORIGIN})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert resp.headers["Content-Type"].startswith("application/json")
    assert int(resp.headers["Content-Length"]) > 0 and await resp.read() == b""
    image = await client.head("/backgrounds/medical_office.png", headers=AUTH)
    assert image.status == 200 and image.headers["Content-Type"] == "image/jpeg"
    assert int(image.headers["Content-Length"]) > 1000 and await image.read() == b""


async def test_a_405_allows_exactly_the_methods_the_route_answers(client: TestClient) -> None:
    checked = 0
    for pattern, path, methods in _served(client.app):
        expected = methods if pattern == "/static" else _declared_methods(pattern)
        assert methods == expected, pattern
        for method in METHODS:
            if method in methods:
                continue
            resp = await client.request(method, path, headers=AUTH)
            assert resp.status == 405, (method, path, resp.status)
            assert set(resp.headers["Allow"].split(",")) == expected, (method, path)
            if method != "HEAD":
                assert_error(await resp.json(), "method_not_allowed")
            checked += 1
    assert checked > 100


async def test_an_image_route_does_not_offer_delete(client: TestClient) -> None:
    resp = await client.delete("/backgrounds/medical_office.png", headers=AUTH)
    assert resp.status == 405
    assert resp.headers["Allow"] == "GET,HEAD"
    resp = await client.put("/backgrounds/0.png", headers=AUTH)
    assert resp.status == 405 and resp.headers["Allow"] == "GET,HEAD"
    # The background itself is still deleted by its id.
    resp = await client.delete("/backgrounds/medical_office", headers=AUTH)
    assert resp.status == 409
    assert_error(await resp.json(), "background_bundled")


async def test_a_preflight_offers_the_methods_of_its_route(client: TestClient) -> None:
    def preflight(method: str) -> dict[str, str]:
        return {"Origin": ORIGIN, "Access-Control-Request-Method": method}

    resp = await client.options("/backgrounds/x.png", headers=preflight("GET"))
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
    resp = await client.options("/backgrounds/x.png", headers=preflight("DELETE"))
    assert resp.status == 405 and resp.headers["Allow"] == "GET,HEAD"
    assert_error(await resp.json(), "method_not_allowed")
    resp = await client.options("/avatars/s1", headers=preflight("DELETE"))
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Methods"] == "DELETE, GET, HEAD"
    resp = await client.options("/backgrounds", headers=preflight("POST"))
    assert resp.status == 204 and "POST" in resp.headers["Access-Control-Allow-Methods"]


# --- body limits --------------------------------------------------------------------------


def _photo_png(size: int = 512) -> bytes:
    """An ordinary 512x512 photo-like PNG: smooth shading with sensor noise, ~0.5 MiB."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 0.4, y * 0.3, (x + y) * 0.2], axis=-1) + 40
    noisy = base + rng.normal(0, 12, base.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _data_uri(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64," + base64.b64encode(data).decode()


@pytest.mark.parametrize("path", ["/api/v1/renders", "/api/generate/kling-avatar/submit"])
async def test_a_render_takes_a_data_uri_of_an_ordinary_portrait(
    client: TestClient, path: str
) -> None:
    png = _photo_png()
    assert 400 * 1024 < len(png) < 1024 * 1024  # seed 003's case: 565 KiB
    body = {"image_url": _data_uri(png), "audio_url": "http://h/a.wav", "renderer": "nope"}
    # Past the body limit, to the checks of the fields: the renderer named is refused.
    resp = await client.post(path, json=body, headers=AUTH)
    assert resp.status == 422, await resp.text()
    assert_error(await resp.json(), "invalid_renderer")


async def test_a_render_with_a_data_uri_is_queued(client: TestClient) -> None:
    body = {
        "image_url": _data_uri(_photo_png()),
        "audio_url": "http://169.254.169.254/a.wav",  # refused when fetched: the job ends
    }
    resp = await client.post("/api/v1/renders", json=body, headers=AUTH)
    assert resp.status == 202, await resp.text()


def _render_body(size: int) -> bytes:
    """A render request of exactly `size` bytes (a data: URI padded out), for a renderer
    that does not exist: one the limit lets through is answered 422, and nothing is queued."""
    head = b'{"audio_url": "http://h/a", "renderer": "nope", "image_url": "data:image/png;base64,'
    tail = b'"}'
    return head + b"A" * (size - len(head) - len(tail)) + tail


async def test_each_route_names_its_own_body_limit(tmp_path: Path) -> None:
    settings = job_settings(tmp_path, max_upload_bytes=300_000)
    inline = settings.max_data_uri_body_bytes
    assert inline == 64 * 1024 + 400_000
    json_type = {**AUTH, "Content-Type": "application/json"}
    c = await start_client(settings)
    try:
        # Up to the render's limit: read and checked.
        resp = await c.post("/api/v1/renders", data=_render_body(inline), headers=json_type)
        assert resp.status == 422, await resp.text()
        assert_error(await resp.json(), "invalid_renderer")
        # Over it: 413, saying the limit, where it comes from and what to do instead.
        resp = await c.post("/api/v1/renders", data=_render_body(inline + 1), headers=json_type)
        assert resp.status == 413
        message = assert_error(await resp.json(), "payload_too_large")["message"]
        assert str(inline) in message and "POST /api/v1/renders" in message
        assert "AVATAR_MAX_UPLOAD_BYTES" in message and "/api/v1/files" in message

        # Every other JSON route keeps 64 KiB, and says so.
        big = {"name": "x" * 70_000}
        for path in ("/token", "/api/generate/kling-avatar/status", "/run", "/avatars/s1/say"):
            resp = await c.post(path, json=big, headers=AUTH)
            assert resp.status == 413, path
            message = assert_error(await resp.json(), "payload_too_large")["message"]
            assert "65536 bytes" in message, message
            assert path in message or "/avatars/{session_id}/say" in message, message

        # A body without a declared length is held to the same limits while it is read.
        async def chunked(body: bytes) -> AsyncIterator[bytes]:
            for start in range(0, len(body), 8192):
                yield body[start : start + 8192]

        resp = await c.post("/token", data=chunked(b"x" * 70_000), headers=json_type)
        assert resp.status == 413
        assert "65536 bytes" in assert_error(await resp.json(), "payload_too_large")["message"]
        over = chunked(_render_body(inline + 1))
        resp = await c.post("/api/v1/renders", data=over, headers=json_type)
        assert resp.status == 413
        assert str(inline) in assert_error(await resp.json(), "payload_too_large")["message"]
        under = chunked(_render_body(100_000))  # over 64 KiB, fine here
        resp = await c.post("/api/v1/renders", data=under, headers=json_type)
        assert resp.status == 422
        assert_error(await resp.json(), "invalid_renderer")
    finally:
        await c.close()
