"""Package storage: S3 uploads against a real S3-compatible server (moto in server mode), the
local avatars directory, and signed URLs for this service's own files."""

from __future__ import annotations

import io
import os
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from avatar_runtime import AvatarCatalog
from avatar_runtime.avatars import DEFAULT_AVATAR
from avatar_runtime.backgrounds import ID_PATTERN as CATALOG_ID_PATTERN
from control_api.jobs.storage import (
    AVATAR_ID_PATTERN,
    CATALOG_DEFAULT_ID,
    S3Config,
    StorageError,
    install_package,
    s3_client,
    s3_key,
    sign_path,
    upload_package_to_s3,
    verify_signed,
)
from tests.job_fixtures import moto_s3
from tests.livekit_server import free_port

UPLOAD_FAILED = "Failed to upload avatar to S3: "
SECRET_KEY = "moto-secret-key-never-shown"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Config]:
    with moto_s3(
        access_key_id="moto-access-key", secret_access_key=SECRET_KEY, max_attempts=1
    ) as config:
        yield config


def make_tar(path: Path, files: dict[str, bytes], *, prefix: str = "") -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


PACKAGE_FILES = {
    "coords.pkl": os.urandom(64),
    "full_imgs/00000000.png": os.urandom(300),
    "full_imgs/00000001.png": os.urandom(300),
    "face_imgs/00000000.png": os.urandom(100),
}


# -- S3 ------------------------------------------------------------------------------------------


def test_upload_returns_a_presigned_url_that_downloads_the_package(
    s3: S3Config, tmp_path: Path
) -> None:
    s3_client(s3).create_bucket(Bucket="video-clone-avatars")
    package = make_tar(tmp_path / "abc123.tar", PACKAGE_FILES)
    key = s3_key("avatars/42", "abc123")
    url = upload_package_to_s3(package, bucket="video-clone-avatars", key=key, config=s3)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == s3.endpoint_url
    assert parts.path == "/video-clone-avatars/avatars/42/abc123.tar"
    query = parse_qs(parts.query)
    assert query["X-Amz-Expires"] == ["7200"] and "X-Amz-Signature" in query
    with urllib.request.urlopen(url, timeout=10) as response:  # plain HTTP, no credentials
        assert response.read() == package.read_bytes()
    head = s3_client(s3).head_object(Bucket="video-clone-avatars", Key=key)
    assert head["ContentType"] == "application/x-tar"


def test_missing_bucket_gives_the_contract_message(s3: S3Config, tmp_path: Path) -> None:
    package = make_tar(tmp_path / "p.tar", PACKAGE_FILES)
    with pytest.raises(StorageError) as caught:
        upload_package_to_s3(package, bucket="no-such-bucket", key="a/b.tar", config=s3)
    error = caught.value
    assert error.code == "s3_upload_failed"
    assert error.message == UPLOAD_FAILED + "NoSuchBucket: The specified bucket does not exist"
    assert str(tmp_path) not in error.message and SECRET_KEY not in error.message


