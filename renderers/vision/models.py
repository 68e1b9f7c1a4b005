"""Where the MediaPipe models live, and one LiteRT interpreter per model per thread.

The .tflite files are fetched once, out of the mediapipe wheel, by
`python -m avatar_runtime download-files` (download.py; `make setup` runs it) into
`$AVATAR_CACHE/models/mediapipe-0.10.14/`; `AVATAR_MODELS_DIR` points elsewhere. Nothing is
downloaded here: a missing file is a `RendererError("models_missing")` naming that command.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..base import RendererError
from ..cache import cache_dir

MEDIAPIPE_VERSION = "0.10.14"

FACE_DETECTION_SHORT = "face_detection_short_range"
FACE_DETECTION_FULL = "face_detection_full_range_sparse"
FACE_LANDMARK = "face_landmark"
IRIS_LANDMARK = "iris_landmark"
SELFIE_SEGMENTATION = "selfie_segmentation"

MODEL_NAMES = (
    FACE_DETECTION_SHORT,
    FACE_DETECTION_FULL,
    FACE_LANDMARK,
    IRIS_LANDMARK,
    SELFIE_SEGMENTATION,
)


def models_dir() -> Path:
    """`AVATAR_MODELS_DIR`, else `$AVATAR_CACHE/models/mediapipe-<version>`."""
    explicit = os.environ.get("AVATAR_MODELS_DIR")
    if explicit:
        return Path(explicit).expanduser()
    return cache_dir() / "models" / f"mediapipe-{MEDIAPIPE_VERSION}"


def model_files() -> dict[str, object]:
    """The MediaPipe models, found or missing, as Renderer.checkpoints reports files."""
    folder = models_dir()
    found = {name: (folder / f"{name}.tflite").is_file() for name in MODEL_NAMES}
    return {
        "setting": "AVATAR_MODELS_DIR",
        "path": os.environ.get("AVATAR_MODELS_DIR") or None,
        "complete": all(found.values()),
        "files": [{"name": f"{name}.tflite", "found": there} for name, there in found.items()],
    }


def model_path(name: str) -> Path:
    """Path of `<name>.tflite`; raises RendererError('models_missing') when it is absent."""
    path = models_dir() / f"{name}.tflite"
    if not path.is_file():
        raise RendererError(
            "models_missing",
            f"face model {path} is missing; fetch MediaPipe {MEDIAPIPE_VERSION}'s face models "
            "once with `python -m avatar_runtime download-files` (in a checkout `make setup` "
            "does it), or set AVATAR_MODELS_DIR to a folder that has them",
        )
    return path


class Model:
    """A loaded .tflite model with one float32 input. Not thread-safe: use `model(name)`,
    which hands each thread its own."""

    def __init__(self, name: str) -> None:
        # Imported here so that importing renderers.vision stays cheap.
        from ai_edge_litert.interpreter import Interpreter

        path = model_path(name)
        self.name = name
        # The first allocate_tensors() of a process applies the XNNPACK delegate, and LiteRT
        # announces that on stderr: see _litert_info_silenced.
        with _litert_info_silenced():
            self._interpreter = Interpreter(model_path=str(path), num_threads=1)
            self._interpreter.allocate_tensors()
        (inp,) = self._interpreter.get_input_details()
        self._input_index = inp["index"]
        self.input_shape = tuple(int(d) for d in inp["shape"])
        self._outputs = self._interpreter.get_output_details()
        self.output_shapes = [tuple(int(d) for d in o["shape"]) for o in self._outputs]

    def __call__(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Run on one input (with or without the batch axis); outputs in the model's order."""
        tensor = np.ascontiguousarray(tensor, dtype=np.float32).reshape(self.input_shape)
        self._interpreter.set_tensor(self._input_index, tensor)
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(o["index"]) for o in self._outputs]


# --- LiteRT's INFO lines ------------------------------------------------------------------
# LiteRT's native logger writes "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." (and
# any other INFO) straight to file descriptor 2, where it lands in the middle of a command's
# output. Its minimum severity can be set only from C++ (tflite::LoggerOptions::
# SetMinimumLogSeverity): ai-edge-litert exposes no such setting, and TF_CPP_MIN_LOG_LEVEL does
# not apply to this logger. So while an interpreter is created and allocated, fd 2 points at a
# temporary file; afterwards it is restored and everything written there in the meantime except
# LiteRT's INFO lines (its warnings and errors, other threads' output) goes on to the real
# stderr. fd 2 belongs to the whole process, hence one lock for every redirection.
_LITERT_INFO_PREFIX = b"INFO: "
_stderr_lock = threading.Lock()


@contextmanager
def _litert_info_silenced() -> Iterator[None]:
    with _stderr_lock:
        _flush_stderr()  # what Python has buffered belongs before the redirection
        try:
            capture = tempfile.TemporaryFile()
        except OSError:  # nowhere to capture to: let the line through rather than fail
            capture = None
        if capture is None:
            yield
            return
        with capture:
            try:
                saved = os.dup(2)
            except OSError:  # no fd 2 at all: nothing to protect
                saved = None
            if saved is None:
                yield
                return
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                _flush_stderr()
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                _write_fd2(
                    b"".join(
                        line
                        for line in capture.read().splitlines(keepends=True)
                        if not line.startswith(_LITERT_INFO_PREFIX)
                    )
                )


def _flush_stderr() -> None:
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
    except (OSError, ValueError):  # closed or broken: nothing buffered can be saved anyway
        pass


def _write_fd2(data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(2, view) :]
    except OSError:
        pass


_local = threading.local()


def model(name: str) -> Model:
    """This thread's interpreter for `name` (created on first use, then reused)."""
    cache: dict[tuple[Path, str], Model] | None = getattr(_local, "models", None)
    if cache is None:
        cache = _local.models = {}
    key = (models_dir(), name)
    loaded = cache.get(key)
    if loaded is None:
        loaded = cache[key] = Model(name)
    return loaded
