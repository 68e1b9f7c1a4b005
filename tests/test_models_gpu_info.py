"""Seed 004's `GET /api/v1/models` and `GET /api/v1/gpu-info` over loopback HTTP: every renderer
with whether it can load and why not, the model files it found or misses, back ends, devices
and the default; the GPUs through NVML, and a clear 200 "no GPU" on a machine without one (as
this one is: a stand-in NVML module plays a GPU machine)."""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

import renderers
from control_api.health import GPU_INFO
from control_api.openapi import COMPONENTS
from renderers.liveportrait.checkpoint import LAYOUT_FILES
from tests.control_api_client import AUTH, assert_error, make_settings, start_client

RENDERER_FIELDS = {
    "name",
    "default",
    "default_for",
    "available",
    "emotions",
    "checkpoints",
    "backend",
    "backends",
    "device",
    "devices",
    "details",
}


@pytest.fixture
async def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TestClient]:
    for name in ("AVATAR_LIVEPORTRAIT_DIR", "AVATAR_WAV2LIP_CHECKPOINT", "AVATAR_GPU_ID"):
        monkeypatch.delenv(name, raising=False)
    c = await start_client(make_settings(tmp_path))
    yield c
    await c.close()


async def _models(client: TestClient) -> dict[str, Any]:
    resp = await client.get("/api/v1/models", headers=AUTH)
    assert resp.status == 200, await resp.text()
    return await resp.json()


