"""Fetching MediaPipe's face models once, into `models_dir()` (outside the package).

`python -m avatar_runtime download-files` runs `download_models()`, as does livekit-agents'
`download-files` command of any worker that imports avatar_runtime (its plugin, see
avatar_runtime/plugin.py); `make setup` runs the first. Nothing else downloads: at run time a
missing model is a `RendererError("models_missing")` naming that command.

The `mediapipe` package cannot share an environment with livekit (it pins protobuf < 5), but
its wheel carries the models as plain .tflite files. So pip (this interpreter's, with the
user's own index settings) downloads the mediapipe wheel for this interpreter and platform,
without installing it or its dependencies; the five files are taken out of it and the wheel is
thrown away. Each file is written beside the target and renamed into place, so a model that is
there is whole, and two processes fetching at once do no harm.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from ..base import RendererError
from .models import (
    FACE_DETECTION_FULL,
    FACE_DETECTION_SHORT,
    FACE_LANDMARK,
    IRIS_LANDMARK,
    MEDIAPIPE_VERSION,
    MODEL_NAMES,
    SELFIE_SEGMENTATION,
    models_dir,
)

DOWNLOAD_COMMAND = "python -m avatar_runtime download-files"
"""The documented one-time step that fetches the models (also in models.py's error)."""

WHEEL_MEMBERS = {
    FACE_DETECTION_SHORT: "face_detection/face_detection_short_range.tflite",
    FACE_DETECTION_FULL: "face_detection/face_detection_full_range_sparse.tflite",
    FACE_LANDMARK: "face_landmark/face_landmark.tflite",
    IRIS_LANDMARK: "iris_landmark/iris_landmark.tflite",
    SELFIE_SEGMENTATION: "selfie_segmentation/selfie_segmentation.tflite",
}
"""Where each model sits in the wheel, under `mediapipe/modules/`."""
assert set(WHEEL_MEMBERS) == set(MODEL_NAMES)

_PIP_TIMEOUT_S = 900


def missing_models(directory: Path | None = None) -> list[str]:
    """The model names without a (non-empty) `.tflite` in `directory` (default `models_dir()`)."""
    directory = models_dir() if directory is None else Path(directory)
    missing = []
    for name in MODEL_NAMES:
        path = directory / f"{name}.tflite"
        if not (path.is_file() and path.stat().st_size > 0):
            missing.append(name)
    return missing


def download_models(
    directory: Path | None = None, *, log: Callable[[str], None] | None = None
) -> Path:
    """Make sure every model is in `directory` (default `models_dir()`); fetch the missing ones
    from the mediapipe wheel. Returns the directory. RendererError('models_download_failed')
    when pip or the wheel fails."""
    directory = models_dir() if directory is None else Path(directory).expanduser()
    say = log or (lambda message: None)
    missing = missing_models(directory)
    if not missing:
        say(f"MediaPipe {MEDIAPIPE_VERSION} face models are up to date in {directory}")
        return directory
    say(f"fetching MediaPipe {MEDIAPIPE_VERSION}'s face models into {directory} (once)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # The scratch folder is beside the target, so the final renames stay on one file system.
        scratch = Path(tempfile.mkdtemp(prefix=".mediapipe-download-", dir=directory.parent))
    except OSError as error:
        raise _failed(f"cannot write to {directory}: {error}") from None
    try:
        wheel = _download_wheel(scratch)
        _extract(wheel, missing, scratch, directory)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    say(f"face models installed in {directory}")
    return directory


def _download_wheel(scratch: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(scratch),
        f"mediapipe=={MEDIAPIPE_VERSION}",
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise _failed(f"`{' '.join(command[2:])}` did not finish: {error}") from None
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-6:])
        if "No module named pip" in tail:
            tail = f"this environment ({sys.executable}) has no pip; install pip into it"
        raise _failed(f"pip could not download mediapipe=={MEDIAPIPE_VERSION}: {tail}")
    wheels = sorted(scratch.glob("mediapipe-*.whl"))
    if len(wheels) != 1:
        raise _failed(f"expected one mediapipe wheel from pip, found {[w.name for w in wheels]}")
    return wheels[0]


def _extract(wheel: Path, names: list[str], scratch: Path, directory: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as archive:
            for name in names:
                part = scratch / f"{name}.tflite"
                with archive.open(f"mediapipe/modules/{WHEEL_MEMBERS[name]}") as src:
                    with part.open("wb") as out:
                        shutil.copyfileobj(src, out)  # the zip's CRC is checked on the way
                os.replace(part, directory / f"{name}.tflite")
    except (OSError, KeyError, zipfile.BadZipFile) as error:
        raise _failed(f"cannot take the models out of {wheel.name}: {error}") from None


def _failed(detail: str) -> RendererError:
    return RendererError(
        "models_download_failed",
        f"{detail}. The face models can also be put in place by hand: set AVATAR_MODELS_DIR "
        "to a folder holding " + ", ".join(f"{n}.tflite" for n in MODEL_NAMES),
    )
