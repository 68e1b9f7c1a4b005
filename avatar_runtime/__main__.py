"""`python -m avatar_runtime download-files`: the one-time download of the files the renderers
need at run time (MediaPipe's face models, into `$AVATAR_CACHE/models/` or
`AVATAR_MODELS_DIR`). Safe to run again: what is there is kept."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m avatar_runtime", description="Avatar Agents runtime utilities."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    download = commands.add_parser(
        "download-files",
        help="fetch MediaPipe's face models once (into $AVATAR_CACHE/models or AVATAR_MODELS_DIR)",
    )
    download.add_argument(
        "--dir", type=Path, default=None, help="put them here instead of the default folder"
    )
    args = parser.parse_args(argv)

    from renderers import RendererError
    from renderers.vision.download import download_models

    try:
        download_models(args.dir, log=lambda line: print(f"avatar_runtime: {line}", flush=True))
    except RendererError as error:
        print(f"avatar_runtime: error: {error.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
