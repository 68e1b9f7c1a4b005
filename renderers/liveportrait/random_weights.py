"""Random weights saved in exactly the published file layouts (names, nesting, the DDP
`module.` prefixes of the stitching file, spectral-norm triples, BatchNorm counters), so tests
and benchmarks go through the same loader a downloaded checkpoint does. These draw noise, not
faces; speed does not depend on the values.

Initialisation keeps every activation finite and unsaturated: PyTorch's default fan-in scaled
convolutions, BatchNorm statistics of mean 0 and variance 1 (with slightly random affine
terms), and spectral-norm vectors set by power iteration so that sigma is the weight's true
largest singular value (a random u, v pair can make sigma ~0 and the decoder explode)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from .checkpoint import LAYOUT_FILES, RETARGETING_KEYS
from .networks.appearance import AppearanceFeatureExtractor
from .networks.blocks import SpectralConv2d
from .networks.motion import ChannelsFirstLayerNorm, GlobalResponseNorm, MotionExtractor
from .networks.sizes import SIZES
from .networks.spade import SPADEDecoder
from .networks.stitching import eye_mlp, lip_mlp, stitching_mlp
from .networks.warping import WarpingNetwork

POWER_ITERATIONS = 50


def _power_iteration(conv: SpectralConv2d, generator: torch.Generator) -> None:
    matrix = conv.weight_orig.detach().flatten(1)
    v = torch.randn(matrix.shape[1], generator=generator)
    for _ in range(POWER_ITERATIONS):
        u = nn.functional.normalize(matrix @ v, dim=0, eps=1e-12)
        v = nn.functional.normalize(matrix.t() @ u, dim=0, eps=1e-12)
    u = nn.functional.normalize(matrix @ v, dim=0, eps=1e-12)
    conv.weight_u.copy_(u)
    conv.weight_v.copy_(v)


def _randomise(module: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial norms and GRN terms (their defaults are identities that would hide a wrong
    implementation), proper spectral-norm vectors, BatchNorm statistics 0 and 1."""

    def noise(like: torch.Tensor, scale: float) -> torch.Tensor:
        return scale * torch.randn(like.shape, generator=generator)

    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.weight.copy_(1 + noise(layer.weight, 0.1))
                layer.bias.copy_(noise(layer.bias, 0.1))
                assert layer.running_mean is not None and layer.running_var is not None
                layer.running_mean.zero_()
                layer.running_var.fill_(1.0)
            elif isinstance(layer, (nn.LayerNorm, ChannelsFirstLayerNorm)):
                layer.weight.copy_(1 + noise(layer.weight, 0.1))
                layer.bias.copy_(noise(layer.bias, 0.1))
            elif isinstance(layer, GlobalResponseNorm):
                layer.gamma.copy_(noise(layer.gamma, 0.1))
                layer.beta.copy_(noise(layer.beta, 0.1))
            elif isinstance(layer, SpectralConv2d):
                _power_iteration(layer, generator)


def random_networks(
    seed: int = 0, sizes: Literal["published", "small"] = "published"
) -> dict[str, nn.Module]:
    """appearance, motion, warp, decoder, stitching, lip, eye with random weights."""
    chosen = SIZES[sizes]
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the layers' own default initialisation draws from here
        networks: dict[str, nn.Module] = {
            "appearance": AppearanceFeatureExtractor(chosen),
            "motion": MotionExtractor(chosen),
            "warp": WarpingNetwork(chosen),
            "decoder": SPADEDecoder(chosen),
            "stitching": stitching_mlp(),
            "lip": lip_mlp(),
            "eye": eye_mlp(),
        }
    for network in networks.values():
        _randomise(network, generator)
        network.eval()
    return networks


def checkpoint_payloads(
    layout: Literal["liveportrait", "ditto"],
    seed: int = 0,
    *,
    sizes: Literal["published", "small"] = "published",
    networks: Mapping[str, nn.Module] | None = None,
) -> dict[str, object]:
    """What each file of `layout` holds, by its path relative to the layout's folder: the
    objects `torch.save` writes (state dicts, and the stitching file's dict of three).
    `networks` (from random_networks) saves drawing them again for a second layout."""
    if layout not in LAYOUT_FILES:
        raise ValueError(f"unknown layout {layout!r}; use one of {sorted(LAYOUT_FILES)}")
    if networks is None:
        networks = random_networks(seed, sizes)
    names = LAYOUT_FILES[layout]
    payloads: dict[str, object] = {
        names[network]: networks[network].state_dict()
        for network in ("appearance", "motion", "warp", "decoder")
    }
    # each MLP was trained wrapped in DistributedDataParallel: keys start with `module.`
    payloads[names["stitching"]] = {
        RETARGETING_KEYS[part]: _prefixed(networks[part].state_dict(), "module.")
        for part in ("stitching", "lip", "eye")
    }
    return payloads


def _prefixed(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in state.items()}


def write_random_checkpoints(
    directory: Path,
    layout: Literal["liveportrait", "ditto"],
    seed: int = 0,
    *,
    sizes: Literal["published", "small"] = "published",
    networks: Mapping[str, nn.Module] | None = None,
) -> Path:
    """Write a random checkpoint set in `layout` into `directory` (the layout's own folder:
    LivePortrait's `liveportrait/`, Ditto's `models/`) and return `directory`.

    `sizes="small"` writes the same files and keys with narrow layers (networks.sizes.SMALL,
    about 1 MB instead of 520 MB, milliseconds per frame on a CPU); the loader recognises it."""
    directory = Path(directory)
    payloads = checkpoint_payloads(layout, seed, sizes=sizes, networks=networks)
    for relative, payload in payloads.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        torch.save(payload, partial)
        os.replace(partial, path)
    return directory
