"""The liveportrait engine's back ends on SMALL random checkpoints: torch and ONNX Runtime
agree, batches equal single calls, stitching adds what the MLP says, the ONNX export is made
once per checkpoint content (under a lock) and then runs without torch, and the settings read
the environment without importing anything heavy.

Tolerances: both back ends compute in float32; they differ only by the order of
floating-point sums (different convolution kernels, ORT's fused ops), which shifts values by
~1e-6 relative. warp_decode is held to 1e-3 on its [0, 1] output: a quarter of one 8-bit grey
level, so the two give the same picture after rounding to bytes. The small networks
(appearance, motion, MLPs) are held to 1e-4 absolute (degrees: 1e-3)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from renderers.base import RendererError
from renderers.liveportrait.settings import CPU_AUTO_BACKEND, LivePortraitSettings

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from renderers.liveportrait.engine import (  # noqa: E402
    LivePortraitEngine,
    MotionInfo,
    load_engine,
)
from renderers.liveportrait.engine_onnx import OnnxEngine  # noqa: E402
from renderers.liveportrait.engine_torch import TorchEngine  # noqa: E402
from renderers.liveportrait.onnx_files import exported_set  # noqa: E402

pytest_plugins = ["tests.liveportrait_fixtures"]
REPO = Path(__file__).resolve().parent.parent


def cpu_settings(directory: Path, cache: Path, backend: str) -> LivePortraitSettings:
    return LivePortraitSettings(directory=directory, backend=backend, device="cpu", cache_dir=cache)


@pytest.fixture(scope="module")
def engines(liveportrait_dir: Path, liveportrait_cache: Path) -> dict[str, LivePortraitEngine]:
    return {
        backend: load_engine(cpu_settings(liveportrait_dir, liveportrait_cache, backend))
        for backend in ("torch", "onnx")
    }


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    kp_source = (0.4 * rng.standard_normal((2, 21, 3))).astype(np.float32)
    return {
        "image": rng.random((2, 3, 256, 256), dtype=np.float32),
        "kp_source": kp_source,
        "kp_driving": kp_source + 0.03 * rng.standard_normal((2, 21, 3)).astype(np.float32),
        "lip": np.float32([[0.05, 0.4], [0.3, 0.0]]),
        "eye": np.float32([[0.3, 0.32, 0.0], [0.2, 0.25, 0.4]]),
    }


@pytest.fixture(scope="module")
def warped(engines: dict[str, LivePortraitEngine], inputs: dict[str, np.ndarray]) -> dict:  # type: ignore[type-arg]
    """warp_decode computed once per test module (it is the slow call): ONNX on the batch of
    two and on its second sample alone, torch on the first sample alone."""
    feature = engines["torch"].appearance(inputs["image"])
    kp_s, kp_d = inputs["kp_source"], inputs["kp_driving"]
    return {
        "feature": feature,
        "onnx": engines["onnx"].warp_decode(feature, kp_s, kp_d),
        "onnx_second": engines["onnx"].warp_decode(feature[1:], kp_s[1:], kp_d[1:]),
        "torch_first": engines["torch"].warp_decode(feature[:1], kp_s[:1], kp_d[:1]),
    }


def test_engines_report_what_runs(engines: dict[str, LivePortraitEngine]) -> None:
    for backend, engine in engines.items():
        assert (engine.backend, engine.device, engine.fp16) == (backend, "cpu", False)
        assert engine.has_lip_retargeting and engine.has_eye_retargeting


def test_torch_and_onnx_agree_on_appearance_and_motion(
    engines: dict[str, LivePortraitEngine], inputs: dict[str, np.ndarray]
) -> None:
    torch_f = engines["torch"].appearance(inputs["image"])
    onnx_f = engines["onnx"].appearance(inputs["image"])
    assert torch_f.shape == (2, 32, 16, 64, 64) and torch_f.dtype == np.float32
    assert np.abs(torch_f - onnx_f).max() < 1e-4
    a, b = (engines[name].motion(inputs["image"]) for name in ("torch", "onnx"))
    shapes = {"pitch": (2,), "yaw": (2,), "roll": (2,), "t": (2, 3), "exp": (2, 21, 3)}
    shapes |= {"scale": (2, 1), "kp": (2, 21, 3)}
    for field, shape in shapes.items():
        first, second = getattr(a, field), getattr(b, field)
        assert first.shape == shape and first.dtype == np.float32, field
        tolerance = 1e-3 if field in ("pitch", "yaw", "roll") else 1e-4
        assert np.abs(first - second).max() < tolerance, field
    assert np.all(np.abs(a.pitch) <= 97.5)


def test_motion_degrees_are_the_softmax_reading_of_the_raw_bins(
    engines: dict[str, LivePortraitEngine], inputs: dict[str, np.ndarray]
) -> None:
    from renderers.liveportrait.keypoint_math import bins_to_degrees

    engine = engines["torch"]
    assert isinstance(engine, TorchEngine)
    with torch.inference_mode():
        raw = engine.networks.motion(torch.from_numpy(inputs["image"]))
    info = engine.motion(inputs["image"])
    assert isinstance(info, MotionInfo)
    for field in ("pitch", "yaw", "roll"):
        expected = bins_to_degrees(raw[field].numpy())
        assert np.allclose(getattr(info, field), expected, atol=1e-3)
    assert np.allclose(info.kp, raw["kp"].numpy().reshape(2, 21, 3))


def test_torch_and_onnx_agree_on_warp_decode(warped: dict) -> None:  # type: ignore[type-arg]
    picture = warped["torch_first"]
    assert picture.shape == (1, 3, 512, 512) and picture.dtype == np.float32
    assert 0.0 <= picture.min() and picture.max() <= 1.0
    assert np.abs(picture[0] - warped["onnx"][0]).max() < 1e-3


def test_a_batch_equals_single_calls(
    engines: dict[str, LivePortraitEngine],
    inputs: dict[str, np.ndarray],
    warped: dict,  # type: ignore[type-arg]
) -> None:
    assert warped["onnx"].shape == (2, 3, 512, 512)
    assert np.abs(warped["onnx"][1] - warped["onnx_second"][0]).max() < 1e-5
    torch_engine = engines["torch"]
    both = torch_engine.motion(inputs["image"])
    second = torch_engine.motion(inputs["image"][1:])
    assert np.allclose(both.exp[1:], second.exp, atol=1e-5)
    assert np.allclose(
        torch_engine.appearance(inputs["image"][1:]), warped["feature"][1:], atol=1e-5
    )
    stitched = torch_engine.stitch(inputs["kp_source"], inputs["kp_driving"])
    alone = torch_engine.stitch(inputs["kp_source"][:1], inputs["kp_driving"][:1])
    assert np.allclose(stitched[:1], alone, atol=1e-6)


def test_torch_and_onnx_agree_on_the_mlps(
    engines: dict[str, LivePortraitEngine], inputs: dict[str, np.ndarray]
) -> None:
    a, b = engines["torch"], engines["onnx"]
    kp_s, kp_d = inputs["kp_source"], inputs["kp_driving"]
    assert np.abs(a.stitch(kp_s, kp_d) - b.stitch(kp_s, kp_d)).max() < 1e-4
    assert (
        np.abs(a.retarget_lip(kp_s, inputs["lip"]) - b.retarget_lip(kp_s, inputs["lip"])).max()
        < 1e-4
    )
    assert (
        np.abs(a.retarget_eye(kp_s, inputs["eye"]) - b.retarget_eye(kp_s, inputs["eye"])).max()
        < 1e-4
    )


def test_stitching_adds_the_mlp_delta_and_tx_ty(
    engines: dict[str, LivePortraitEngine], inputs: dict[str, np.ndarray]
) -> None:
    engine = engines["torch"]
    assert isinstance(engine, TorchEngine)
    kp_s, kp_d = inputs["kp_source"], inputs["kp_driving"]
    features = np.concatenate([kp_s.reshape(2, -1), kp_d.reshape(2, -1)], axis=1)
    with torch.inference_mode():
        delta = engine.networks.stitching(torch.from_numpy(features)).numpy()
    assert delta.shape == (2, 65)
    expected = kp_d + delta[:, :63].reshape(2, 21, 3)
    expected[..., 0] += delta[:, 63:64]
    expected[..., 1] += delta[:, 64:65]  # z gets no shift
    for backend in ("torch", "onnx"):
        assert np.allclose(engines[backend].stitch(kp_s, kp_d), expected, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 3])
def test_retargeting_returns_one_delta_per_keypoint(
    engines: dict[str, LivePortraitEngine], batch: int
) -> None:
    rng = np.random.default_rng(batch)
    kp = (0.4 * rng.standard_normal((batch, 21, 3))).astype(np.float32)
    for engine in engines.values():
        lip = engine.retarget_lip(kp, rng.random((batch, 2), dtype=np.float32))
        eye = engine.retarget_eye(kp, rng.random((batch, 3), dtype=np.float32))
        assert lip.shape == eye.shape == (batch, 21, 3)
        assert lip.dtype == eye.dtype == np.float32


def test_bad_shapes_are_refused_before_running(engines: dict[str, LivePortraitEngine]) -> None:
    engine = engines["onnx"]
    with pytest.raises(ValueError, match=r"image must be \(B, 3, 256, 256\)"):
        engine.appearance(np.zeros((1, 3, 128, 128), np.float32))
    kp = np.zeros((2, 21, 3), np.float32)
    with pytest.raises(ValueError, match="batch sizes differ"):
        engine.stitch(kp, kp[:1])
    with pytest.raises(ValueError, match=r"ratios must be \(B, 2\)"):
        engine.retarget_lip(kp, np.zeros((2, 3), np.float32))


# -- the ONNX export --------------------------------------------------------------------------


def test_the_export_is_cached_by_checkpoint_content(
    liveportrait_dir: Path,
    liveportrait_cache: Path,
    engines: dict,
    tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    from renderers.liveportrait.checkpoint import locate
    from renderers.liveportrait.random_weights import write_random_checkpoints

    files = locate(liveportrait_dir)
    exported = exported_set(liveportrait_cache, files)
    assert exported is not None
    assert set(exported.graphs) == {
        "appearance",
        "motion",
        "warp_decode",
        "stitching",
        "lip",
        "eye",
    }
    stamps = {graph: exported.path(graph).stat().st_mtime_ns for graph in exported.graphs}
    again = load_engine(cpu_settings(liveportrait_dir, liveportrait_cache, "onnx"))
    assert isinstance(again, OnnxEngine) and again.exported.folder == exported.folder
    assert stamps == {g: exported.path(g).stat().st_mtime_ns for g in exported.graphs}
    # other weights in the same place: another digest, so another export folder
    changed = write_random_checkpoints(tmp_path / "liveportrait", "liveportrait", 99, sizes="small")
    assert locate(changed).digest() != files.digest()
    assert exported_set(liveportrait_cache, locate(changed)) is None


def test_concurrent_exports_make_one_set(
    liveportrait_ditto_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from renderers.liveportrait import onnx_export
    from renderers.liveportrait.checkpoint import load_networks, locate

    files = locate(liveportrait_ditto_dir)
    networks = load_networks(files)
    exported: list[str] = []
    real = onnx_export.export_graph

    def counting(module, example, name, path):  # type: ignore[no-untyped-def]
        exported.append(name)
        real(module, example, name, path)

    monkeypatch.setattr(onnx_export, "export_graph", counting)
    results: list[Path] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                onnx_export.ensure_exported(files, tmp_path, networks).folder
            )
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and results[0] == results[1]
    assert sorted(exported) == sorted(set(exported))  # each graph exported once
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers
    manifest = json.loads((results[0] / "manifest.json").read_text())
    assert manifest["opset"] == 20 and manifest["sizes"] == "small"


def test_onnx_runs_without_torch_once_exported(
    liveportrait_dir: Path,
    liveportrait_cache: Path,
    engines: dict,  # type: ignore[type-arg]
) -> None:
    script = f"""
