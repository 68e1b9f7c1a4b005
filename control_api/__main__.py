"""`python -m control_api [--host 127.0.0.1] [--port 8080]`: the service (the default; host,
port and log level otherwise from AVATAR_HOST, AVATAR_PORT, AVATAR_LOG_LEVEL or seed 004's
DITTO_HOST, DITTO_PORT, DITTO_LOG_LEVEL, and logging as logging_setup.py says).
`python -m control_api prepare VIDEO ...`: prepare an avatar package (see prepare_cli.py).
Installed, the console script `avatar-control-api` is the same command."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys

log = logging.getLogger("control_api")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["prepare"]:
        from .prepare_cli import main as prepare

        raise SystemExit(prepare(argv[1:]))
    # Imported here so that `prepare` does not pay for the web app and LiveKit.
    from aiohttp import web

    from .app import create_app
    from .config import ConfigError, Settings
    from .gpu import select_gpu
    from .logging_setup import ContextAccessLogger, configure_logging
    from .security import ensure_credentials

    parser = argparse.ArgumentParser(
        prog=_prog(),
        description="Avatar Agents control API and web client.",
        epilog="python -m control_api prepare --help: turn a training video into an avatar package",
    )
    parser.add_argument(
        "--host", default=None, help="bind address (default AVATAR_HOST, else 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=None, help="bind port (default AVATAR_PORT, else 8080)"
    )
    parser.add_argument(
        "--log-level", default=None, help="DEBUG, INFO, ... (default AVATAR_LOG_LEVEL, else INFO)"
    )
    parser.add_argument(
        "--no-access-log", action="store_true", help="do not log a line per request"
    )
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env()
        if args.log_level:
            settings = dataclasses.replace(settings, log_level=args.log_level.upper())
            settings.validate()
        configure_logging(settings)
        # The GPU AVATAR_GPU_ID names is the only one this process and its workers see.
        select_gpu(os.environ, settings.gpu_id)
        settings, generated_key = ensure_credentials(settings)
        app = create_app(settings)
    except ConfigError as error:
        print(f"control_api: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    port = args.port if args.port is not None else settings.port
    bind = args.host or settings.host

    log.info(
        "LiveKit %s (public %s), agent %r",
        settings.livekit_url,
        settings.public_livekit_url,
        settings.agent_name,
    )
    host = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind
    if settings.auth == "disabled":
        log.warning(
            "authentication is DISABLED (AVATAR_API_AUTH=disabled): anyone who can "
            "reach port %d controls every session",
            port,
        )
    elif generated_key is not None:
        log.info(
            "no AVATAR_API_KEYS set; using the key in %s. Open the web client at "
            "http://%s:%d/#api_key=%s",
            settings.cache_dir / "control-api-key",
            host,
            port,
            generated_key,
        )
    web.run_app(
        app,
        loop=_event_loop(),
        host=bind,
        port=port,
        print=None,
        access_log=None if args.no_access_log else logging.getLogger("aiohttp.access"),
        access_log_class=ContextAccessLogger,
    )


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (livekit-agents brings it; not on Windows): about 7% less
    CPU per request than asyncio's loop (288 against 308 us for `GET /avatars/{id}` at 1000
    requests/s, docs/reliability.md). AVATAR_EVENT_LOOP=asyncio keeps the standard loop."""
    choice = os.environ.get("AVATAR_EVENT_LOOP", "uvloop").strip().lower()
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.info("uvloop is not installed; using asyncio's event loop")
        else:
            return uvloop.new_event_loop()
    elif choice != "asyncio":
        log.warning("AVATAR_EVENT_LOOP=%r is neither uvloop nor asyncio; using asyncio", choice)
    return asyncio.new_event_loop()


def _prog() -> str:
    """How the user started us: `avatar-control-api` (console script) or `python -m ...`."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name and not name.endswith(".py") else "python -m control_api"


if __name__ == "__main__":
    main()
