"""One guided LMDM denoising step as ONNX, with the tensor names of Ditto's released
`lmdm_v0.4_hubert.onnx`:

    x (1, 80, 265) float32, cond_frame (1, 265) float32, cond (1, 80, 1103) float32,
    time_cond (1,) int64  ->  pred_noise (1, 80, 265), x_start (1, 80, 265)

Both guidance passes are inside the graph (as in the release); the sampler's arithmetic between
steps stays outside. Shapes are fixed, as released."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .diffusion import GuidedDenoiser

INPUTS = ("x", "cond_frame", "cond", "time_cond")
OUTPUTS = ("pred_noise", "x_start")
OPSET = 17


def example_inputs(denoiser: GuidedDenoiser, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(x, cond_frame, cond, time_cond) of the released shapes, on the CPU."""
    sizes = denoiser.decoder.sizes
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, sizes.seq_frames, sizes.motion_dim, generator=generator)
    cond_frame = torch.randn(1, sizes.motion_dim, generator=generator)
    cond = torch.randn(1, sizes.seq_frames, sizes.cond_dim, generator=generator)
    time_cond = torch.tensor([499], dtype=torch.long)
    return x, cond_frame, cond, time_cond


def export_step(denoiser: GuidedDenoiser, path: Path) -> Path:
    """Writes the step graph to `path` (exported on the CPU in float32) and returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = denoiser.to("cpu", torch.float32).eval()
    # The TorchScript exporter needs no onnxscript; its deprecation warning would only say so.
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example_inputs(denoiser),
            str(path),
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return path
