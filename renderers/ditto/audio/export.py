"""The project's own HuBERT ONNX, for users who have `facebook/hubert-large-ls960-ft` weights
(a local Hugging Face folder: config.json and model.safetensors or pytorch_model.bin) instead
of Ditto's published `hubert_streaming_fix_kv.onnx`.

Ditto's maintainers name that checkpoint (commit ece5fabbf034c1073acae96d5401b25be96709d8,
ditto-talkinghead#80) as the origin of their ONNX, whose input is called `input_values`
like HubertModel's argument. What the ONNX outputs is not documented: which hidden layer,
whether the audio is normalised, and what "streaming_fix_kv" changes in the attention are
unknown. Ditto's Python code feeds librosa's raw 16 kHz float audio, one 6480-sample window
at a time, and reads 1024 features per 20 ms frame. So by default the export is HubertModel's
`last_hidden_state` (the output of the final encoder layer norm) on the raw window, with no
normalisation; `layer` picks `hidden_states[layer]` instead (0: the projected conv features,
24: the last layer), `normalize=True` adds Wav2Vec2FeatureExtractor's zero-mean unit-variance
step (per window) inside the graph. Features from this export are NOT guaranteed to match the
published file; Ditto's audio-to-motion model was trained on the published one.

Needs torch and transformers (the `ditto` extra: `pip install avatar-agents[ditto]`); both
are imported when exporting, never at import."""

from __future__ import annotations

import contextlib
import importlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ...model_settings import installed
from .framing import DittoFraming
from .hubert import INPUT_NAME, OUTPUT_NAME, DittoAudioError

if TYPE_CHECKING:
    import torch

HF_MODEL_ID = "facebook/hubert-large-ls960-ft"
HF_COMMIT = "ece5fabbf034c1073acae96d5401b25be96709d8"
OPSET = 17
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _require(*modules: str) -> None:
    missing = [m for m in modules if not installed(m)]
    if missing:
        raise DittoAudioError(
            f"exporting HuBERT from {HF_MODEL_ID} weights needs {' and '.join(missing)}, not "
            f"installed: pip install {' '.join(missing)}",
            "backend_unavailable",
        )


def load_hubert_transformers(model_dir: Path | str) -> torch.nn.Module:
    """HubertModel from a local Hugging Face folder (no download), CPU, eval mode.

    Raises DittoAudioError: 'backend_unavailable' without torch or transformers,
    'checkpoint_not_found' for a folder without config.json or weights, 'invalid_checkpoint'
    for one transformers cannot load."""
    _require("torch", "transformers")
    folder = Path(model_dir).expanduser()
    if not (folder / "config.json").is_file():
        raise DittoAudioError(
            f"no {HF_MODEL_ID} weights: config.json not found in the given folder",
            "checkpoint_not_found",
        )
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise DittoAudioError(
            f"no {HF_MODEL_ID} weights: neither {' nor '.join(WEIGHT_FILES)} found in the "
            "given folder",
            "checkpoint_not_found",
        )
    transformers = importlib.import_module("transformers")
    try:
        model = transformers.HubertModel.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:  # transformers raises many kinds for a bad folder
        raise DittoAudioError(
            f"the {HF_MODEL_ID} weights could not be loaded by transformers", "invalid_checkpoint"
        ) from error
    module: torch.nn.Module = model.eval()
    return module


def hubert_encoder_module(
    hubert: torch.nn.Module, *, layer: int | None = None, normalize: bool = False
) -> torch.nn.Module:
    """A module mapping `input_values` (1, N) to `encoding_out` (T, dim): HubertModel's
    last hidden state (or `hidden_states[layer]`), batch dropped, optionally on the
    per-window normalised input."""
    import torch

    class _Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hubert = hubert

        def forward(self, input_values: torch.Tensor) -> torch.Tensor:
            if normalize:
                mean = input_values.mean(dim=-1, keepdim=True)
                var = input_values.var(dim=-1, keepdim=True, unbiased=False)
                input_values = (input_values - mean) / torch.sqrt(var + 1e-7)
            if layer is None:
                hidden = self.hubert(input_values).last_hidden_state
            else:
                hidden = self.hubert(input_values, output_hidden_states=True).hidden_states[layer]
            return hidden[0]

    return _Encoder().eval()


def export_encoder_onnx(module: torch.nn.Module, path: Path | str, *, opset: int = OPSET) -> Path:
    """Export `module` ((1, N) -> (T, dim)) with Ditto's I/O names, N and T dynamic, traced on
    one Ditto window. Written atomically (a temporary file renamed into place)."""
    _require("torch", "onnx")
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, DittoFraming().window_samples)
    module = module.to("cpu", torch.float32).eval()
    handle, temporary = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(handle)
    try:
        # the TorchScript exporter needs no onnxscript; its deprecation warning would only say so
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                temporary,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {1: "samples"}, OUTPUT_NAME: {0: "frames"}},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return path


def export_hubert_onnx(
    model_dir: Path | str,
    path: Path | str,
    *,
    layer: int | None = None,
    normalize: bool = False,
    opset: int = OPSET,
) -> Path:
    """Export HuBERT from local `facebook/hubert-large-ls960-ft` weights to `path` as an ONNX
    file with Ditto's I/O (`input_values` -> `encoding_out`). Name it
    `hubert_from_transformers.onnx` in AVATAR_DITTO_DIR/ditto_pytorch/aux_models/ for
    `locate_hubert` to find it. See the module doc for what may differ from Ditto's file."""
    hubert = load_hubert_transformers(model_dir)
    return export_encoder_onnx(
        hubert_encoder_module(hubert, layer=layer, normalize=normalize), path, opset=opset
    )
