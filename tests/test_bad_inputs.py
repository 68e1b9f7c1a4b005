"""A hand-written battery of the bad inputs a schema fuzzer cannot make (issue 12), over real
loopback HTTP against the real app: corrupt, truncated, empty and huge-dimension images
(decompression bombs), truncated and non-video MP4s, wrong declared types, avatar package TARs
with links, traversal, devices or a tar bomb, bad WebSocket messages and slow clients.

Every one gets a 4xx (never a 5xx) with the service's `{"error": {"code", "message"}}` (or
RunPod's `{"error": "..."}` on the RunPod routes, seed 000; a prepare job that cannot
succeed *completes* with `{"status": "error"}` there, as the seed says), a message with no
class name or traceback, and leaves no partial file, job or session behind."""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
import re
import struct
import tarfile
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient
from PIL import Image

from control_api.jobs.storage import StorageError, install_package
from renderers import RendererError
from renderers.wav2lip.package import load_package
from tests.control_api_client import API_KEY, AUTH, png_bytes, start_client
from tests.job_fixtures import FileServer, eventually, job_settings
from tests.livekit_server import LiveKitServer
from tests.media import not_a_video, speech_like_audio, write_video

IDLE_TIMEOUT_S = 0.5
LEAKS = ("Traceback", "Error:", "Exception", "<_io.", "object at 0x", "pytest-of-", "/.cache/")
"""What a user-facing message must not hold: Python's internals, or a path of this machine."""
# One app for the module (starting one costs seconds on a small machine), so the async tests
# share the module's event loop; each checks what it changed against what was there before.
on_module_loop = pytest.mark.asyncio(loop_scope="module")


def assert_clear(body: Any, code: str | None = None) -> str:
    """The service's error shape with `code`; its message, free of Python internals."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and isinstance(error.get("message"), str), body
    if code is not None:
        assert error["code"] == code, body
    assert_plain(error["message"])
    return error["message"]


def assert_plain(message: str) -> None:
    assert message and not any(leak in message for leak in LEAKS), message


# -- media ---------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(kind))
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def bomb_png(width: int, height: int, bit_depth: int = 8, colour: int = 2) -> bytes:
    """A valid PNG of `width` x `height` zero pixels: a few KiB that decode to gigabytes. Rows
    are compressed as they are made, so making it costs little too."""
    row = bytes(1 + -(-width * bit_depth * (3 if colour == 2 else 1) // 8))
    deflate = zlib.compressobj(9)
    body = b"".join(deflate.compress(row) for _ in range(min(height, 4096)))
    if height > 4096:  # the rest is not stored: the file is cut short in its data, on purpose
        body += deflate.compress(row * 64)
    body += deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"".join(
        (b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", header), _png_chunk(b"IDAT", body),
         _png_chunk(b"IEND", b""))
    )  # fmt: skip


def header_only_png(width: int, height: int) -> bytes:
    """Just a PNG's signature and IHDR claiming width x height (no pixel data at all)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IEND", b"")


def jpeg_bytes(size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 120, 40)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


PNG = png_bytes(size=200)
JPEG = jpeg_bytes(200)

