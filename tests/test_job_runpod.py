"""Seed 000's RunPod contract through the real control API on loopback: /runsync and /run +
/status with the seed's exact JSON, every seed error string, S3 uploads to a real S3-compatible
server (moto), retries with backoff, cancel, Bearer auth and the /v2/{endpoint_id} paths."""

from __future__ import annotations

import io
import pickle
import tarfile
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from PIL import Image

from avatar_runtime import AvatarCatalog
from control_api.jobs.storage import S3Config, s3_client
from tests.control_api_client import API_KEY, AUTH, start_client
from tests.job_fixtures import FileServer, eventually, job_settings, moto_s3
from tests.media import no_face_video, not_a_video, talking_head_video

BEARER = {"Authorization": f"Bearer {API_KEY}"}
SMALL = {"fps": 10, "size": (320, 240)}
UPPER_CASE_UUID = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    talking_head_video(root / "head.mp4", seconds=3.0, **SMALL)
    talking_head_video(root / "two.mp4", seconds=3.0, faces=2, **SMALL)
    talking_head_video(root / "short.mp4", seconds=1.0, **SMALL)
    no_face_video(root / "empty.mp4", seconds=3.0, fps=10)
    not_a_video(root / "notes.mp4")
    return {path.stem: path for path in root.iterdir()}


@pytest.fixture(scope="module")
def files(videos: dict[str, Path]) -> Iterator[FileServer]:
    with FileServer().running() as server:
        for name, path in videos.items():
            server.add(f"/{name}.mp4", path, content_type="video/mp4")
        yield server


@pytest.fixture(scope="module")
def s3(monkeypatch_module: pytest.MonkeyPatch) -> Iterator[S3Config]:
    # The worker processes inherit these, as a deployment's AWS credentials.
    monkeypatch_module.setenv("AWS_ACCESS_KEY_ID", "moto-access-key")
    monkeypatch_module.setenv("AWS_SECRET_ACCESS_KEY", "moto-secret-key")
    with moto_s3() as config:
        yield config


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture
async def client(tmp_path: Path, s3: S3Config) -> AsyncIterator[TestClient]:
    c = await start_client(
        job_settings(tmp_path, s3_endpoint_url=s3.endpoint_url, s3_region=s3.region)
    )
    yield c
    await c.close()


async def _runsync(client: TestClient, job_input: dict, path: str = "/runsync") -> dict:
    resp = await client.post(path, json={"input": job_input}, headers=BEARER)
    assert resp.status == 200, await resp.text()
    return await resp.json()


def _tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def _check_wav2lip_tar(members: dict[str, bytes], frames: int) -> None:
    full = sorted(n for n in members if n.startswith("full_imgs/"))
    faces = sorted(n for n in members if n.startswith("face_imgs/"))
    assert full == [f"full_imgs/{k:08d}.png" for k in range(frames)]
    assert faces == [f"face_imgs/{k:08d}.png" for k in range(frames)]
    assert Image.open(io.BytesIO(members[faces[0]])).size == (96, 96)
    assert Image.open(io.BytesIO(members[full[0]])).size == (320, 240)
    coords = pickle.loads(members["coords.pkl"])
    assert len(coords) == frames


async def test_runsync_prepares_into_the_local_store(
    client: TestClient, files: FileServer, tmp_path: Path
) -> None:
    body = await _runsync(
        client, {"video_url": f"{files.base_url}/head.mp4", "avatar_id": "abc123-def456"}
    )
    assert set(body) == {"id", "status", "output"}
    assert body["status"] == "COMPLETED"
    output = body["output"]
    assert set(output) == {"status", "avatar_id", "model", "num_frames", "upload_url"}
    assert output["status"] == "success" and output["avatar_id"] == "abc123-def456"
    assert output["model"] == "wav2lip" and output["num_frames"] == 30

    # The signed URL downloads the seed's TAR without an API key.
    assert output["upload_url"].startswith(str(client.make_url("/files/")))
    download = await client.session.get(output["upload_url"])
    assert download.status == 200
    assert download.headers["Content-Type"] == "application/x-tar"
    _check_wav2lip_tar(_tar_members(await download.read()), 30)
    # ...and the avatar is installed where a live session finds it.
    package = AvatarCatalog(tmp_path / "avatars").resolve("abc123-def456")
    assert package is not None and (package / "coords.pkl").is_file()

    status = await client.get(f"/status/{body['id']}", headers=BEARER)
    assert await status.json() == body


