"""Shared pytest fixtures. The machinery lives in tests/livekit_server.py."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.livekit_server import LiveKitServer, running_livekit_server


@pytest.fixture(scope="session")
def livekit_server(request: pytest.FixtureRequest) -> Iterator[LiveKitServer]:
    """A real livekit-server for the whole session, on free loopback ports.

    Skips (fails under CI) when none can be had. Its log is kept, and its path printed,
    when any test of the session failed.
    """
    with running_livekit_server(keep_log=lambda: request.session.testsfailed > 0) as server:
        yield server


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh AVATAR_CACHE for one test module, so what it prepares (meshwarp's avatars) never
    lands in the user's cache; the face models stay where setup put them. A module opts in
    with `pytestmark = pytest.mark.usefixtures("private_cache")`."""
    from renderers.vision import models_dir  # here: most test modules never need it

    models = models_dir()
    root = tmp_path_factory.mktemp("avatar-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AVATAR_MODELS_DIR", str(models))
        patch.setenv("AVATAR_CACHE", str(root))
        yield root


# livekit-ffi's tokio runtime can panic while the interpreter tears down ("panic in a function
# that cannot unwind", docs/livekit-rtc-notes.md), aborting a run whose tests all passed. Once
# pytest has reported everything, leave without that teardown, with pytest's own exit status.
_exit_status: int | None = None


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _exit_status is not None and "livekit.rtc" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status)
