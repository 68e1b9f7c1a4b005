"""`python -m control_api prepare VIDEO --avatar-id ID [--model wav2lip|meshwarp] [--out DIR]
[--face-size 96|256]`: prepare an avatar package on this machine, with a progress bar.

Exit codes: 0 with the package's path and frame count on stdout; 2 with the error's message
on stderr when the video or the request is refused (a PreparationError), as argparse does
for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from renderers.preparation import (
    SUPPORTED_MODELS,
    PreparationError,
    PreparationLimits,
    prepare_avatar_package,
)

PROG = "python -m control_api prepare"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Turn a training video into an avatar package (a .tar)."
    )
    parser.add_argument("video", type=Path, help="the training video")
    parser.add_argument("--avatar-id", required=True, help="names the package: ID.tar")
    parser.add_argument(
        "--model", default="wav2lip", help=f"package format: {', '.join(SUPPORTED_MODELS)}"
    )
    parser.add_argument("--out", type=Path, default=Path("."), help="folder to write ID.tar in")
    parser.add_argument(
        "--face-size", type=int, choices=(96, 256), default=96, help="wav2lip face crop side"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    with tqdm(
        total=100,
        file=sys.stderr,
        disable=args.quiet,
        bar_format="{desc:<22} {percentage:3.0f}%|{bar}| {elapsed}",
    ) as bar:

        def progress(fraction: float, message: str) -> None:
            bar.set_description_str(message, refresh=False)
            bar.update(round(100 * fraction) - bar.n)

        try:
            result = prepare_avatar_package(
                args.video,
                avatar_id=args.avatar_id,
                model=args.model,
                out_dir=args.out,
                limits=PreparationLimits(face_size=args.face_size),
                progress=progress,
            )
        except PreparationError as error:
            bar.close()
            print(f"{PROG}: error: {error.message}", file=sys.stderr)
            return 2
    print(f"{result.package}")
    print(f"{result.num_frames} frames ({result.model})")
    return 0