import sys, numpy as np
sys.modules["torch"] = None  # any import of torch now fails
from pathlib import Path
from renderers.liveportrait.engine import load_engine
from renderers.liveportrait.settings import LivePortraitSettings
engine = load_engine(LivePortraitSettings(
    directory=Path({str(liveportrait_dir)!r}), backend="onnx", device="cpu",
    cache_dir=Path({str(liveportrait_cache)!r})))
kp = np.zeros((1, 21, 3), np.float32)
image = np.zeros((1, 3, 256, 256), np.float32)
print(engine.backend, engine.stitch(kp, kp).shape, engine.motion(image).kp.shape)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["onnx", "(1,", "21,", "3)", "(1,", "21,", "3)"]


# -- choosing a back end ---------------------------------------------------------------------


def test_missing_back_ends_are_backend_unavailable(
    liveportrait_dir: Path, liveportrait_cache: Path
) -> None:
    from renderers.model_settings import installed

    if not installed("tensorrt"):
        with pytest.raises(RendererError) as caught:
            load_engine(cpu_settings(liveportrait_dir, liveportrait_cache, "tensorrt"))
        assert caught.value.code == "backend_unavailable"
        assert "tensorrt" in caught.value.message
    if not torch.cuda.is_available():
        settings = LivePortraitSettings(directory=liveportrait_dir, backend="torch", device="cuda")
        with pytest.raises(RendererError) as caught:
            load_engine(settings)
        assert caught.value.code == "backend_unavailable"


