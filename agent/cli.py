"""Command-line entry shared by the agent and the avatar worker: check the configuration,
then hand over to the livekit-agents CLI (dev | start | console | connect)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from livekit.agents import AgentServer, cli

from renderers import RendererError, VideoFormat, create

from .config import ConfigError, Settings, check_livekit_reachable

_NEEDS_SERVER = ("dev", "start", "connect")
_RUNS_AGENT = (*_NEEDS_SERVER, "console")
"""Commands that run the agent, checked first; others (`download-files`, `--help`) are not."""


def run(server: AgentServer, argv: Sequence[str] | None = None, *, name: str) -> NoReturn:
    argv = list(sys.argv if argv is None else argv)
    command = next((arg for arg in argv[1:] if not arg.startswith("-")), None)
    if command in _RUNS_AGENT:
        try:
            preflight(command, argv, renders=name != "avatar-agent")
        except (ConfigError, RendererError) as error:
            print(f"{name}: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
    cli.run_app(server)
    raise SystemExit(0)


def preflight(command: str, argv: Sequence[str], *, renders: bool = False) -> Settings:
    """Fail before the worker starts, with one line, on anything a person must fix.

    `renders`: this process always draws the avatar (the avatar worker); the agent draws it
    only in the in-process mode; in the remote mode its machine needs no renderer at all."""
    settings = Settings.from_env()
    # The livekit-agents CLI reads these; give it the same defaults the rest of the project uses.
    os.environ.setdefault("LIVEKIT_URL", settings.livekit_url)
    os.environ.setdefault("LIVEKIT_API_KEY", settings.api_key)
    os.environ.setdefault("LIVEKIT_API_SECRET", settings.api_secret)
    if renders or settings.avatar_mode == "inprocess":
        video = VideoFormat(settings.width, settings.height, settings.fps)
        renderer = create(settings.renderer, video)
        try:
            renderer.load(settings.source)  # a bad avatar source fails now, not in a room
        finally:
            renderer.close()
    if command in _NEEDS_SERVER:
        check_livekit_reachable(_flag(argv, "--url") or os.environ["LIVEKIT_URL"])
    return settings


def _flag(argv: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None