@pytest.mark.skipif(
    not Path(__file__).resolve().parent.parent.joinpath("renderers/meshwarp/prepare.py").exists(),
    reason="the meshwarp package writer is not there yet",
)
async def test_an_upper_case_uuid_goes_into_the_local_store_in_lower_case(
    client: TestClient, files: FileServer, tmp_path: Path
) -> None:
    """Seed 000's avatar_id is a UUID, often written in upper case: the package is installed
    under the catalog's lower-case id, and either spelling finds it; the output echoes the id
    as sent."""
    body = await _runsync(
        client, {"video_url": f"{files.base_url}/head.mp4", "avatar_id": UPPER_CASE_UUID}
    )
    assert body["status"] == "COMPLETED", body
    output = body["output"]
    assert output["status"] == "success", output
    assert output["avatar_id"] == UPPER_CASE_UUID
    assert output["upload_url"].split("?")[0].endswith(f"/{UPPER_CASE_UUID}.tar")
    avatars = tmp_path / "avatars"
    assert [p.name for p in avatars.iterdir() if not p.name.startswith(".")] == [
        UPPER_CASE_UUID.lower()
    ]
    catalog = AvatarCatalog(avatars)
    assert UPPER_CASE_UUID.lower() in catalog.ids()
    package = catalog.resolve(UPPER_CASE_UUID)
    assert package is not None and package == catalog.resolve(UPPER_CASE_UUID.lower())
    assert (package / "coords.pkl").is_file()


async def test_runsync_meshwarp(client: TestClient, files: FileServer) -> None:
    body = await _runsync(
        client,
        {"video_url": f"{files.base_url}/head.mp4", "avatar_id": "mesh-1", "model": "meshwarp"},
    )
    assert body["status"] == "COMPLETED", body
    assert body["output"]["status"] == "success" and body["output"]["model"] == "meshwarp"
    assert body["output"]["num_frames"] == 30


@pytest.mark.parametrize(
    ("video", "extra", "message"),
    [
        ("short", {}, "Video too short, minimum 2 seconds required"),
        ("empty", {}, "No face detected in video"),
        ("two", {}, "Multiple faces detected, single face required"),
        ("notes", {}, "Unsupported video format: "),
        ("head", {"model": "sadtalker"}, "Unsupported model: sadtalker"),
    ],
)
async def test_seed_errors_are_completed_jobs_with_the_exact_message(
    client: TestClient, files: FileServer, video: str, extra: dict, message: str
) -> None:
    job_input = {"video_url": f"{files.base_url}/{video}.mp4", "avatar_id": "abc", **extra}
    body = await _runsync(client, job_input)
    assert body["status"] == "COMPLETED", body
    assert set(body["output"]) == {"status", "error"}
    assert body["output"]["status"] == "error"
    assert body["output"]["error"].startswith(message)
    details = await client.get(f"/api/v1/internal/avatar/jobs/{body['id']}", headers=AUTH)
    assert (await details.json())["attempts"] == 1  # an input error is never retried


async def test_too_long_with_a_small_limit(tmp_path: Path, files: FileServer) -> None:
    client = await start_client(job_settings(tmp_path, prepare_max_video_s=2.5))
    try:
        body = await _runsync(client, {"video_url": f"{files.base_url}/head.mp4", "avatar_id": "a"})
        assert body["output"] == {
            "status": "error",
            "error": "Video too long, maximum 2.5 seconds allowed",
        }
    finally:
        await client.close()


async def test_s3_upload_and_presigned_url(
    client: TestClient, files: FileServer, s3: S3Config
) -> None:
    s3_client(s3).create_bucket(Bucket="video-clone-avatars")
    body = await _runsync(
        client,
        {
            "video_url": f"{files.base_url}/head.mp4",
            "avatar_id": UPPER_CASE_UUID,  # fine for S3; the local store would refuse it
            "model": "wav2lip",
            "s3_bucket": "video-clone-avatars",
            "s3_prefix": "avatars/42",
        },
    )
    assert body["status"] == "COMPLETED", body
    assert body["output"]["avatar_id"] == UPPER_CASE_UUID
    url = body["output"]["upload_url"]
    assert f"/video-clone-avatars/avatars/42/{UPPER_CASE_UUID}.tar?" in url and "Signature" in url
    with urllib.request.urlopen(url, timeout=10) as response:
        _check_wav2lip_tar(_tar_members(response.read()), 30)

    missing = await _runsync(
        client,
        {"video_url": f"{files.base_url}/head.mp4", "avatar_id": "x1", "s3_bucket": "no-bucket"},
    )
    assert missing["status"] == "COMPLETED"
    assert missing["output"]["status"] == "error"
    assert missing["output"]["error"].startswith("Failed to upload avatar to S3: NoSuchBucket")


async def test_run_then_poll_status_and_retries_with_backoff(
    client: TestClient, files: FileServer, videos: dict[str, Path]
) -> None:
    url = files.add("/flaky.mp4", videos["head"], fail_first=2)
    resp = await client.post(
        "/v2/my-endpoint/run", json={"input": {"video_url": url, "avatar_id": "f1"}}, headers=BEARER
    )
    assert resp.status == 200
    queued = await resp.json()
    assert queued == {"id": queued["id"], "status": "IN_QUEUE"}

    seen: set[str] = set()

    async def completed() -> dict | None:
        resp = await client.get(f"/v2/my-endpoint/status/{queued['id']}", headers=BEARER)
        body = await resp.json()
        seen.add(body["status"])
        return body if body["status"] in ("COMPLETED", "FAILED") else None

    body = await eventually(completed, timeout=60, every=0.05)
    assert body["status"] == "COMPLETED" and body["output"]["status"] == "success", body
    assert seen <= {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}
    details = await (
        await client.get(f"/api/v1/internal/avatar/jobs/{queued['id']}", headers=AUTH)
    ).json()
    assert details["attempts"] == 3 and files.files["/flaky.mp4"].requests == 3
    retries = [line["message"] for line in details["logs"] if "retry in" in line["message"]]
    assert len(retries) == 2 and "HTTP 503" in retries[0]


