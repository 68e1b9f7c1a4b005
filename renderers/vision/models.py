"""Where the MediaPipe models live, and one LiteRT interpreter per model per thread.

scripts/setup.sh copies the .tflite files out of the mediapipe wheel into
`$AVATAR_CACHE/models/mediapipe-0.10.14/`; `AVATAR_MODELS_DIR` points elsewhere. Nothing is
ever downloaded here: a missing file is a `RendererError("models_missing")`.
"""

from __future__ import annotations

import os
import threading
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


def model_path(name: str) -> Path:
    """Path of `<name>.tflite`; raises RendererError('models_missing') when it is absent."""
    path = models_dir() / f"{name}.tflite"
    if not path.is_file():
        raise RendererError(
            "models_missing",
            f"face model {path} is missing; run `make setup` (scripts/setup.sh fetches the "
            f"MediaPipe {MEDIAPIPE_VERSION} models), or set AVATAR_MODELS_DIR to a folder "
            "that has them",
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
