"""Shared pytest fixtures. The machinery lives in tests/livekit_server.py."""

from __future__ import annotations

from collections.abc import Iterator

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
