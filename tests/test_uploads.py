"""The multipart uploads (control_api/uploads.py) over real loopback HTTP: `POST /api/v1/files`,
its seed alias `/api/generate/upload-file` and `POST /backgrounds` answer every malformed body
with a 4xx JSON error (never a 5xx), and leave no file behind, not even for a client that
goes away half-way."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from control_api import create_app
from control_api.config import Settings
from tests.control_api_client import API_KEY, AUTH, assert_error, png_bytes, start_client
from tests.job_fixtures import job_settings
from tests.livekit_server import free_port

FILES = ("/api/v1/files", "/api/generate/upload-file")
UPLOAD_PATHS = (*FILES, "/backgrounds")
B = "B0undary"
MULTIPART = f"multipart/form-data; boundary={B}"
LIMIT = 200_000


def _settings(tmp_path: Path) -> Settings:
    return job_settings(tmp_path, max_upload_bytes=LIMIT, jobs_max_upload_bytes=LIMIT)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    c = await start_client(_settings(tmp_path))
    yield c
    await c.close()


def _part(name: str | None, data: bytes, filename: str | None = None, *extra: str) -> bytes:
    headers = []
    if name is not None:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        headers.append(f"Content-Disposition: {disposition}")
    headers.extend(extra)
    return f"--{B}\r\n".encode() + "".join(h + "\r\n" for h in headers).encode() + b"\r\n" + data


def _body(*parts: bytes, end: bytes = f"\r\n--{B}--\r\n".encode()) -> bytes:
    return b"\r\n".join(parts) + end


def _id_part(path: str) -> list[bytes]:
    """The background upload's `id` field; the file routes take none."""
    return [_part("id", b"beach")] if path == "/backgrounds" else []


def _file(data: bytes | None = None, filename: str = "bg.png", *extra: str) -> bytes:
    return _part("file", png_bytes() if data is None else data, filename, *extra)


def _leftovers(tmp_path: Path) -> list[Path]:
    """Every file an upload could have left: in the uploads' folders and the backgrounds."""
    found: list[Path] = []
    for root in (tmp_path / "cache" / "jobs" / "files", tmp_path / "backgrounds"):
        if root.exists():
            found.extend(root.rglob("*"))
    return sorted(found)


def _malformed_bodies(path: str) -> Iterator[tuple[str, str, bytes, int, str]]:
    """(case, Content-Type, body, status, code) for `path`."""
    f = _id_part(path)
    closing = f"\r\n--{B}".encode()
    many_headers = [f"X-Header-{i}: {i}" for i in range(40)]
    nested = (
        f'--{B}\r\nContent-Disposition: form-data; name="file"\r\n'
        "Content-Type: multipart/mixed; boundary=inner\r\n\r\n"
        "--inner\r\nContent-Type: text/plain\r\n\r\nhi\r\n--inner--\r\n"
        f"\r\n--{B}--\r\n"
    ).encode()
    unnamed = _part(None, b"x", None, "Content-Disposition: form-data")
    malformed = {
        "no boundary": ("multipart/form-data", _body(*f, _file())),
        "empty boundary": ("multipart/form-data; boundary=", b"--\r\n"),
        "boundary over 70 characters": ("multipart/form-data; boundary=" + "b" * 71, b""),
        # The issue's own: a part whose header line is no header.
        "bad header line": ("multipart/form-data; boundary=B", b"--B\r\n[]--B--\r\n"),
        "bad header among good ones": (MULTIPART, _body(*f, _file(None, "a.png", "no header"))),
        "no opening boundary": (MULTIPART, b"just some bytes\r\n"),
        "empty body": (MULTIPART, b""),
        "another boundary": (MULTIPART, _body(_file()).replace(B.encode(), b"Other")),
        "no closing boundary": (MULTIPART, _body(*f, _file(), end=b"")),
        "truncated closing boundary": (MULTIPART, _body(*f, _file(), end=closing)),
        "truncated mid-file": (MULTIPART, _body(*f, _file(), end=b"")[:-100]),
        "huge header line": (MULTIPART, _body(*f, _file(None, "x" * 20_000 + ".png"))),
        "too many part headers": (MULTIPART, _body(*f, _file(None, "a.png", *many_headers))),
        "no Content-Disposition": (MULTIPART, _body(*f, _part(None, png_bytes()))),
        "base64 transfer encoding": (
            MULTIPART,
            _body(*f, _file(None, "a.png", "Content-Transfer-Encoding: base64")),
        ),
    }
    invalid = {
        "no parts": (MULTIPART, f"--{B}--\r\n".encode()),
        "no file part": (MULTIPART, _body(*f)),
        "wrong field name": (MULTIPART, _body(*f, _part("upload", png_bytes(), "a.png"))),
        "a part without a name": (MULTIPART, _body(*f, _file(), unnamed)),
        "two files": (MULTIPART, _body(*f, _file(), _file())),
        "empty file": (MULTIPART, _body(*f, _file(b""))),
        "nested multipart": (MULTIPART, nested),
    }
    unsupported = {
        "not multipart": ("application/json", b'{"file": "x"}'),
        "form-urlencoded": ("application/x-www-form-urlencoded", b"file=x"),
    }
    too_large = {"file over the limit": (MULTIPART, _body(*f, _file(b"\x89PNG" + bytes(LIMIT))))}
    for cases, status, code in (
        (malformed, 400, "invalid_multipart"),
        (invalid, 422, "invalid_field"),
        (unsupported, 415, "unsupported_media_type"),
        (too_large, 413, "payload_too_large"),
    ):
        for case, (content_type, body) in cases.items():
            yield case, content_type, body, status, code


