"""Loading Ditto's released LMDM weights, `ditto_pytorch/models/lmdm_v0.4_hubert.pth`, unchanged.

The file is `{'model_state_dict': <MotionDecoder state dict>}`: 249 tensors, the shared rotary
`freqs` buffer among them 11 times, all required for the strict load Ditto does. It is read
with `torch.load(weights_only=True)` onto the CPU; the network is moved to the device asked
for (CPU by default; nothing assumes CUDA), in float32 and eval mode.

Errors are RendererError codes: 'checkpoint_not_found' when the file is not there,
'invalid_checkpoint' naming the file (never a local path) and listing its missing, unexpected,
wrong-shape and non-float keys when it does not fit."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ...base import RendererError
from ...liveportrait.checkpoint import layout_problems
from .sizes import CHECKPOINT_NAME, PUBLISHED, SIZES, LMDMSizes

if TYPE_CHECKING:
    import torch

    from .network import MotionDecoder

STATE_KEY = "model_state_dict"
SEARCHED_FOLDERS = (".", "models", "ditto_pytorch/models")
"""Where, below a given directory, the file is looked for."""


class LMDMCheckpointError(RendererError):
    def __init__(self, message: str, code: str = "invalid_checkpoint") -> None:
        super().__init__(code, message)


def locate_lmdm(path: Path) -> Path:
    """The checkpoint file: `path` itself when it is a file, else `lmdm_v0.4_hubert.pth` in
    `path`, its models/ or its ditto_pytorch/models/ folder."""
    given = Path(path).expanduser()
    if given.is_file():
        return given
    if given.is_dir():
        for folder in SEARCHED_FOLDERS:
            candidate = given / folder / CHECKPOINT_NAME
            if candidate.is_file():
                return candidate
        raise LMDMCheckpointError(
            f"no {CHECKPOINT_NAME} in the Ditto checkpoint directory (looked in it, its models/ "
            "and its ditto_pytorch/models/ folders)",
            "checkpoint_not_found",
        )
    raise LMDMCheckpointError(
        f"the Ditto motion model file ({given.name or CHECKPOINT_NAME}) does not exist",
        "checkpoint_not_found",
    )


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The model state dict of an LMDM file (tensors by key), checked to be one."""
    import torch

    shown = path.name
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise LMDMCheckpointError(f"{shown} not found", "checkpoint_not_found") from None
    except Exception as error:  # UnpicklingError, RuntimeError, EOFError, ...
        if "Unsupported global" in str(error):  # weights_only refused a pickled object
            raise LMDMCheckpointError(
                f"{shown} holds Python objects besides tensors, which are not loaded (only "
                "plain weights are); re-save it as {'model_state_dict': state dict}"
            ) from None
        raise LMDMCheckpointError(
            f"{shown} is not a readable torch checkpoint: it is damaged, cut short or another "
            "kind of file; download it again"
        ) from None
    if not isinstance(raw, Mapping) or STATE_KEY not in raw:
        raise LMDMCheckpointError(
            f"{shown} has no '{STATE_KEY}' entry; Ditto's LMDM file is "
            "{'model_state_dict': state dict}"
        )
    state = raw[STATE_KEY]
    if not isinstance(state, Mapping) or not state:
        raise LMDMCheckpointError(f"{shown} holds no state dict under '{STATE_KEY}'")
    weights: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise LMDMCheckpointError(
                f"{shown} is not a state dict: entry {str(key)[:80]!r} is no tensor"
            )
        weights[key] = value
    return weights


def detect_sizes(weights: Mapping[str, torch.Tensor]) -> LMDMSizes:
    """SMALL when the input projection has SMALL's latent width (generated test weights),
    else PUBLISHED (anything else is checked and reported against the released layout)."""
    projection = weights.get("input_projection.weight")
    for sizes in SIZES.values():
        if projection is not None and projection.ndim == 2 and projection.shape[0] == sizes.latent:
            return sizes
    return PUBLISHED


def load_motion_decoder(path: Path, device: str | torch.device = "cpu") -> MotionDecoder:
    """The LMDM network with the weights of `path` (the .pth file, or a directory holding it;
    see locate_lmdm), strictly loaded, float32, eval mode, on `device`."""
    import torch

    from .network import MotionDecoder

    file = locate_lmdm(path)
    weights = read_state(file)
    sizes = detect_sizes(weights)
    with torch.device("meta"):
        skeleton = MotionDecoder(sizes)
    problems = layout_problems(weights, skeleton)
    if problems:
        raise LMDMCheckpointError(
            f"{file.name} does not match the Ditto LMDM layout: " + "; ".join(problems)
        )
    model = MotionDecoder(sizes)
    model.load_state_dict({key: value.float() for key, value in weights.items()}, strict=True)
    return model.to(device).eval()