def test_unreachable_endpoint_fails_quickly(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = S3Config(
        endpoint_url=f"http://127.0.0.1:{port}",
        region="us-east-1",
        access_key_id="key",
        secret_access_key=SECRET_KEY,
        connect_timeout_s=1.0,
        max_attempts=1,
    )
    package = make_tar(tmp_path / "p.tar", PACKAGE_FILES)
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        upload_package_to_s3(package, bucket="b", key="k.tar", config=config)
    assert time.monotonic() - started < 5.0
    assert caught.value.message == UPLOAD_FAILED + f"could not connect to http://127.0.0.1:{port}"
    assert SECRET_KEY not in caught.value.message


def test_missing_package_file_is_a_contract_error(s3: S3Config, tmp_path: Path) -> None:
    with pytest.raises(StorageError) as caught:
        upload_package_to_s3(tmp_path / "gone.tar", bucket="b", key="k.tar", config=s3)
    assert caught.value.message.startswith(UPLOAD_FAILED + "could not read the package")


def test_s3_key() -> None:
    assert s3_key("avatars/42", "abc-123") == "avatars/42/abc-123.tar"
    assert s3_key("/avatars//42/", "abc") == "avatars/42/abc.tar"
    assert s3_key(None, "abc") == "abc.tar"
    assert s3_key("", "abc") == "abc.tar"
    for prefix, avatar_id in [
        ("avatars/../secrets", "abc"),
        ("./avatars", "abc"),
        ("avatars\n", "abc"),
        ("avatars", "../abc"),
        ("avatars", "a/b"),
        ("avatars", ".."),
        ("avatars", ".hidden"),  # no package has such an id (renderers/preparation.py)
        ("avatars", ""),
        ("x" * 1100, "abc"),
    ]:
        with pytest.raises(StorageError) as caught:
            s3_key(prefix, avatar_id)
        assert caught.value.code == "invalid_s3_key", (prefix, avatar_id)


# -- install_package ---------------------------------------------------------------------------


def hidden_entries(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(".")]


def test_install_package_unpacks_where_the_catalog_finds_it(tmp_path: Path) -> None:
    avatars = tmp_path / "avatars"
    package = make_tar(tmp_path / "p.tar", PACKAGE_FILES, prefix="./")
    installed = install_package(package, avatars, "abc123")
    assert installed == avatars / "abc123"
    for name, data in PACKAGE_FILES.items():
        assert (installed / name).read_bytes() == data
    assert AvatarCatalog(avatars).resolve("abc123") == installed.resolve()
    assert installed.stat().st_mode & 0o777 == 0o755
    # A second install replaces the first whole: nothing of the old package is left.
    newer = make_tar(tmp_path / "q.tar", {"coords.pkl": b"new", "mask/0.png": b"m"})
    install_package(newer, avatars, "abc123")
    assert sorted(str(p.relative_to(installed)) for p in installed.rglob("*")) == [
        "coords.pkl",
        "mask",
        "mask/0.png",
    ]
    assert (installed / "coords.pkl").read_bytes() == b"new"
    assert hidden_entries(avatars) == []


def test_id_rules_match_the_catalog() -> None:
    assert AVATAR_ID_PATTERN.pattern == CATALOG_ID_PATTERN.pattern
    assert CATALOG_DEFAULT_ID == DEFAULT_AVATAR


def malicious_tar(path: Path, kind: str) -> Path:
    with tarfile.open(path, "w") as tar:
        ok = tarfile.TarInfo("coords.pkl")
        ok.size = 3
        tar.addfile(ok, io.BytesIO(b"abc"))
        info = tarfile.TarInfo(
            {"dotdot": "../evil.txt", "nested": "full_imgs/../../evil.txt"}.get(kind, "evil")
        )
        if kind == "absolute":
            info.name = "/tmp/evil.txt"
        elif kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "coords.pkl"
        elif kind == "device":
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        elif kind == "fifo":
            info.type = tarfile.FIFOTYPE
        data = b"pwned" if info.type == tarfile.REGTYPE else b""
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("dotdot", "outside the package"),
        ("nested", "outside the package"),
        ("absolute", "absolute path"),
        ("symlink", "symbolic link"),
        ("hardlink", "hard link"),
        ("device", "a device"),
        ("fifo", "a named pipe"),
    ],
)
def test_install_package_refuses_malicious_members(kind: str, why: str, tmp_path: Path) -> None:
    avatars = tmp_path / "deep" / "avatars"
    previous = install_package(make_tar(tmp_path / "ok.tar", {"coords.pkl": b"v1"}), avatars, "a1")
    with pytest.raises(StorageError) as caught:
        install_package(malicious_tar(tmp_path / "bad.tar", kind), avatars, "a1")
    assert caught.value.code == "invalid_package"
    assert why in caught.value.message
    assert (previous / "coords.pkl").read_bytes() == b"v1"  # the old package is untouched
    assert hidden_entries(avatars) == []  # no staging directory left behind
    assert not list(tmp_path.rglob("evil*"))
    assert not Path("/tmp/evil.txt").exists()