CASES = [
    pytest.param(path, *case[1:], id=f"{path}:{case[0]}")
    for path in UPLOAD_PATHS
    for case in _malformed_bodies(path)
]


@pytest.mark.parametrize(("path", "content_type", "body", "status", "code"), CASES)
async def test_a_malformed_upload_gets_a_4xx_and_leaves_nothing(
    client: TestClient,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    path: str,
    content_type: str,
    body: bytes,
    status: int,
    code: str,
) -> None:
    resp = await client.post(path, data=body, headers={**AUTH, "Content-Type": content_type})
    assert resp.status == status, await resp.text()
    error = assert_error(await resp.json(), code)
    assert "Traceback" not in error["message"] and "Error" not in error["message"]
    assert _leftovers(tmp_path) == []
    assert "unhandled error" not in caplog.text


@pytest.mark.parametrize("path", UPLOAD_PATHS)
async def test_fields_in_any_order_and_odd_filenames_are_stored_safely(
    client: TestClient, tmp_path: Path, path: str
) -> None:
    for filename in ("../../../etc/passwd", "..", "dir/../evil.png", ".hidden", "é ü.png"):
        body = _body(_file(None, filename), *_id_part(path))  # the file first, then the id
        resp = await client.post(path, data=body, headers={**AUTH, "Content-Type": MULTIPART})
        assert resp.status == 201, (filename, await resp.text())
    # Non-UTF-8 bytes in the file name.
    raw = _body(
        *_id_part(path),
        f"--{B}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; filename="\xff\xfe\x80.png"\r\n\r\n'
        + png_bytes(),
    )
    resp = await client.post(path, data=raw, headers={**AUTH, "Content-Type": MULTIPART})
    assert resp.status == 201, await resp.text()
    stored = [p for p in _leftovers(tmp_path) if p.is_file()]
    if path in FILES:
        root = tmp_path / "cache" / "jobs" / "files"
        assert len(stored) == 6
        for file in stored:
            assert file.parent.parent == root  # files/<folder>/<name>, nowhere else
            assert not file.name.startswith(".") and file.read_bytes() == png_bytes()
        names = sorted(file.name for file in stored)
        assert names == ["_.png", "_.png", "evil.png", "file", "hidden", "passwd"]
    else:
        assert [file.name for file in stored] == ["beach.png"]
    assert not list((tmp_path / "cache").rglob(".upload-*"))


async def test_a_background_must_be_an_image_by_its_bytes_and_its_declared_type(
    client: TestClient, tmp_path: Path
) -> None:
    async def upload(*file_headers: str, data: bytes | None = None) -> tuple[int, dict]:
        body = _body(_part("id", b"beach"), _file(data, "bg.png", *file_headers))
        resp = await client.post(
            "/backgrounds", data=body, headers={**AUTH, "Content-Type": MULTIPART}
        )
        return resp.status, await resp.json()

    status, body = await upload(data=b"GIF89a not one of ours")
    assert status == 422 and "PNG, JPEG or WebP" in assert_error(body, "invalid_image")["message"]
    status, body = await upload("Content-Type: text/plain")
    assert status == 422 and "text/plain" in assert_error(body, "invalid_image")["message"]
    status, body = await upload(data=b"\x89PNG\r\n\x1a\n" + b"\0" * 200)  # claims PNG, is not
    assert status == 422
    assert_error(body, "invalid_image")
    status, body = await upload("Content-Type: application/octet-stream")
    assert status == 201, body
    status, body = await upload("Content-Type: image/png")
    assert status == 201, body
    assert [p.name for p in _leftovers(tmp_path)] == ["beach.png"]


