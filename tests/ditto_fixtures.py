"""A Ditto checkpoints folder of random weights for the ditto tests: SMALL LivePortrait
networks and a SMALL `lmdm_v0.4_hubert.pth` in Ditto's `ditto_pytorch/models` layout and a
random HuBERT ONNX in `ditto_pytorch/aux_models`, the same calls tests/test_ditto_renderer.py
makes, written once per test session however many modules use it.

Use it by importing the fixture into a test module:

    from tests.ditto_fixtures import ditto_checkpoints  # noqa: F401

`ditto_checkpoints` is the folder AVATAR_DITTO_DIR names (Ditto's `checkpoints/`)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest


@functools.cache
def small_ditto_checkpoints(base: Path) -> Path:
    """SMALL random Ditto checkpoints under `base`, written on first use."""
    from renderers.ditto.audio.random_model import write_random_hubert_onnx
    from renderers.ditto.lmdm.random_weights import write_random_checkpoint
    from renderers.liveportrait.random_weights import write_random_checkpoints

    root = base / "ditto-checkpoints" / "checkpoints"
    models = root / "ditto_pytorch" / "models"
    write_random_checkpoints(models, "ditto", 7, sizes="small")
    write_random_checkpoint(models, sizes="small", seed=3)
    write_random_hubert_onnx(root / "ditto_pytorch" / "aux_models" / "hubert_streaming_fix_kv.onnx")
    return root


@pytest.fixture(scope="session")
def ditto_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ditto's `checkpoints/` folder with SMALL random weights (what AVATAR_DITTO_DIR names)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    return small_ditto_checkpoints(tmp_path_factory.getbasetemp())
