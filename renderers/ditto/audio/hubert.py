"""Ditto's HuBERT as an ONNX Runtime session: finding the file and running one window.

The published model (Ditto's PyTorch bundle) is

    <AVATAR_DITTO_DIR>/ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx

with AVATAR_DITTO_DIR laid out as Ditto's `checkpoints/` folder (its `ditto_pytorch/` or
`aux_models/` folder, or the file's own folder, are accepted too). The project's export from
`facebook/hubert-large-ls960-ft` weights (export.py) is found under the name
`hubert_from_transformers.onnx` in the same places, when the published file is not there.

I/O, as the official wrapper (core/aux_models/modules/hubert_stream.py) uses it:
`input_values` (1, N) float32, 16 kHz audio as librosa loads it (no normalisation in
Ditto's code); output `encoding_out` (T, 1024), T = floor((N - 400) / 320) + 1 (20 for
Ditto's 6480-sample window). Ditto slices the output's first axis as time, so it is 2-D; a
(1, T, 1024) output is accepted too.

onnxruntime is imported when a session is made, never at import."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...base import RendererError
from ...model_settings import installed
from .framing import FEATURE_DIM

DIR_ENV = "AVATAR_DITTO_DIR"
HUBERT_FILE = "hubert_streaming_fix_kv.onnx"
"""Ditto's published file name."""
EXPORT_FILE = "hubert_from_transformers.onnx"
"""The project's own export (export.py), used when the published file is absent."""
HUBERT_RELATIVE = f"ditto_pytorch/aux_models/{HUBERT_FILE}"
"""Where the published file goes, relative to AVATAR_DITTO_DIR."""
SEARCH_FOLDERS = ("ditto_pytorch/aux_models", "aux_models", ".")
"""Folders of AVATAR_DITTO_DIR searched, in order (Ditto's checkpoints/, its ditto_pytorch/,
or aux_models/ itself)."""
INPUT_NAME = "input_values"
OUTPUT_NAME = "encoding_out"


class DittoAudioError(RendererError):
    """'checkpoint_not_found', 'invalid_checkpoint' or 'backend_unavailable'."""

    def __init__(self, message: str, code: str = "invalid_checkpoint") -> None:
        super().__init__(code, message)


def ditto_dir(environ: dict[str, str] | None = None) -> Path | None:
    """AVATAR_DITTO_DIR, or None when unset or empty."""
    value = (os.environ if environ is None else environ).get(DIR_ENV, "").strip()
    return Path(value).expanduser() if value else None


def locate_hubert(directory: Path | str | None = None) -> Path:
    """The HuBERT ONNX file in `directory` (default: AVATAR_DITTO_DIR): Ditto's published
    `hubert_streaming_fix_kv.onnx` first, else the project's export.

    Raises DittoAudioError('checkpoint_not_found') naming the file and where it goes; the
    message names no local path."""
    given = ditto_dir() if directory is None else Path(directory).expanduser()
    where = (
        f"put Ditto's {HUBERT_FILE} (from the ditto_pytorch bundle) at "
        f"{DIR_ENV}/{HUBERT_RELATIVE}, or export one from facebook/hubert-large-ls960-ft "
        f"weights as {DIR_ENV}/{SEARCH_FOLDERS[0]}/{EXPORT_FILE}"
    )
    if given is None:
        raise DittoAudioError(
            f"Ditto's HuBERT model {HUBERT_FILE} not found: {DIR_ENV} is not set; {where}",
            "checkpoint_not_found",
        )
    if not given.is_dir():
        raise DittoAudioError(
            f"Ditto's HuBERT model {HUBERT_FILE} not found: the Ditto checkpoint directory "
            f"({DIR_ENV}) does not exist or is not a directory; {where}",
            "checkpoint_not_found",
        )
    for name in (HUBERT_FILE, EXPORT_FILE):
        for folder in SEARCH_FOLDERS:
            path = given / folder / name
            if path.is_file():
                return path
    raise DittoAudioError(
        f"Ditto's HuBERT model {HUBERT_FILE} not found in {DIR_ENV}; {where}",
        "checkpoint_not_found",
    )


class HubertOnnx:
    """HuBERT in ONNX Runtime: `encoder(window)` -> (T, dim) float32, usable as the
    `Encoder` of framing.py and `AudioFeatureStream`.

    providers: ONNX Runtime's, default CPU; ("CUDAExecutionProvider", "CPUExecutionProvider")
    for a GPU with onnxruntime-gpu. threads: intra-op threads, 0 = ONNX Runtime's choice."""

    def __init__(
        self,
        path: Path | str,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int = 0,
    ) -> None:
        path = Path(path)
        if not installed("onnxruntime"):
            raise DittoAudioError(
                "Ditto's HuBERT needs onnxruntime (or onnxruntime-gpu), not installed",
                "backend_unavailable",
            )
        if not path.is_file():
            raise DittoAudioError(
                f"Ditto's HuBERT model {path.name} not found; put it at "
                f"{DIR_ENV}/{HUBERT_RELATIVE}",
                "checkpoint_not_found",
            )
        import onnxruntime as ort

        available = set(ort.get_available_providers())
        missing = [p for p in providers if p not in available]
        if "CUDAExecutionProvider" in missing:
            raise DittoAudioError(
                "ONNX Runtime on CUDA needs onnxruntime-gpu (CUDAExecutionProvider missing)",
                "backend_unavailable",
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(path),
                sess_options=options,
                providers=[p for p in providers if p in available] or ["CPUExecutionProvider"],
            )
        except Exception as error:  # onnxruntime raises its own classes for a bad file
            raise DittoAudioError(
                f"Ditto's HuBERT model {path.name} could not be loaded by ONNX Runtime "
                "(not an ONNX file, or a damaged one)",
                "invalid_checkpoint",
            ) from error
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT_NAME] or OUTPUT_NAME not in outputs:
            raise DittoAudioError(
                f"{path.name} is not Ditto's HuBERT: expected input {INPUT_NAME!r} and output "
                f"{OUTPUT_NAME!r}, found inputs {inputs} and outputs {outputs}",
                "invalid_checkpoint",
            )
        self.path = path
        self.providers = tuple(self.session.get_providers())
        self.device = "cuda" if "CUDAExecutionProvider" in self.providers else "cpu"
        width = self.session.get_outputs()[outputs.index(OUTPUT_NAME)].shape[-1]
        self.feature_dim = width if isinstance(width, int) else FEATURE_DIM

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """One window of 16 kHz float32 audio (any shape holding N samples) -> (T, dim)."""
        values = np.ascontiguousarray(audio, dtype=np.float32).reshape(1, -1)
        (encoding,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: values})
        encoding = np.asarray(encoding, dtype=np.float32)
        if encoding.ndim == 3 and encoding.shape[0] == 1:
            encoding = encoding[0]
        return encoding


def load_hubert(
    directory: Path | str | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    threads: int = 0,
) -> HubertOnnx:
    """`HubertOnnx` over the file `locate_hubert(directory)` finds."""
    return HubertOnnx(locate_hubert(directory), providers=providers, threads=threads)
