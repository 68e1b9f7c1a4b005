"""Seed 004's configuration names (DITTO_*) as aliases of ours (control_api/env_aliases.py):
each lands on the setting it means, ours wins when both are set, a bad value is refused naming
the seed's variable, worker processes get our names, and DITTO_HOST/DITTO_PORT decide where
`python -m control_api` listens."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from control_api.config import ConfigError, Settings
from control_api.env_aliases import ALIASES, apply_aliases, seed_names
from control_api.jobs.runner import worker_env
from renderers.ditto.settings import DittoSettings
from renderers.liveportrait.settings import LivePortraitSettings
from renderers.wav2lip.settings import Wav2LipSettings
from tests.livekit_server import free_port
from tests.seed004_process import OURS, running_service

BASE = {"AVATAR_API_KEYS": "k"}
SEED_ENV = {
    "DITTO_INFERENCE_BACKEND": "tensorrt",
    "DITTO_HOST": "0.0.0.0",
    "DITTO_PORT": "8123",
    "DITTO_GPU_ID": "1",
    "DITTO_MAX_CONCURRENT_SESSIONS": "3",
    "DITTO_CORS_ORIGINS": "http://localhost:3000,http://localhost:5173",
    "DITTO_LOG_LEVEL": "debug",
    "DITTO_ENABLE_CONSOLE_LOGGING": "false",
    "DITTO_ENABLE_FILE_LOGGING": "False",
}


def test_the_table_covers_the_seeds_configuration_section() -> None:
    # seed 004's README, "Configuration": every variable it documents
    assert set(seed_names()) == set(SEED_ENV)
    assert seed_names()["DITTO_MAX_CONCURRENT_SESSIONS"] == ("AVATAR_STREAM_MAX_SESSIONS",)
    assert all(alias.seed.startswith("DITTO_") for alias in ALIASES)


def test_each_seed_name_lands_on_its_setting() -> None:
    settings = Settings.from_env({**BASE, **SEED_ENV})
    assert settings.host == "0.0.0.0" and settings.port == 8123
    assert settings.gpu_id == 1
    assert settings.stream_max_sessions == 3
    assert settings.cors_origins == ("http://localhost:3000", "http://localhost:5173")
    assert settings.log_level == "DEBUG"
    assert settings.enable_console_logging is False
    assert settings.enable_file_logging is False
    # the back end is the renderers' setting: they read it from the environment
    env = dict(SEED_ENV)
    apply_aliases(env)
    assert LivePortraitSettings.from_env(env).backend == "tensorrt"
    assert Wav2LipSettings.from_env(env).backend == "tensorrt"
    assert DittoSettings.from_env(env).backend == "tensorrt"
    env = {"DITTO_INFERENCE_BACKEND": "pytorch"}
    apply_aliases(env)
    assert env["AVATAR_LIVEPORTRAIT_BACKEND"] == env["AVATAR_WAV2LIP_BACKEND"] == "torch"
    assert LivePortraitSettings.from_env(env).backend == "torch"
    assert DittoSettings.from_env(env).backend == "torch"


def test_defaults_without_any_seed_name() -> None:
    settings = Settings.from_env(BASE)
    assert (settings.host, settings.port, settings.gpu_id) == ("127.0.0.1", 8080, None)
    assert settings.log_level == "INFO"
    assert settings.enable_console_logging and settings.enable_file_logging
    assert settings.logs_dir == settings.cache_dir / "logs"


def test_our_name_wins_and_the_conflict_is_named(caplog: pytest.LogCaptureFixture) -> None:
    env = {
        **BASE,
        "DITTO_PORT": "9001",
        "AVATAR_PORT": "9002",
        "DITTO_LOG_LEVEL": "ERROR",
        "AVATAR_LOG_LEVEL": "WARNING",
        "DITTO_INFERENCE_BACKEND": "pytorch",
        "AVATAR_WAV2LIP_BACKEND": "onnx",
    }
    with caplog.at_level(logging.WARNING, logger="control_api"):
        settings = Settings.from_env(env)
    assert settings.port == 9002 and settings.log_level == "WARNING"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("DITTO_PORT=9001" in w and "AVATAR_PORT=9002" in w for w in warnings), warnings
    assert any("DITTO_LOG_LEVEL" in w and "AVATAR_LOG_LEVEL" in w for w in warnings), warnings
    # one seed name, two of ours: each of ours decides for itself
    applied = apply_aliases(dict(env))
    assert applied.assigned == {
        "AVATAR_DITTO_BACKEND": "DITTO_INFERENCE_BACKEND",
        "AVATAR_LIVEPORTRAIT_BACKEND": "DITTO_INFERENCE_BACKEND",
    }
    assert applied.overridden["AVATAR_WAV2LIP_BACKEND"] == "DITTO_INFERENCE_BACKEND"
    # the same values again: no second warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="control_api"):
        Settings.from_env(env)
    assert not [r for r in caplog.records if "DITTO_PORT" in r.getMessage()]


def test_an_empty_name_of_ours_counts_as_unset() -> None:
    settings = Settings.from_env({**BASE, "DITTO_PORT": "9005", "AVATAR_PORT": ""})
    assert settings.port == 9005


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DITTO_INFERENCE_BACKEND", "cuda"),
        ("DITTO_PORT", "http"),
        ("DITTO_PORT", "70000"),
        ("DITTO_GPU_ID", "-1"),
        ("DITTO_MAX_CONCURRENT_SESSIONS", "0"),
        ("DITTO_LOG_LEVEL", "loud"),
        ("DITTO_ENABLE_FILE_LOGGING", "maybe"),
    ],
)
def test_a_bad_seed_value_is_refused_naming_the_seed_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({**BASE, name: value})


def test_the_callers_mapping_is_not_changed() -> None:
    env = {**BASE, "DITTO_PORT": "9003"}
    Settings.from_env(env)
    assert env == {**BASE, "DITTO_PORT": "9003"}


def test_reading_the_process_environment_sets_our_names_in_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Empty values of ours count as unset, and monkeypatch puts the environment back after.
    for name in OURS:
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("AVATAR_API_KEYS", "k")
    monkeypatch.setenv("AVATAR_CACHE", str(tmp_path))
    monkeypatch.setenv("DITTO_INFERENCE_BACKEND", "pytorch")
    monkeypatch.setenv("DITTO_MAX_CONCURRENT_SESSIONS", "4")
    settings = Settings.from_env()
    assert settings.stream_max_sessions == 4
    # what a renderer reads in this process, and what a worker process inherits
    assert os.environ["AVATAR_LIVEPORTRAIT_BACKEND"] == "torch"
    assert LivePortraitSettings.from_env().backend == "torch"
    assert Wav2LipSettings.from_env().backend == "torch"
    assert worker_env(os.environ)["AVATAR_STREAM_MAX_SESSIONS"] == "4"


def test_a_workers_environment_carries_our_names_and_the_gpu() -> None:
    env = worker_env(
        {"DITTO_INFERENCE_BACKEND": "tensorrt", "DITTO_GPU_ID": "2", "DITTO_LOG_LEVEL": "debug"}
    )
    assert env["AVATAR_LIVEPORTRAIT_BACKEND"] == env["AVATAR_WAV2LIP_BACKEND"] == "tensorrt"
    assert env["AVATAR_GPU_ID"] == "2"
    assert env["CUDA_VISIBLE_DEVICES"] == "2" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["LOG_LEVEL"] == "DEBUG"  # what the render worker reads
    # an operator's own CUDA_VISIBLE_DEVICES is theirs
    env = worker_env({"AVATAR_GPU_ID": "1", "CUDA_VISIBLE_DEVICES": "0,1"})
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1" and "CUDA_DEVICE_ORDER" not in env
    assert "CUDA_VISIBLE_DEVICES" not in worker_env({})


@pytest.mark.slow
def test_ditto_host_and_port_decide_where_the_service_listens(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "DITTO_HOST": "127.0.0.1",
        "DITTO_PORT": str(port),
        "DITTO_ENABLE_FILE_LOGGING": "false",
        "DITTO_CORS_ORIGINS": "http://localhost:5173",
    }
    with running_service(tmp_path, env, port) as service:
        reply = service.get("/api/v1/live", {"Origin": "http://localhost:5173"})
        assert reply.status == 200
        assert reply.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    assert not (tmp_path / "cache" / "logs").exists()  # DITTO_ENABLE_FILE_LOGGING=false
    # --port wins over both names
    other = free_port()
    with running_service(
        tmp_path / "cli", {**env, "AVATAR_PORT": str(port)}, other, ["--port", str(other)]
    ) as service:
        assert service.get("/api/v1/live").status == 200