async def test_the_text_field_is_checked(client: TestClient, tmp_path: Path) -> None:
    cases = [
        (_body(_part("id", b"x" * 300), _file()), "longer than 256 bytes"),
        (_body(_part("id", b"\xff\xfe"), _file()), "not UTF-8"),
        (_body(_part("id", b"a"), _part("id", b"b"), _file()), "sent twice"),
        (_body(_file()), "no field 'id'"),
    ]
    for body, message in cases:
        resp = await client.post(
            "/backgrounds", data=body, headers={**AUTH, "Content-Type": MULTIPART}
        )
        assert resp.status == 422
        assert message in assert_error(await resp.json(), "invalid_field")["message"]
    assert _leftovers(tmp_path) == []


async def _raw_request(host: str, port: int, head: str, body: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()


@pytest.mark.parametrize("path", UPLOAD_PATHS)
async def test_a_declared_length_over_the_limit_is_refused_before_the_body(
    client: TestClient, tmp_path: Path, path: str
) -> None:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {API_KEY}\r\n"
        f"Content-Type: {MULTIPART}\r\nContent-Length: {10**9}\r\nConnection: close\r\n\r\n"
    )
    # Nothing of the body is sent: the answer must come from the declared length alone.
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(head.encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert _leftovers(tmp_path) == []


@pytest.fixture(params=["cancelled", "not-cancelled"])
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    """A real server both ways aiohttp treats a client that goes: the test server cancels the
    handler, `web.run_app` (what `python -m control_api` runs) lets the read fail instead."""
    runner = web.AppRunner(
        create_app(_settings(tmp_path)), handler_cancellation=request.param == "cancelled"
    )
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield "127.0.0.1", port
    await runner.cleanup()


@pytest.mark.parametrize("path", UPLOAD_PATHS)
@pytest.mark.parametrize("how", ["close", "half-close"])
async def test_a_client_that_goes_mid_upload_leaves_no_file(
    server: tuple[str, int],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    path: str,
    how: str,
) -> None:
    host, port = server
    caplog.set_level(logging.INFO, "control_api")
    body = b"\r\n".join([*_id_part(path), _file(b"\x89PNG" + b"x" * 50_000)])
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {API_KEY}\r\n"
        f"Content-Type: {MULTIPART}\r\nContent-Length: {LIMIT}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(head.encode() + body)
    await writer.drain()
    await asyncio.sleep(0.3)  # the server is now writing the file
    assert [p for p in _leftovers(tmp_path) if p.name.startswith(".upload-")]  # control
    if how == "half-close":
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
        assert not answer or answer.startswith(b"HTTP/1.1 4")
    writer.close()
    for _ in range(100):
        if not _leftovers(tmp_path):
            break
        await asyncio.sleep(0.05)
    assert _leftovers(tmp_path) == []
    assert "unhandled error" not in caplog.text
    assert " -> 5" not in caplog.text


# aiohttp warns of each Content-Disposition it cannot parse (the part then has no name).
@pytest.mark.filterwarnings("ignore::aiohttp.multipart.BadContentDispositionHeader")
@pytest.mark.filterwarnings("ignore::aiohttp.multipart.BadContentDispositionParam")
@pytest.mark.parametrize("path", UPLOAD_PATHS)
async def test_mangled_bodies_never_get_a_5xx_nor_leave_a_partial_file(
    client: TestClient, tmp_path: Path, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """A valid body cut, bytes flipped, lines doubled or dropped at random (seeded) places."""
    rng = random.Random(12)
    valid = _body(*_id_part(path), _file(png_bytes(size=8)))
    statuses: set[int] = set()
    for _ in range(150):
        body = bytearray(valid)
        how = rng.choice(["cut", "flip", "double", "drop"])
        at = rng.randrange(len(body))
        if how == "cut":
            del body[at:]
        elif how == "flip":
            for _ in range(rng.randint(1, 4)):
                body[rng.randrange(len(body))] = rng.randrange(256)
        elif how == "double":
            line_end = body.find(b"\r\n", at)
            body[at:at] = body[at : line_end + 2 if line_end >= 0 else len(body)]
        else:
            line_end = body.find(b"\r\n", at)
            del body[at : line_end + 2 if line_end >= 0 else len(body)]
        resp = await client.post(
            path, data=bytes(body), headers={**AUTH, "Content-Type": MULTIPART}
        )
        statuses.add(resp.status)
        assert resp.status < 500, (how, bytes(body))
        if resp.status >= 400:
            assert_error(await resp.json(), (await resp.json())["error"]["code"])
    assert statuses - {201} and statuses & {400, 422}  # the mangling did reach the checks
    assert not [p for p in _leftovers(tmp_path) if p.name.startswith(".upload-")]
    assert "unhandled error" not in caplog.text