def test_install_package_limits_and_bad_input(tmp_path: Path) -> None:
    avatars = tmp_path / "avatars"
    many = make_tar(tmp_path / "many.tar", {f"f{i}": b"x" for i in range(20)})
    big = make_tar(tmp_path / "big.tar", {"a": b"x" * 3000, "b": b"y" * 3000})
    cases = [
        (many, {"max_members": 10}, "more than 10 members"),
        (big, {"max_bytes": 5000}, "more than"),
        (make_tar(tmp_path / "empty.tar", {}), {}, "no files"),
    ]
    not_tar = tmp_path / "not.tar"
    not_tar.write_bytes(os.urandom(2048))
    cases.append((not_tar, {}, "not a TAR"))
    cut = tmp_path / "cut.tar"
    cut.write_bytes(big.read_bytes()[:1500])  # the first member's data stops half way
    cases.append((cut, {}, "damaged or cut short"))
    for package, limits, why in cases:
        with pytest.raises(StorageError) as caught:
            install_package(package, avatars, "x1", **limits)
        assert caught.value.code == "invalid_package", package
        assert why in caught.value.message, caught.value.message
    assert list(avatars.iterdir()) == []
    # "X" is no longer refused: ids in any case install in lower case (test_job_errors.py).
    for bad_id in ("../x", "X/", "\u212a", "", "a/b", ".hidden", "default", "DEFAULT"):
        with pytest.raises(StorageError) as caught:
            install_package(many, avatars, bad_id)
        assert caught.value.code == "invalid_avatar_id"


def test_install_package_leaves_renderer_caches_alone(tmp_path: Path) -> None:
    avatars = tmp_path / "avatars"
    cache = avatars / "meshwarp" / "prepared.npz"  # meshwarp keeps its cache here
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"cache")
    package = make_tar(tmp_path / "p.tar", PACKAGE_FILES)
    with pytest.raises(StorageError) as caught:
        install_package(package, avatars, "meshwarp")
    assert caught.value.code == "invalid_avatar_id"
    assert "renderer" in caught.value.message
    assert cache.read_bytes() == b"cache"


# -- signed URLs -------------------------------------------------------------------------------

KEY = b"url-signing-secret-0123456789abcdef"


def query_of(signed: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(signed).query).items()}


def test_signed_paths() -> None:
    now = 1_700_000_000
    signed = sign_path("/jobs/j1/result.mp4", KEY, now + 60)
    assert signed.startswith("/jobs/j1/result.mp4?expires=1700000060&signature=")
    query = query_of(signed)
    assert verify_signed("/jobs/j1/result.mp4", query, KEY, now)
    assert not verify_signed("/jobs/j1/result.mp4", query, KEY, now + 60)  # expired
    assert not verify_signed("/jobs/j2/result.mp4", query, KEY, now)  # another file
    assert not verify_signed("/jobs/j1/result.mp4", query, b"another-secret", now)
    longer = {**query, "expires": str(now + 10**6)}  # extending the expiry breaks it
    assert not verify_signed("/jobs/j1/result.mp4", longer, KEY, now)
    flipped = query["signature"][:-1] + ("0" if query["signature"][-1] != "0" else "1")
    assert not verify_signed("/jobs/j1/result.mp4", {**query, "signature": flipped}, KEY, now)
    for broken in ({}, {"expires": "x", "signature": query["signature"]}, {"expires": "1"}):
        assert not verify_signed("/jobs/j1/result.mp4", broken, KEY, now)
    with pytest.raises(ValueError):
        sign_path("jobs/no-slash", KEY, now)
    with pytest.raises(ValueError):
        sign_path("/a", b"", now)


async def test_signed_url_through_a_real_aiohttp_request() -> None:
    """What the route serving files will do: verify the raw path and aiohttp's query."""

    async def serve(request: web.Request) -> web.Response:
        if not verify_signed(request.rel_url.raw_path, request.query, KEY):
            return web.Response(status=403)
        return web.Response(body=b"video bytes")

    app = web.Application()
    app.router.add_get("/files/{name}", serve)
    async with TestClient(TestServer(app)) as client:
        signed = sign_path("/files/out%20put.mp4", KEY, int(time.time()) + 30)
        response = await client.get(signed)
        assert (response.status, await response.read()) == (200, b"video bytes")
        expired = sign_path("/files/out%20put.mp4", KEY, int(time.time()) - 1)
        assert (await client.get(expired)).status == 403
        assert (await client.get("/files/out%20put.mp4")).status == 403