def _schema_check(body: Any, component: str) -> None:
    """`body` against the route's schema in /openapi.json."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = {**COMPONENTS[component], "components": {"schemas": COMPONENTS}}
    jsonschema.Draft202012Validator(schema).validate(body)


# --- /api/v1/models -------------------------------------------------------------------------


async def test_models_lists_every_renderer_with_its_facts(client: TestClient) -> None:
    body = await _models(client)
    _schema_check(body, "Models")
    models = {m["name"]: m for m in body["models"]}
    assert set(models) == set(renderers.available())
    for name, model in models.items():
        assert RENDERER_FIELDS <= set(model), name
        assert model["available"] == (renderers.unavailable_reason(name) is None), name
        assert model["available"] or model["reason"], name
    # the default is marked, once
    assert body["default"] == "meshwarp" and body["defaults"]["render_service"] == "meshwarp"
    assert [m["name"] for m in body["models"] if m["default"]] == ["meshwarp"]
    assert "render_service" in models["meshwarp"]["default_for"]
    # emotions, back ends and devices as each renderer has them
    assert "happy" in models["meshwarp"]["emotions"] and models["wav2lip"]["emotions"] == []
    assert models["liveportrait"]["backends"] == ["torch", "onnx", "tensorrt"]
    assert models["liveportrait"]["devices"] == ["cpu", "cuda"]
    assert models["liveportrait"]["device"] == "cpu"  # no GPU here
    # meshwarp's face models are set up (the test run needs them), testcard needs no file
    assert models["meshwarp"]["checkpoints"]["complete"] is True
    names = {f["name"] for f in models["meshwarp"]["checkpoints"]["files"]}
    assert "face_landmark.tflite" in names
    assert models["testcard"]["checkpoints"] is None
    # unconfigured: the variable to set, and every file it would look for, missing
    lp = models["liveportrait"]["checkpoints"]
    assert lp["setting"] == "AVATAR_LIVEPORTRAIT_DIR" and lp["path"] is None
    assert not lp["complete"] and not any(f["found"] for f in lp["files"])
    assert {f["name"] for f in lp["files"]} >= set(LAYOUT_FILES["ditto"].values())
    assert "AVATAR_LIVEPORTRAIT_DIR" in models["liveportrait"]["reason"]
    w2l = models["wav2lip"]["checkpoints"]
    assert w2l == {
        "setting": "AVATAR_WAV2LIP_CHECKPOINT",
        "path": None,
        "complete": False,
        "files": [],
    }
    # back ends: installed or not, and usable or why not
    backends = {b["name"]: b for b in body["backends"]}
    assert set(backends) == {"torch", "onnx", "tensorrt"}
    for backend in backends.values():
        assert backend["usable"] or backend["reason"]
    tensorrt = backends["tensorrt"]
    assert not tensorrt["usable"]  # no GPU here (and most likely no package either)
    assert body["devices"][0] == {"id": "cpu", "type": "cpu", "available": True}


async def test_models_tells_found_from_missing_checkpoint_files(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ditto's layout (ditto_pytorch/models), three of its five files there
    ditto = tmp_path / "ditto_pytorch"
    (ditto / "models").mkdir(parents=True)
    present = ["appearance_extractor.pth", "motion_extractor.pth", "warp_network.pth"]
    for name in present:
        (ditto / "models" / name).write_bytes(b"not read")
    monkeypatch.setenv("AVATAR_LIVEPORTRAIT_DIR", str(ditto))
    checkpoint = tmp_path / "wav2lip_gan.pth"
    monkeypatch.setenv("AVATAR_WAV2LIP_CHECKPOINT", str(checkpoint))  # not there yet

    models = {m["name"]: m for m in (await _models(client))["models"]}
    lp = models["liveportrait"]
    assert not lp["available"] and "decoder.pth" in lp["reason"]
    files = lp["checkpoints"]["files"]
    assert lp["checkpoints"]["layout"] == "ditto" and not lp["checkpoints"]["complete"]
    assert lp["checkpoints"]["path"] == str(ditto)
    found = {f["name"]: f["found"] for f in files}
    assert found == {
        "models/appearance_extractor.pth": True,
        "models/motion_extractor.pth": True,
        "models/warp_network.pth": True,
        "models/decoder.pth": False,
        "models/stitch_network.pth": False,
    }
    w2l = models["wav2lip"]
    assert w2l["checkpoints"]["files"] == [{"name": "wav2lip_gan.pth", "found": False}]
    assert not w2l["available"] and "does not exist" in w2l["reason"]

    # the rest arrives
    for name in ("decoder.pth", "stitch_network.pth"):
        (ditto / "models" / name).write_bytes(b"not read")
    checkpoint.write_bytes(b"not read")
    models = {m["name"]: m for m in (await _models(client))["models"]}
    lp = models["liveportrait"]["checkpoints"]
    assert lp["complete"] and all(f["found"] for f in lp["files"]) and len(lp["files"]) == 5
    assert models["liveportrait"]["details"]["layout"] == "ditto"
    assert models["wav2lip"]["checkpoints"] == {
        "setting": "AVATAR_WAV2LIP_CHECKPOINT",
        "path": str(checkpoint),
        "complete": True,
        "files": [{"name": "wav2lip_gan.pth", "found": True}],
    }
    # available as soon as the files and the packages are there (nothing is loaded to say so)
    assert models["liveportrait"]["available"] == (
        renderers.unavailable_reason("liveportrait") is None
    )


async def test_models_shows_the_servers_home_as_a_tilde(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AVATAR_LIVEPORTRAIT_DIR", str(tmp_path / "weights"))
    text = await (await client.get("/api/v1/models", headers=AUTH)).text()
    assert str(tmp_path) not in text
    body = await _models(client)
    lp = next(m for m in body["models"] if m["name"] == "liveportrait")
    assert lp["checkpoints"]["path"] == "~/weights"
    assert "~/weights" in lp["reason"]


async def test_models_and_gpu_info_need_a_key(client: TestClient) -> None:
    for path in ("/api/v1/models", "/api/v1/gpu-info"):
        resp = await client.get(path)
        assert resp.status == 401, path
        assert_error(await resp.json(), "unauthorized")


async def test_the_openapi_document_has_both_routes_beside_the_health_ones(
    client: TestClient,
) -> None:
    document = await (await client.get("/openapi.json")).json()
    for path, schema in (("/api/v1/models", "Models"), ("/api/v1/gpu-info", "GpuInfo")):
        operation = document["paths"][path]["get"]
        assert operation["tags"] == ["health"]
        assert operation["security"]  # a key, like /api/v1/ready
        content = operation["responses"]["200"]["content"]["application/json"]
        assert content["schema"] == {"$ref": f"#/components/schemas/{schema}"}
        assert schema in document["components"]["schemas"]
    assert document["paths"]["/api/v1/ready"]["get"]["tags"] == ["health"]


# --- /api/v1/gpu-info without a GPU -----------------------------------------------------------


async def test_gpu_info_says_clearly_there_is_no_gpu(client: TestClient) -> None:
    resp = await client.get("/api/v1/gpu-info", headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    _schema_check(body, "GpuInfo")
    assert body["available"] is False and body["devices"] == []
    assert isinstance(body["reason"], str) and body["reason"]
    # /health's probe is the same one, and agrees
    await _probed(client)
    health = await (await client.get("/health")).json()
    assert health["gpuAvailable"] is False and health["gpu"] == {"available": False, "devices": []}


async def test_gpu_info_without_the_nvml_package_is_still_an_answer(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    body = await (await client.get("/api/v1/gpu-info", headers=AUTH)).json()
    assert body["available"] is False and "nvidia-ml-py" in body["reason"]


async def test_gpu_info_is_never_a_5xx(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml([])

    def broken() -> None:
        raise RuntimeError("something no one expected")

    fake.nvmlInit = broken  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    resp = await client.get("/api/v1/gpu-info", headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    assert body["available"] is False and "RuntimeError" in body["reason"]
    assert "no one expected" not in body["reason"]  # the details go to the log
    # a driver without GPUs
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([]))
    body = await (await client.get("/api/v1/gpu-info", headers=AUTH)).json()
    assert body == {
        "available": False,
        "reason": "the NVIDIA driver is loaded but reports no GPU",
        "source": "nvml",
        "devices": [],
    }
    # the library is missing (what this machine says)
    fake = FakeNvml([])
    fake.fail_init = fake.NVML_ERROR_LIBRARY_NOT_FOUND
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    body = await (await client.get("/api/v1/gpu-info", headers=AUTH)).json()
    assert body["available"] is False and "libnvidia-ml" in body["reason"]


# --- with (stand-in) GPUs -----------------------------------------------------------------------


class FakeNvml(types.ModuleType):
    """The part of pynvml that control_api/gpu.py uses, over a list of GPUs."""

    NVML_ERROR_LIBRARY_NOT_FOUND = 12
    NVML_ERROR_DRIVER_NOT_LOADED = 9
    NVML_ERROR_NO_PERMISSION = 4
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        def __init__(self, value: int) -> None:
            super().__init__(f"NVML error {value}")
            self.value = value

    def __init__(self, gpus: list[dict[str, Any]]) -> None:
        super().__init__("pynvml")
        self.gpus = gpus
        self.fail_init: int | None = None
        self.open = 0

    def nvmlInit(self) -> None:  # noqa: N802 - NVML's names
        if self.fail_init is not None:
            raise self.NVMLError(self.fail_init)
        self.open += 1

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.open -= 1

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.gpus)

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        return "570.124.06"

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:  # noqa: N802
        return 12080

    def nvmlSystemGetNVMLVersion(self) -> bytes:  # noqa: N802
        return b"12.570.124.06"

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:  # noqa: N802
        return self.gpus[index]

    def nvmlDeviceGetName(self, handle: dict[str, Any]) -> bytes:  # noqa: N802
        return handle["name"].encode()  # older bindings answer bytes

    def nvmlDeviceGetUUID(self, handle: dict[str, Any]) -> str:  # noqa: N802
        return f"GPU-{handle['name']}"

    def nvmlDeviceGetMemoryInfo(self, handle: dict[str, Any]) -> Any:  # noqa: N802
        total, used = handle["memory"]
        return types.SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetUtilizationRates(self, handle: dict[str, Any]) -> Any:  # noqa: N802
        if handle.get("mig"):
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return types.SimpleNamespace(gpu=handle["load"], memory=handle["load"] // 2)

    def nvmlDeviceGetTemperature(self, handle: dict[str, Any], sensor: int) -> int:  # noqa: N802
        return handle["temperature"]

    def nvmlDeviceGetPowerUsage(self, handle: dict[str, Any]) -> int:  # noqa: N802
        return 71_500

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: dict[str, Any]) -> int:  # noqa: N802
        return 700_000


GIB = 1024**3
TWO_GPUS = [
    {"name": "NVIDIA H100 80GB HBM3", "memory": (80 * GIB, 2 * GIB), "load": 40, "temperature": 41},
    {"name": "NVIDIA A10", "memory": (24 * GIB, 0), "load": 0, "temperature": 30, "mig": True},
]


async def _probed(client: TestClient) -> None:
    """Until /health's start-up GPU probe has run."""
    for _ in range(200):
        if client.app[GPU_INFO]["source"] != "pending":
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the GPU probe did not run")


