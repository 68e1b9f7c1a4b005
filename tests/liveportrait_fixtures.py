"""Checkpoint sets for the liveportrait tests: random weights at the SMALL sizes (the
published files, keys and nesting, with narrow layers: milliseconds per network on a CPU),
written once per test session however many modules use them, plus one ONNX cache folder for
the session so the export also happens once.

Use them by importing the fixtures into a test module:

    from tests.liveportrait_fixtures import liveportrait_dir, liveportrait_cache  # noqa: F401

`liveportrait_dir` is a LivePortrait layout folder (`.../liveportrait`, what
AVATAR_LIVEPORTRAIT_DIR names), `liveportrait_ditto_dir` a Ditto `models` folder, and
`liveportrait_settings(directory, cache, backend)` the settings for either."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from renderers.liveportrait.settings import LivePortraitSettings

SEED = 7


@functools.cache
def small_checkpoints(base: Path, layout: str) -> Path:
    """A SMALL random checkpoint set in `layout` under `base`, written on first use."""
    from renderers.liveportrait.random_weights import write_random_checkpoints

    folder = {"liveportrait": "pretrained_weights/liveportrait", "ditto": "ditto_pytorch/models"}
    return write_random_checkpoints(
        base / "liveportrait-checkpoints" / folder[layout],
        "liveportrait" if layout == "liveportrait" else "ditto",
        SEED,
        sizes="small",
    )


def liveportrait_settings(
    directory: Path, cache: Path, backend: str = "torch"
) -> LivePortraitSettings:
    return LivePortraitSettings(directory=directory, backend=backend, device="cpu", cache_dir=cache)


@pytest.fixture(scope="session")
def liveportrait_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SMALL random weights in LivePortrait's layout (`pretrained_weights/liveportrait`)."""
    pytest.importorskip("torch")
    return small_checkpoints(tmp_path_factory.getbasetemp(), "liveportrait")


@pytest.fixture(scope="session")
def liveportrait_ditto_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same weights in Ditto's layout (`ditto_pytorch/models`)."""
    pytest.importorskip("torch")
    return small_checkpoints(tmp_path_factory.getbasetemp(), "ditto")


@pytest.fixture(scope="session")
def liveportrait_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's cache for exported ONNX files (the export runs once per checkpoint set)."""
    path = tmp_path_factory.getbasetemp() / "liveportrait-cache"
    path.mkdir(exist_ok=True)
    return path