def test_retargeting_absent_from_the_checkpoint_is_a_clear_error(
    liveportrait_ditto_dir: Path, tmp_path: Path
) -> None:
    import shutil

    root = Path(shutil.copytree(liveportrait_ditto_dir, tmp_path / "models"))
    path = root / "stitch_network.pth"
    full = torch.load(path, weights_only=True)
    torch.save({"retarget_shoulder": full["retarget_shoulder"]}, path)
    engine = load_engine(LivePortraitSettings(directory=root, backend="torch", device="cpu"))
    assert not engine.has_lip_retargeting and not engine.has_eye_retargeting
    kp = np.zeros((1, 21, 3), np.float32)
    with pytest.raises(RendererError) as caught:
        engine.retarget_lip(kp, np.zeros((1, 2), np.float32))
    assert (
        caught.value.code == "retargeting_unavailable" and "retarget_mouth" in caught.value.message
    )
    assert engine.stitch(kp, kp).shape == (1, 21, 3)


def test_settings_read_the_environment(tmp_path: Path) -> None:
    settings = LivePortraitSettings.from_env(
        {
            "AVATAR_LIVEPORTRAIT_DIR": str(tmp_path),
            "AVATAR_LIVEPORTRAIT_BACKEND": "ONNX",
            "AVATAR_LIVEPORTRAIT_DEVICE": "cpu",
            "AVATAR_LIVEPORTRAIT_FP16": "0",
            "AVATAR_LIVEPORTRAIT_BATCH": "3",
            "AVATAR_LIVEPORTRAIT_CACHE": str(tmp_path / "cache"),
        }
    )
    assert settings == LivePortraitSettings(
        directory=tmp_path,
        backend="onnx",
        device="cpu",
        fp16=False,
        batch_size=3,
        cache_dir=tmp_path / "cache",
    )
    assert settings.resolved_batch_size() == 3 and not settings.resolved_fp16()
    for name, value in (("BACKEND", "jax"), ("DEVICE", "tpu"), ("FP16", "maybe"), ("BATCH", "0")):
        with pytest.raises(RendererError) as caught:
            LivePortraitSettings.from_env({f"AVATAR_LIVEPORTRAIT_{name}": value})
        assert caught.value.code == "invalid_config"
        assert f"AVATAR_LIVEPORTRAIT_{name}" in caught.value.message