async def test_cancel_and_unknown_ids(
    client: TestClient, files: FileServer, videos: dict[str, Path]
) -> None:
    url, _gate = files.hold("/held.mp4", videos["head"])
    resp = await client.post(
        "/run", json={"input": {"video_url": url, "avatar_id": "c1"}}, headers=BEARER
    )
    job_id = (await resp.json())["id"]
    await eventually(lambda: _true_when(files.files["/held.mp4"].started.is_set()))
    resp = await client.post(f"/cancel/{job_id}", headers=BEARER)
    assert await resp.json() == {"id": job_id, "status": "CANCELLED"}
    assert await (await client.get(f"/status/{job_id}", headers=BEARER)).json() == {
        "id": job_id,
        "status": "CANCELLED",
    }
    for method, path in [("GET", "/status/nope"), ("POST", "/cancel/nope")]:
        resp = await client.request(method, path, headers=BEARER)
        assert resp.status == 404
        assert await resp.json() == {"error": "request does not exist"}


async def test_runsync_answers_in_progress_after_its_wait(
    client: TestClient, files: FileServer, videos: dict[str, Path]
) -> None:
    url, gate = files.hold("/slow.mp4", videos["head"])
    resp = await client.post(
        "/runsync?wait=1000", json={"input": {"video_url": url, "avatar_id": "s1"}}, headers=BEARER
    )
    body = await resp.json()
    assert body["status"] in ("IN_QUEUE", "IN_PROGRESS") and set(body) == {"id", "status"}
    gate.set()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "'input' is required"),
        ({"input": {"avatar_id": "a"}}, "'video_url' is required"),
        (
            {"input": {"video_url": "ftp://x/v.mp4", "avatar_id": "a"}},
            "'video_url' must be an http(s) URL",
        ),
        ({"input": {"video_url": "http://x/v.mp4"}}, "'avatar_id' is required"),
        ({"input": {"video_url": "http://x/v", "avatar_id": "a/../b"}}, "'avatar_id' must be"),
        (
            {"input": {"video_url": "http://x/v", "avatar_id": "a", "s3_bucket": "Bad_Bucket"}},
            "'s3_bucket'",
        ),
        (
            {"input": {"video_url": "http://x/v", "avatar_id": "a", "extra": 1}},
            "unknown input field",
        ),
        ({"input": [], "policy": {}}, "unknown field(s): policy"),
    ],
)
async def test_bad_requests_get_runpods_error_shape(
    client: TestClient, body: dict, message: str
) -> None:
    resp = await client.post("/run", json=body, headers=BEARER)
    assert resp.status == 400
    answer = await resp.json()
    assert set(answer) == {"error"} and answer["error"].startswith(message), answer


@pytest.mark.parametrize(
    ("avatar_id", "why"),
    [
        ("3F2504E0.4F89", "must be 1-64 characters of letters, digits"),
        ("a" * 65, "must be 1-64 characters of letters, digits"),
        ("meshwarp", "is a renderer's name"),
        ("MeshWarp", "is a renderer's name"),  # lower-cased, it would be that renderer's cache
        ("default", "names the agent's configured avatar"),
        ("DEFAULT", "names the agent's configured avatar"),
    ],
)
async def test_local_store_refuses_ids_the_catalog_cannot_list_at_submit(
    client: TestClient, files: FileServer, avatar_id: str, why: str
) -> None:
    """Refused before any job exists: such a job would prepare a package, then fail to install
    it (or install one no session can name)."""
    url = files.add("/never.mp4", b"")
    for path in ("/run", "/runsync"):
        resp = await client.post(
            path, json={"input": {"video_url": url, "avatar_id": avatar_id}}, headers=BEARER
        )
        assert resp.status == 400
        error = (await resp.json())["error"]
        assert error.startswith("'avatar_id' cannot go in the local avatar store"), error
        assert why in error and "'s3_bucket'" in error, error
    assert files.files["/never.mp4"].requests == 0
    resp = await client.get("/api/v1/internal/avatar/jobs/status", headers=AUTH)
    queue = await resp.json()
    assert [queue[key] for key in ("running", "pending", "completed", "failed")] == [0] * 4


async def test_bearer_auth_is_required(client: TestClient) -> None:
    job = {"input": {"video_url": "http://x/v.mp4", "avatar_id": "a"}}
    resp = await client.post("/runsync", json=job)
    assert resp.status == 401
    resp = await client.post("/runsync", json=job, headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401


async def _true_when(value: bool) -> bool:
    return value
