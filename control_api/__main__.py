"""`python -m control_api [--host 127.0.0.1] [--port 8080]`"""

from __future__ import annotations

import argparse
import logging
import os

from aiohttp import web

from .app import create_app
from .config import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m control_api", description="Avatar Agents control API and demo page."
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="bind port (default 8080)")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings.from_env()
    logging.getLogger("control_api").info(
        "LiveKit %s (public %s), agent %r",
        settings.livekit_url,
        settings.public_livekit_url,
        settings.agent_name,
    )
    web.run_app(create_app(settings), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
