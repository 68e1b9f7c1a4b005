"""Loading the published Wav2Lip checkpoints unchanged, and writing random ones in their layout.

Published files (`wav2lip.pth`, `wav2lip_gan.pth`, LiveTalking's `wav2lip256.pth`) are
`torch.save({"state_dict", "optimizer", "global_step", "global_epoch"})` of a DataParallel
model, so every key starts with `module.`; some redistributions hold a bare state dict. The
size (96 or 256) follows from the keys: only the 256 variant has an eighth encoder stage.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch

from ..base import RendererError
from .model import Wav2Lip

SHOWN_KEYS = 5
"""How many offending keys an error message lists."""


class CheckpointError(RendererError):
    def __init__(self, message: str, code: str = "invalid_checkpoint") -> None:
        super().__init__(code, message)


def detect_size(keys: set[str]) -> int:
    return 256 if any(key.startswith("face_encoder_blocks.7.") for key in keys) else 96


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    more = f", ... ({len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
    return f"{shown}{more}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _read(path: Path, allow_pickle: bool) -> object:
    if not path.is_file():
        raise CheckpointError(f"wav2lip checkpoint not found: {path}", "checkpoint_not_found")
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        text = str(error)
        if "Unsupported global" in text:  # weights_only refused a class; say which
            refused = text[text.index("Unsupported global") :].split(" was not")[0]
            raise CheckpointError(
                f"{path} holds objects other than tensors and plain values ({refused}), so it "
                "was not loaded; pass allow_pickle=True only for a file you trust"
            ) from None
        detail = text.split("WeightsUnpickler error:")[-1].split("Check the documentation")[0]
        raise CheckpointError(
            f"cannot read {path} as a torch checkpoint: {' '.join(detail.split())}"
        ) from None


def extract_state_dict(raw: object, path: Path) -> dict[str, torch.Tensor]:
    """The model weights of a loaded checkpoint, `module.` prefixes stripped."""
    state = raw.get("state_dict", raw) if isinstance(raw, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{path} is not a Wav2Lip checkpoint: no state dict in it")
    weights: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path} is not a Wav2Lip checkpoint: entry {key!r} is no tensor")
        weights[key.removeprefix("module.")] = value
    return weights


def layout_problems(weights: Mapping[str, torch.Tensor], model: Wav2Lip) -> list[str]:
    """What keeps `weights` from loading strictly into `model`, one phrase per kind."""
    expected = {key: tensor.shape for key, tensor in model.state_dict().items()}
    # BatchNorm's step counters do nothing in eval mode; very old files may lack them.
    missing = sorted(
        key for key in expected if key not in weights and not key.endswith("num_batches_tracked")
    )
    unexpected = sorted(key for key in weights if key not in expected)
    wrong_shape = sorted(
        f"{key} {list(weights[key].shape)} (expected {list(shape)})"
        for key, shape in expected.items()
        if key in weights and weights[key].shape != shape
    )
    problems = []
    if missing:
        problems.append(f"{_plural(len(missing), 'missing key')}: {_listing(missing)}")
    if unexpected:
        problems.append(f"{_plural(len(unexpected), 'unexpected key')}: {_listing(unexpected)}")
    if wrong_shape:
        problems.append(f"{_plural(len(wrong_shape), 'wrong shape')}: {_listing(wrong_shape)}")
    return problems


def load_checkpoint(path: Path, *, device: str = "cpu", allow_pickle: bool = False) -> Wav2Lip:
    """A Wav2Lip model (96 or 256, from the keys) with the checkpoint's weights, in eval mode.

    Raises CheckpointError naming the file and the offending keys when the layout is wrong.
    `allow_pickle` lets torch unpickle arbitrary objects: only for files you trust.
    """
    path = Path(path)
    weights = extract_state_dict(_read(path, allow_pickle), path)
    size = detect_size(set(weights))
    model = Wav2Lip(size)
    problems = layout_problems(weights, model)
    if problems:
        raise CheckpointError(
            f"{path} does not match the Wav2Lip {size}px layout: " + "; ".join(problems)
        )
    model.load_state_dict(weights, strict=False)  # strictness checked above
    return model.to(device).eval()


def file_digest(path: Path) -> str:
    """sha256 of a file, hex (keys caches derived from a checkpoint)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _randomise(model: Wav2Lip, seed: int) -> None:
    """Random weights and non-trivial BatchNorm statistics, so that eval-mode BN matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                fan_in = module.weight[0].numel()
                bound = (1.0 / fan_in) ** 0.5
                module.weight.uniform_(-bound, bound, generator=generator)
                if module.bias is not None:
                    module.bias.uniform_(-bound, bound, generator=generator)
            elif isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                mean, var = module.running_mean, module.running_var
                tracked = module.num_batches_tracked
                # Wav2Lip's BatchNorms track running statistics (the default).
                assert mean is not None and var is not None and tracked is not None
                module.weight.copy_(1 + 0.1 * torch.randn(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
                mean.copy_(0.05 * torch.randn(n, generator=generator))
                var.copy_(0.5 + torch.rand(n, generator=generator))
                tracked.fill_(1000)


def write_random_checkpoint(
    path: Path,
    *,
    size: int = 96,
    seed: int = 0,
    data_parallel: bool = True,
    with_optimizer: bool = False,
    wrapped: bool = True,
    legacy_format: bool = True,
) -> Path:
    """Random weights in the published layout: the training script's wrapper dict (unless
    `wrapped` is False), `module.` prefixes when `data_parallel`, BatchNorm step counters, and
    Adam state when `with_optimizer` (like the released files, three times the size), in
    torch's pre-1.6 file format when `legacy_format` (the releases were saved by torch 1.1). For
    tests and benchmarks only: these weights draw noise, not faces."""
    model = Wav2Lip(size)
    _randomise(model, seed)
    prefix = "module." if data_parallel else ""
    state = {prefix + key: value for key, value in model.state_dict().items()}
    payload: Mapping[str, object] = state
    if wrapped:
        optimizer = None
        if with_optimizer:
            adam = torch.optim.Adam(model.parameters(), lr=1e-4)
            for parameter in model.parameters():
                parameter.grad = torch.zeros_like(parameter)
            adam.step()
            optimizer = adam.state_dict()
        payload = {
            "state_dict": state,
            "optimizer": optimizer,
            "global_step": 1000,
            "global_epoch": 1,
        }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy_format)
    return path
