"""Random LMDM weights saved exactly as Ditto's `lmdm_v0.4_hubert.pth` is laid out
({'model_state_dict': state dict}, the rotary buffer under all 11 of its names), so tests and
benchmarks go through the same loader the downloaded file does. The motion they produce is
noise; speed does not depend on the values.

PyTorch's default initialisation keeps activations finite; layer norms get slightly random
affine terms so a wrong normalisation cannot hide behind an identity."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

from .checkpoint import STATE_KEY
from .network import MotionDecoder
from .sizes import CHECKPOINT_NAME, SIZES


def random_motion_decoder(
    seed: int = 0, sizes: Literal["published", "small"] = "small"
) -> MotionDecoder:
    """A MotionDecoder with seeded random weights, in eval mode on the CPU."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the layers' own default initialisation draws from here
        model = MotionDecoder(SIZES[sizes])
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.LayerNorm):
                layer.weight.copy_(1 + 0.1 * torch.randn(layer.weight.shape, generator=generator))
                layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=generator))
    return model.eval()


def checkpoint_payload(model: MotionDecoder) -> dict[str, dict[str, torch.Tensor]]:
    """What Ditto's file holds: {'model_state_dict': the network's state dict}."""
    return {STATE_KEY: model.state_dict()}


def write_random_checkpoint(
    directory: Path,
    sizes: Literal["published", "small"] = "small",
    seed: int = 0,
    model: MotionDecoder | None = None,
) -> Path:
    """Writes `directory/lmdm_v0.4_hubert.pth` (random weights, or `model`'s) and returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = model if model is not None else random_motion_decoder(seed, sizes)
    path = directory / CHECKPOINT_NAME
    partial = path.with_name(path.name + ".partial")
    torch.save(checkpoint_payload(model), partial)
    partial.replace(path)
    return path