def test_defaults_on_a_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from renderers import cache

    monkeypatch.setenv("AVATAR_CACHE", str(tmp_path))
    settings = LivePortraitSettings(device="cpu")
    assert settings.resolved_backend() == CPU_AUTO_BACKEND
    assert settings.resolved_batch_size() == 1 and not settings.resolved_fp16()
    assert settings.engine_cache() == cache.cache_dir() / "liveportrait"


def test_unavailable_reason_and_describe_say_what_is_wrong(
    liveportrait_dir: Path, tmp_path: Path
) -> None:
    reason = LivePortraitSettings().unavailable_reason()
    assert reason is not None and "AVATAR_LIVEPORTRAIT_DIR" in reason
    reason = LivePortraitSettings(directory=tmp_path).unavailable_reason()
    assert reason is not None and "no LivePortrait checkpoints" in reason
    (tmp_path / "decoder.pth").write_bytes(b"x")
    reason = LivePortraitSettings(directory=tmp_path).unavailable_reason()
    assert reason is not None and "Ditto" in reason and "incomplete" in reason
    assert "warp_network.pth" in reason
    settings = LivePortraitSettings(directory=liveportrait_dir, backend="torch", device="cpu")
    assert settings.unavailable_reason() is None
    assert settings.describe() == {
        "backend": "torch",
        "device": "cpu",
        "fp16": False,
        "batch": 1,
        "dir": str(liveportrait_dir),
        "layout": "liveportrait",
    }


def test_importing_the_package_loads_neither_torch_nor_onnxruntime() -> None:
    script = (
        "import sys, renderers.liveportrait, renderers.liveportrait.settings, "
        "renderers.liveportrait.engine, renderers.liveportrait.keypoint_math\n"
        "from renderers.liveportrait.settings import LivePortraitSettings\n"
        "LivePortraitSettings.from_env().describe()\n"
        "print(sorted(m for m in ('torch', 'onnxruntime') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