async def test_gpu_info_reports_each_gpu_and_health_agrees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNvml(TWO_GPUS)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    client = await start_client(make_settings(tmp_path, gpu_id=1))
    try:
        body = await (await client.get("/api/v1/gpu-info", headers=AUTH)).json()
        _schema_check(body, "GpuInfo")
        assert body["available"] is True and body["count"] == 2
        assert body["driver_version"] == "570.124.06" and body["cuda_version"] == "12.8"
        assert body["nvml_version"] == "12.570.124.06"
        # AVATAR_GPU_ID=1 (DITTO_GPU_ID): that one first, marked
        assert body["selected"] == 1
        assert [d["index"] for d in body["devices"]] == [1, 0]
        a10, h100 = body["devices"]
        assert a10["selected"] is True and h100["selected"] is False
        assert h100["name"] == "NVIDIA H100 80GB HBM3"
        assert h100["memory"]["total_mb"] == 80 * 1024 and h100["memory"]["used_mb"] == 2048
        assert h100["memory"]["free_bytes"] == 78 * GIB
        assert h100["utilization"] == {"gpu_percent": 40, "memory_percent": 20}
        assert h100["temperature_c"] == 41 and h100["power_w"] == 71.5
        assert a10["utilization"] is None  # not supported there: null, not an error
        assert fake.open == 0  # every NVML session closed

        await _probed(client)
        health = await (await client.get("/health")).json()
        assert health["gpuAvailable"] is True
        assert health["gpu"]["devices"] == ["NVIDIA H100 80GB HBM3", "NVIDIA A10"]

        body = await _models(client)
        _schema_check(body, "Models")
        cuda = [d for d in body["devices"] if d["type"] == "cuda"]
        assert [(d["id"], d["name"], d["selected"]) for d in cuda] == [
            ("cuda:1", "NVIDIA A10", True),
            ("cuda:0", "NVIDIA H100 80GB HBM3", False),
        ]
    finally:
        await client.close()


async def test_a_gpu_id_past_the_last_gpu_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(TWO_GPUS[:1]))
    client = await start_client(make_settings(tmp_path, gpu_id=3))
    try:
        body = await (await client.get("/api/v1/gpu-info", headers=AUTH)).json()
        assert body["available"] is True and body["selected"] is None
        assert "AVATAR_GPU_ID=3" in body["warning"]
        assert body["devices"][0]["selected"] is False
    finally:
        await client.close()