# (case, file bytes, declared Content-Type or None, status, code) for an image upload.
IMAGES = [
    ("zero-byte image", b"", "image/png", 422, "invalid_field"),
    ("truncated PNG", PNG[: len(PNG) // 2], "image/png", 422, "invalid_image"),
    ("truncated JPEG", JPEG[: len(JPEG) // 2], "image/jpeg", 422, "invalid_image"),
    ("PNG signature then garbage", b"\x89PNG\r\n\x1a\n" + bytes(300), None, 422, "invalid_image"),
    ("random bytes named .png", bytes(range(256)) * 8, "image/png", 422, "invalid_image"),
    ("100000x100000 PNG header", header_only_png(100_000, 100_000), None, 422, "invalid_image"),
    # Under Pillow's own limit (89 MP warns, 179 MP refuses) but a 192 MB picture once decoded.
    ("64-megapixel 1-bit PNG bomb", bomb_png(8000, 8000, 1, 0), "image/png", 422, "invalid_image"),
    ("a PNG declared as video/mp4", PNG, "video/mp4", 422, "invalid_image"),
    ("a PNG declared as text/html", PNG, "text/html", 422, "invalid_image"),
]


def data_uri(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64," + base64.b64encode(data).decode()


# -- avatar package TARs ------------------------------------------------------------------------

FRAME = png_bytes(size=32)


def package_tar(*extra: Callable[[tarfile.TarFile], None], gnu: bool = False) -> bytes:
    """A small valid wav2lip package (one frame) plus the members `extra` adds."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in (
            ("coords.pkl", b"\x80\x04]\x94(K\x02K\x1eK\x02K\x1et\x94a."),  # [(2, 30, 2, 30)]
            ("full_imgs/00000000.png", FRAME),
            ("face_imgs/00000000.png", FRAME),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for add in extra:
            add(tar)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", **attrs: Any) -> Any:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        for key, value in attrs.items():
            setattr(info, key, value)
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    return add


def many_members(count: int) -> Any:
    def add(tar: tarfile.TarFile) -> None:
        for i in range(count):
            tar.addfile(tarfile.TarInfo(f"extra/{i}"), io.BytesIO(b""))

    return add


def declared_bomb() -> bytes:
    """A TAR whose member declares 64 GiB (and holds none of it): its size is the header's."""
    tar = package_tar()
    info = tarfile.TarInfo("full_imgs/00000001.png")
    info.size = 64 * 1024**3
    header = info.tobuf(tarfile.GNU_FORMAT)
    return tar[: tar.rfind(FRAME) + len(FRAME) + (-len(FRAME) % 512)] + header + bytes(1024)


def gzip_bomb() -> bytes:
    """A gzip-compressed TAR holding 200 MB of zeros in a few hundred KiB."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("coords.pkl")
        info.size = 200 * 1024**2
        tar.addfile(info, _Zeros(info.size))
    return gzip.compress(raw.getvalue(), 9)


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


# (case, TAR bytes, what the refusal says)
PACKAGES = [
    (
        "symbolic link",
        package_tar(member("full_imgs/x.png", tarfile.SYMTYPE, linkname="/etc/passwd")),
        "symbolic link",
    ),  # noqa: E501
    (
        "hard link",
        package_tar(member("face_imgs/x.png", tarfile.LNKTYPE, linkname="coords.pkl")),
        "hard link",
    ),  # noqa: E501
    ("../ traversal", package_tar(member("full_imgs/../../evil.png")), "outside the package"),
    ("absolute path", package_tar(member("/tmp/evil.png")), "absolute path"),
    (
        "character device",
        package_tar(member("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3)),
        "a device",
    ),  # noqa: E501
    ("member declaring 64 GiB", declared_bomb(), "more than"),
    ("gzip tar bomb", gzip_bomb(), "not an uncompressed TAR"),
]


# -- fixtures ------------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    root = tmp_path_factory.mktemp("bad-inputs")
    settings = job_settings(root, max_upload_bytes=2_000_000, body_idle_timeout_s=IDLE_TIMEOUT_S)
    c = await start_client(settings)
    yield Served(c, root)
    await c.close()


@dataclass
class Served:
    client: TestClient
    root: Path

    def files(self) -> list[Path]:
        """Every file a request could have left: uploads, backgrounds, avatars, job files."""
        found: list[Path] = []
        for top in ("cache/jobs", "backgrounds", "avatars"):
            if (self.root / top).exists():
                found.extend(p for p in (self.root / top).rglob("*") if p.is_file())
        return sorted(found)


@pytest.fixture
def client(served: Served) -> TestClient:
    return served.client


@pytest_asyncio.fixture(loop_scope="module")
async def unchanged(served: Served) -> AsyncIterator[None]:
    """Asserts, after the test, that it left no file, job or uploaded background behind."""
    files, jobs = served.files(), await job_counts(served.client)
    yield
    assert served.files() == files
    assert await job_counts(served.client) == jobs
    assert await uploaded_backgrounds(served.client) == []


async def job_counts(client: TestClient) -> dict[str, int]:
    resp = await client.get("/api/v1/internal/avatar/jobs/status", headers=AUTH)
    body = await resp.json()
    return {k: body[k] for k in ("running", "pending", "completed", "failed", "cancelled")}


async def uploaded_backgrounds(client: TestClient) -> list[str]:
    resp = await client.get("/backgrounds", headers=AUTH)
    return [b["id"] for b in (await resp.json())["backgrounds"] if b.get("source") == "uploaded"]


# -- images ----------------------------------------------------------------------------------------


def _form(fields: dict[str, str], data: bytes, content_type: str | None) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field("file", data, filename="picture.png", content_type=content_type)
    return form


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"), [c[1:] for c in IMAGES], ids=[c[0] for c in IMAGES]
)
@pytest.mark.usefixtures("unchanged")
@on_module_loop
async def test_a_bad_background_image_is_refused_cheaply_and_leaves_nothing(
    client: TestClient, data: bytes, content_type: str | None, status: int, code: str
) -> None:
    started = time.monotonic()
    resp = await client.post(
        "/backgrounds", data=_form({"id": "beach"}, data, content_type), headers=AUTH
    )
    assert resp.status == status, await resp.text()
    assert_clear(await resp.json(), code)
    assert time.monotonic() - started < 3  # refused from the header, not after decoding it


@on_module_loop
async def test_a_bomb_is_refused_from_its_header_saying_its_size(client: TestClient) -> None:
    bombs = [(bomb_png(8000, 8000, 1, 0), "8000x8000"), (header_only_png(10**5, 10**5), "far more")]
    for data, size in bombs:
        resp = await client.post(
            "/backgrounds", data=_form({"id": "beach"}, data, "image/png"), headers=AUTH
        )
        message = assert_clear(await resp.json(), "invalid_image")
        assert "at most 40000000 pixels" in message and size in message, message


@pytest.mark.parametrize(
    ("data", "content_type"), [c[1:3] for c in IMAGES], ids=[c[0] for c in IMAGES]
)
@pytest.mark.usefixtures("unchanged")
@on_module_loop
async def test_a_bad_inline_render_image_is_refused_before_a_job_is_made(
    client: TestClient, data: bytes, content_type: str | None
) -> None:
    body = {
        "image_url": data_uri(data, content_type or "application/octet-stream"),
        "audio_url": data_uri(b"RIFF....WAVE", "audio/wav"),
    }
    for path in ("/api/v1/renders", "/api/generate/kling-avatar/submit"):
        resp = await client.post(path, json=body, headers=AUTH)
        assert resp.status == 422, await resp.text()
        assert_clear(await resp.json(), "invalid_image")


@pytest.mark.parametrize(
    ("field", "uri", "code", "why"),
    [
        ("audio_url", "data:audio/wav;base64,", "invalid_audio", "without any data"),
        ("audio_url", "data:audio/wav;base64,*not base64*", "invalid_audio", "not valid base64"),
        ("image_url", "data:image/png;base64", "invalid_image", "no ','"),
    ],
)
@pytest.mark.usefixtures("unchanged")
@on_module_loop
async def test_a_malformed_data_uri_is_refused_before_a_job_is_made(
    client: TestClient, field: str, uri: str, code: str, why: str
) -> None:
    body = {"image_url": data_uri(PNG), "audio_url": data_uri(b"RIFF", "audio/wav"), field: uri}
    resp = await client.post("/api/v1/renders", json=body, headers=AUTH)
    assert resp.status == 422, await resp.text()
    assert why in assert_clear(await resp.json(), code)


# -- avatar packages -----------------------------------------------------------------------------


@pytest.mark.parametrize(("tar", "why"), [c[1:] for c in PACKAGES], ids=[c[0] for c in PACKAGES])
@pytest.mark.usefixtures("unchanged")
@on_module_loop
async def test_an_unsafe_package_sent_inline_is_refused_before_a_job_is_made(
    served: Served, tar: bytes, why: str
) -> None:
    client = served.client
    body = {
        "image_url": data_uri(tar, "application/x-tar"),
        "audio_url": data_uri(b"RIFF", "audio/wav"),
        "renderer": "wav2lip",
    }
    resp = await client.post("/api/v1/renders", json=body, headers=AUTH)
    assert resp.status == 422, await resp.text()
    assert why in assert_clear(await resp.json(), "invalid_package")
    assert not list(served.root.rglob("evil*"))


@pytest.mark.parametrize(("tar", "why"), [c[1:] for c in PACKAGES], ids=[c[0] for c in PACKAGES])
def test_an_unsafe_package_is_refused_by_every_loader(tmp_path: Path, tar: bytes, why: str) -> None:
    """What the worker does with a package fetched by URL (wav2lip reads it in place) and what
    a preparation job does with its own (installs it): the same checks, nothing written."""
    path = tmp_path / "package.tar"
    path.write_bytes(tar)
    with pytest.raises(RendererError) as loading:
        load_package(path, 64, 64, max_frames=4)
    assert loading.value.code == "invalid_package" and why in loading.value.message
    assert_plain(loading.value.message)
    with pytest.raises(StorageError) as installing:
        install_package(path, tmp_path / "avatars", "a1")
    expected = "not a TAR" if why == "not an uncompressed TAR" else why
    assert installing.value.code == "invalid_package" and expected in installing.value.message
    assert [p for p in (tmp_path / "avatars").rglob("*")] == []
    assert not list(tmp_path.rglob("evil*")) and not Path("/tmp/evil.png").exists()


def test_a_package_of_very_many_members_is_refused_before_they_are_read(tmp_path: Path) -> None:
    path = tmp_path / "many.tar"
    path.write_bytes(package_tar(many_members(3000)))
    with pytest.raises(StorageError) as installing:
        install_package(path, tmp_path / "avatars", "a1", max_members=1000)
    assert "more than 1000 members" in installing.value.message
    assert list((tmp_path / "avatars").rglob("*")) == []
    assert load_package(path, 64, 64, max_frames=1).num_frames == 1  # under the real cap


def test_a_package_frame_claiming_a_huge_picture_is_refused_before_decoding(
    tmp_path: Path,
) -> None:
    bomb = header_only_png(60_000, 60_000)
    path = tmp_path / "package.tar"
    path.write_bytes(package_tar(member("full_imgs/00000000.png", data=bomb)))
    started = time.monotonic()
    with pytest.raises(RendererError) as loading:
        load_package(path, 64, 64, max_frames=1)
    assert "larger than 40000000 pixels" in loading.value.message
    assert time.monotonic() - started < 2


# -- videos and audio through the job workers ----------------------------------------------------


@pytest.fixture
def files() -> Iterator[FileServer]:
    with FileServer().running() as server:
        yield server


def truncated_mp4(directory: Path) -> bytes:
    frames = [np.full((64, 64, 3), (i * 8, 90, 160), dtype=np.uint8) for i in range(30)]
    path = write_video(directory / "clip.mp4", frames, 10)
    data = path.read_bytes()
    return data[: len(data) // 3]


@on_module_loop
async def test_truncated_and_non_video_mp4s_end_their_jobs_with_a_clear_error(
    served: Served, files: FileServer, tmp_path: Path
) -> None:
    """Seed 000: a prepare job that cannot succeed completes with `{"status": "error"}`;
    seed 003: a render fails at once and its result answers 422 `render_failed`. Nothing is
    installed and no attempt leaves a partial file."""
    client, before = served.client, served.files()
    cut = files.add("/cut.mp4", truncated_mp4(tmp_path), content_type="video/mp4")
    text = files.add("/text.mp4", not_a_video(tmp_path / "t.mp4"), content_type="video/mp4")
    speech_like_audio(tmp_path / "speech.m4a", 1.0)
    audio = (tmp_path / "speech.m4a").read_bytes()
    cut_audio = files.add("/cut.m4a", audio[: len(audio) // 3], content_type="audio/mp4")
    prepares = [
        client.post(
            "/runsync?wait=60000",
            json={"input": {"video_url": url, "avatar_id": f"bad{i}"}},
            headers=AUTH,
        )
        for i, url in enumerate((cut, text))
    ]
    renders = [
        client.post(
            "/api/v1/renders",
            json={"image_url": data_uri(PNG), "audio_url": url},
            headers=AUTH,
        )
        for url in (cut_audio, text)
    ]
    answers = await asyncio.gather(*prepares, *renders)
    for resp in answers[:2]:
        body = await resp.json()
        assert resp.status == 200 and body["status"] == "COMPLETED", body
        assert body["output"]["status"] == "error", body
        assert_plain(body["output"]["error"])
    for resp in answers[2:]:
        assert resp.status == 202, await resp.text()
        request_id = (await resp.json())["request_id"]

        async def failed(request_id: str = request_id) -> bool:
            resp = await client.get(f"/api/v1/renders/{request_id}/status", headers=AUTH)
            return (await resp.json())["status"] == "FAILED"

        await eventually(failed, timeout=60)
        resp = await client.get(f"/api/v1/renders/{request_id}", headers=AUTH)
        assert resp.status == 422
        assert "audio" in assert_clear(await resp.json(), "render_failed")
    new = sorted(set(served.files()) - set(before))
    # The attempts' logs and their complete downloads (kept with a failed job): no package
    # made or installed, no partial download, nothing hidden.
    assert new and all(p.name in ("attempt-1.log", "video", "image", "audio") for p in new), new
    assert not (served.root / "avatars").exists() or not any((served.root / "avatars").iterdir())


@pytest.mark.usefixtures("unchanged")
@on_module_loop
async def test_a_bad_runpod_body_gets_runpods_error_shape(client: TestClient) -> None:
    cases = [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"input": {"video_url": "ftp://x/a.mp4", "avatar_id": "a"}}).encode(), "URL"),
    ]
    for raw, why in cases:
        resp = await client.post(
            "/runsync", data=raw, headers={**AUTH, "Content-Type": "application/json"}
        )
        assert resp.status == 400
        body = await resp.json()
        assert set(body) == {"error"} and isinstance(body["error"], str) and why in body["error"]
        assert_plain(body["error"])


# -- slow clients --------------------------------------------------------------------------------


async def _dribble(
    client: TestClient, path: str, content_type: str, body: bytes, pause_s: float
) -> bytes:
    """Send the head and the body's first half, then stall; the whole answer."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {API_KEY}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(head.encode() + body[: len(body) // 2])
        await writer.drain()
        # The head, then as many bytes as it says (the server may linger for the rest of
        # the body before it closes the connection).
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=pause_s)
        length = int(re.search(rb"Content-Length: (\d+)", head)[1])  # type: ignore[index]
        answer = head + await asyncio.wait_for(reader.readexactly(length), timeout=pause_s)
    finally:
        writer.close()
    return answer


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        (
            "/api/v1/files",
            "multipart/form-data; boundary=B",
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
            + PNG
            + b"\r\n--B--\r\n",
        ),
        (
            "/backgrounds",
            "multipart/form-data; boundary=B",
            b'--B\r\nContent-Disposition: form-data; name="id"\r\n\r\nbeach\r\n'
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
            + PNG
            + b"\r\n--B--\r\n",
        ),
        ("/api/v1/renders", "application/json", json.dumps({"image_url": data_uri(PNG)}).encode()),
        ("/runsync", "application/json", b'{"input": {"video_url": "http://x/a.mp4"}}'),
    ],
    ids=["files", "backgrounds", "renders", "runsync"],
)
@pytest.mark.usefixtures("unchanged")
@on_module_loop
async def test_a_stalled_body_times_out_with_408_and_blocks_nobody(
    client: TestClient, path: str, content_type: str, body: bytes
) -> None:
    stalled = asyncio.create_task(_dribble(client, path, content_type, body, 10))
    await asyncio.sleep(IDLE_TIMEOUT_S / 3)
    # Meanwhile other requests are answered at once.
    started = time.monotonic()
    resp = await client.get("/api/v1/live")
    assert resp.status == 200 and time.monotonic() - started < IDLE_TIMEOUT_S
    answer = await stalled
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert b"Connection: close" in head
    message = assert_clear(json.loads(payload), "request_timeout")
    assert "AVATAR_BODY_IDLE_TIMEOUT_S" in message
    assert await uploaded_backgrounds(client) == []


# -- the WebSocket -------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module")
async def live_client(livekit_server: LiveKitServer, tmp_path: Path) -> AsyncIterator[TestClient]:
    settings = job_settings(
        tmp_path,
        livekit_url=livekit_server.url,
        public_livekit_url=livekit_server.url,
        livekit_api_key=livekit_server.api_key,
        livekit_api_secret=livekit_server.api_secret,
    )
    c = await start_client(settings)
    yield c
    try:
        for session in (await (await c.get("/avatars", headers=AUTH)).json())["sessions"]:
            await c.delete(f"/avatars/{session['session_id']}", headers=AUTH)
    finally:
        await c.close()


async def _next(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict:
    while True:
        message = await ws.receive(timeout=5)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        event = json.loads(message.data)
        if event["type"] == kind:
            return event


WS_MESSAGES: list[tuple[str, str | bytes]] = [
    ("not JSON", "hello?"),
    ("JSON of the wrong shape", "[1, 2, 3]"),
    ("a type that is no string", '{"type": 7}'),
    ("an unknown type", '{"type": "say", "text": "hi"}'),
    ("nested a thousand deep", "[" * 1500 + "]" * 1500),
    ("binary", b"\x00\x01\x02"),
]


@on_module_loop
async def test_bad_websocket_messages_get_an_error_event_and_the_socket_lives_on(
    live_client: TestClient,
) -> None:
    session_id = f"bad-ws-{time.monotonic_ns() % 10**8}"
    resp = await live_client.post(
        "/avatars", json={"avatar_id": "default", "session_id": session_id}, headers=AUTH
    )
    assert resp.status == 201, await resp.text()
    ws = await live_client.ws_connect(f"/ws/{session_id}?access_token={API_KEY}")
    try:
        assert (await ws.receive_json(timeout=5))["type"] == "state"
        for case, message in WS_MESSAGES:
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_str(message)
            error = await _next(ws, "error")
            assert error["code"] == "invalid_message", case
            assert_plain(error["message"])
        await ws.send_json({"type": "ping"})
        assert (await _next(ws, "pong"))["type"] == "pong"

        # Over the message limit: told why, then closed with 1009 (message too big).
        await ws.send_str(json.dumps({"type": "ping", "pad": "x" * 5000}))
        error = await _next(ws, "error")
        assert error["code"] == "message_too_large" and "4096" in error["message"]
        closing = await ws.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1009
        # Over aiohttp's frame limit: closed with 1009 at once.
        again = await live_client.ws_connect(f"/ws/{session_id}?access_token={API_KEY}")
        assert (await again.receive_json(timeout=5))["type"] == "state"
        await again.send_str("x" * 200_000)
        closing = await again.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1009
        await again.close()
    finally:
        await ws.close()
    # The session is whole and alone: nothing half-made, nothing lost.
    listed = (await (await live_client.get("/avatars", headers=AUTH)).json())["sessions"]
    assert [s["session_id"] for s in listed] == [session_id]
    third = await live_client.ws_connect(f"/ws/{session_id}?access_token={API_KEY}")
    assert (await third.receive_json(timeout=5))["session"]["session_id"] == session_id
    await third.close()
    # A socket to no session is refused before the upgrade, in the service's error shape.
    resp = await live_client.get(f"/ws/nobody-here?access_token={API_KEY}")
    assert resp.status == 404
    assert_clear(await resp.json(), "session_not_found")
