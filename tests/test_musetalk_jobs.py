"""Seed 000's RunPod contract with `"model": "musetalk"` through the real control API on
loopback, as for wav2lip: the seed's JSON with `num_frames`, the package in the local avatar
store (and downloadable from its signed URL), an S3 upload to a real S3-compatible server
(moto), and the plain error a deployment without MuseTalk's VAE gets."""

from __future__ import annotations

import importlib.util
import io
import tarfile
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from avatar_runtime import AvatarCatalog
from control_api.jobs.storage import S3Config, s3_client
from tests.control_api_client import API_KEY, start_client
from tests.job_fixtures import FileServer, job_settings, moto_s3
from tests.media import talking_head_video

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("diffusers") is None, reason="the musetalk extra is not installed"
)

BEARER = {"Authorization": f"Bearer {API_KEY}"}
SEED_MEMBERS = {"coords.pkl", "mask_coords.pkl", "latents.pt", "avator_info.json"}


@pytest.fixture(scope="module")
def patch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, patch_module: pytest.MonkeyPatch) -> Path:
    from tests.musetalk_fixtures import SMALL_VAE, write_models

    tiny_vae = {**SMALL_VAE, "block_out_channels": [4, 4, 8, 8], "norm_num_groups": 2}
    root = write_models(tmp_path_factory.mktemp("musetalk-models"), vae=tiny_vae)
    # The job workers inherit these, as a deployment's settings.
    patch_module.setenv("AVATAR_MUSETALK_DIR", str(root))
    patch_module.setenv("AVATAR_MUSETALK_DEVICE", "cpu")
    return root


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    root = tmp_path_factory.mktemp("videos")
    talking_head_video(root / "head.mp4", seconds=3.0, fps=10, size=(320, 240))
    with FileServer().running() as server:
        server.add("/head.mp4", root / "head.mp4", content_type="video/mp4")
        yield server


@pytest.fixture(scope="module")
def s3(patch_module: pytest.MonkeyPatch) -> Iterator[S3Config]:
    patch_module.setenv("AWS_ACCESS_KEY_ID", "moto-access-key")
    patch_module.setenv("AWS_SECRET_ACCESS_KEY", "moto-secret-key")
    with moto_s3() as config:
        yield config


@pytest.fixture
async def client(tmp_path: Path, s3: S3Config, models: Path) -> AsyncIterator[TestClient]:
    c = await start_client(
        job_settings(tmp_path, s3_endpoint_url=s3.endpoint_url, s3_region=s3.region)
    )
    yield c
    await c.close()


async def _runsync(client: TestClient, job_input: dict) -> dict:
    resp = await client.post("/runsync", json={"input": job_input}, headers=BEARER)
    assert resp.status == 200, await resp.text()
    return await resp.json()


def _check_musetalk_tar(data: bytes, frames: int) -> None:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = [m.name for m in tar if m.isfile()]
    assert SEED_MEMBERS <= set(names)
    for folder in ("full_imgs", "mask"):
        assert sorted(n for n in names if n.startswith(folder + "/")) == [
            f"{folder}/{i:08d}.png" for i in range(frames)
        ]


async def test_runsync_musetalk_into_the_local_store(
    client: TestClient, files: FileServer, tmp_path: Path
) -> None:
    body = await _runsync(
        client,
        {"video_url": f"{files.base_url}/head.mp4", "avatar_id": "muse-abc", "model": "musetalk"},
    )
    assert body["status"] == "COMPLETED", body
    output = body["output"]
    assert set(output) == {"status", "avatar_id", "model", "num_frames", "upload_url"}
    assert output["status"] == "success" and output["model"] == "musetalk"
    assert output["num_frames"] == 30
    download = await client.session.get(output["upload_url"])
    assert download.status == 200
    _check_musetalk_tar(await download.read(), 30)
    package = AvatarCatalog(tmp_path / "avatars").resolve("muse-abc")
    assert package is not None and (package / "latents.pt").is_file()


async def test_musetalk_to_s3(client: TestClient, files: FileServer, s3: S3Config) -> None:
    s3_client(s3).create_bucket(Bucket="muse-avatars")
    body = await _runsync(
        client,
        {
            "video_url": f"{files.base_url}/head.mp4",
            "avatar_id": "M1",
            "model": "musetalk",
            "s3_bucket": "muse-avatars",
            "s3_prefix": "avatars/7",
        },
    )
    assert body["status"] == "COMPLETED" and body["output"]["status"] == "success", body
    assert body["output"]["num_frames"] == 30
    url = body["output"]["upload_url"]
    assert "/muse-avatars/avatars/7/M1.tar?" in url
    with urllib.request.urlopen(url, timeout=10) as response:
        _check_musetalk_tar(response.read(), 30)


async def test_without_the_models_the_job_says_so_once(
    files: FileServer, tmp_path: Path, models: Path, s3: S3Config
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AVATAR_MUSETALK_DIR", str(tmp_path / "no-models"))
        client = await start_client(job_settings(tmp_path))
        try:
            body = await _runsync(
                client,
                {"video_url": f"{files.base_url}/head.mp4", "avatar_id": "m2", "model": "musetalk"},
            )
            output = body["output"]
            assert body["status"] == "COMPLETED" and output["status"] == "error", body
            assert output["error"].startswith("MuseTalk preparation needs the sd-vae-ft-mse VAE: ")
            assert "Traceback" not in output["error"] and "Error" not in output["error"]
            details = await client.get(f"/api/v1/internal/avatar/jobs/{body['id']}", headers=BEARER)
            assert (await details.json())["attempts"] == 1  # not retried
        finally:
            await client.close()
