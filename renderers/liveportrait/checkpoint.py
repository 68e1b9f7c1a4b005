"""Finding and loading the published LivePortrait weights, from either of the two layouts they
are distributed in:

    LivePortrait   pretrained_weights/liveportrait/
                     base_models/appearance_feature_extractor.pth   F
                     base_models/motion_extractor.pth               M
                     base_models/warping_module.pth                 W
                     base_models/spade_generator.pth                G
                     retargeting_models/stitching_retargeting_module.pth
    Ditto          ditto_pytorch/models/
                     appearance_extractor.pth, motion_extractor.pth, warp_network.pth,
                     decoder.pth, stitch_network.pth

The base files are plain state dicts (the same keys in both layouts). The stitching file is a
dict {retarget_shoulder, retarget_mouth, retarget_eye} of state dicts whose keys carry a DDP
`module.` prefix; Ditto only ever reads retarget_shoulder, so the lip and eye MLPs are loaded
when present and reported absent otherwise. A leading `module.` is stripped from every key,
and nothing depends on torch's `_metadata` (the files exist saved with and without it).

Locating needs no torch (settings and health checks use it); loading imports torch. Errors
name files relative to the checkpoint directory, never a local path or a class."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base import RendererError

if TYPE_CHECKING:
    import torch

    from .networks.appearance import AppearanceFeatureExtractor
    from .networks.motion import MotionExtractor
    from .networks.sizes import NetworkSizes
    from .networks.spade import SPADEDecoder
    from .networks.stitching import KeypointMLP
    from .networks.warping import WarpingNetwork

NETWORKS = ("appearance", "motion", "warp", "decoder", "stitching")
LAYOUT_FILES: dict[str, dict[str, str]] = {
    "liveportrait": {
        "appearance": "base_models/appearance_feature_extractor.pth",
        "motion": "base_models/motion_extractor.pth",
        "warp": "base_models/warping_module.pth",
        "decoder": "base_models/spade_generator.pth",
        "stitching": "retargeting_models/stitching_retargeting_module.pth",
    },
    "ditto": {
        "appearance": "appearance_extractor.pth",
        "motion": "motion_extractor.pth",
        "warp": "warp_network.pth",
        "decoder": "decoder.pth",
        "stitching": "stitch_network.pth",
    },
}
LAYOUT_NAMES = {"liveportrait": "LivePortrait", "ditto": "Ditto"}
PARENT_FOLDERS = {"liveportrait": "liveportrait", "ditto": "models"}
"""The folder a layout's files sit in inside the directory one level up (LivePortrait's
`pretrained_weights/`, Ditto's `ditto_pytorch/`), which is accepted too."""
RETARGETING_KEYS = {
    "stitching": "retarget_shoulder",
    "lip": "retarget_mouth",
    "eye": "retarget_eye",
}
NETWORK_NAMES = {
    "appearance": "appearance feature extractor",
    "motion": "motion extractor",
    "warp": "warping module",
    "decoder": "SPADE decoder",
    "stitching": "stitching network",
    "lip": "lip retargeting network",
    "eye": "eye retargeting network",
}
SHOWN_KEYS = 4
"""How many offending keys an error message lists of each kind."""


class CheckpointError(RendererError):
    def __init__(self, message: str, code: str = "invalid_checkpoint") -> None:
        super().__init__(code, message)


@dataclass(frozen=True)
class CheckpointFiles:
    """The five files of one checkpoint set, found on disk (not yet read)."""

    layout: str
    """'liveportrait' or 'ditto'."""
    root: Path
    """The folder the layout's names are relative to."""
    given: Path
    """The directory the user named (root or its parent); messages name files from here."""

    def path(self, network: str) -> Path:
        return self.root / LAYOUT_FILES[self.layout][network]

    def shown(self, network: str) -> str:
        """The file as a person finds it from the configured directory."""
        return _shown(self.path(network), self.given)

    def digest(self) -> str:
        """sha256 over the five files' names and contents: the key of anything derived from
        them (exported ONNX, TensorRT engines). Memoised per file size and mtime."""
        stamp = tuple((network, *_stat(self.path(network))) for network in NETWORKS)
        memo = _DIGESTS.get(self.root.resolve())
        if memo is not None and memo[0] == stamp:
            return memo[1]
        digest = hashlib.sha256()
        for network in NETWORKS:
            digest.update(f"{network}\0".encode())
            with self.path(network).open("rb") as handle:
                while block := handle.read(1 << 22):
                    digest.update(block)
        _DIGESTS[self.root.resolve()] = (stamp, digest.hexdigest())
        return digest.hexdigest()


_DIGESTS: dict[Path, tuple[tuple[tuple[Any, ...], ...], str]] = {}


def _stat(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_size, status.st_mtime_ns


def _shown(path: Path, given: Path) -> str:
    try:
        return path.relative_to(given).as_posix()
    except ValueError:
        return path.name


def locate(directory: Path) -> CheckpointFiles:
    """The checkpoint set in `directory`: a layout's own folder or the folder above it.

    Raises CheckpointError('checkpoint_not_found') naming what was looked for (or, when one
    layout is partly there, which of its files are missing)."""
    given = Path(directory).expanduser()
    if not given.is_dir():
        raise CheckpointError(
            "the LivePortrait checkpoint directory (AVATAR_LIVEPORTRAIT_DIR) does not exist or "
            "is not a directory",
            "checkpoint_not_found",
        )
    best: tuple[int, CheckpointFiles] | None = None
    for layout in LAYOUT_FILES:
        for root in (given, given / PARENT_FOLDERS[layout]):
            files = CheckpointFiles(layout, root, given)
            present = sum(files.path(network).is_file() for network in NETWORKS)
            if present == len(NETWORKS):
                return files
            if present and (best is None or present > best[0]):
                best = (present, files)
    if best is not None:
        files = best[1]
        missing = [files.shown(n) for n in NETWORKS if not files.path(n).is_file()]
        raise CheckpointError(
            f"the {LAYOUT_NAMES[files.layout]} checkpoint set in AVATAR_LIVEPORTRAIT_DIR is "
            f"incomplete: {', '.join(missing)} not found",
            "checkpoint_not_found",
        )
    raise CheckpointError(
        "no LivePortrait checkpoints in AVATAR_LIVEPORTRAIT_DIR: looked for LivePortrait's "
        + ", ".join(LAYOUT_FILES["liveportrait"].values())
        + " (in the directory or its liveportrait/ folder) and for Ditto's "
        + ", ".join(LAYOUT_FILES["ditto"].values())
        + " (in the directory or its models/ folder)",
        "checkpoint_not_found",
    )


def inventory(directory: Path | None) -> dict[str, object]:
    """What `directory` holds of a checkpoint set, for reports (GET /api/v1/models): the layout
    most of its files match and each file of it, found or missing, named from the directory.
    When none is there (or no directory is given), both layouts' files are listed, missing.
    Nothing is read."""
    given = Path(directory).expanduser() if directory is not None else None
    best: tuple[int, CheckpointFiles] | None = None
    if given is not None and given.is_dir():
        for layout in LAYOUT_FILES:
            for root in (given, given / PARENT_FOLDERS[layout]):
                files = CheckpointFiles(layout, root, given)
                present = sum(files.path(network).is_file() for network in NETWORKS)
                if present and (best is None or present > best[0]):
                    best = (present, files)
    if best is not None:
        listed = [best[1]]
    else:
        base = given or Path()
        listed = [CheckpointFiles(layout, base, base) for layout in LAYOUT_FILES]
    return {
        "layout": best[1].layout if best is not None else None,
        "complete": best is not None and best[0] == len(NETWORKS),
        "files": [
            {
                "name": files.shown(network),
                "layout": files.layout,
                "found": best is not None and files.path(network).is_file(),
            }
            for files in listed
            for network in NETWORKS
        ],
    }


# --- reading --------------------------------------------------------------------------------


def _read(files: CheckpointFiles, network: str) -> object:
    import torch

    path = files.path(network)
    if not path.is_file():
        raise CheckpointError(f"{files.shown(network)} not found", "checkpoint_not_found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        if "Unsupported global" in str(error):  # weights_only refused a pickled object
            raise CheckpointError(
                f"{files.shown(network)} holds Python objects besides tensors, which are not "
                "loaded (only plain weights are); re-save it as a plain state dict"
            ) from None
        raise CheckpointError(
            f"{files.shown(network)} is not a readable torch checkpoint: it is damaged, cut "
            "short or another kind of file; download it again"
        ) from None


def _weights(raw: object, where: str) -> dict[str, torch.Tensor]:
    """A state dict's tensors by key, a leading `module.` stripped."""
    import torch

    if not isinstance(raw, Mapping) or not raw:
        raise CheckpointError(f"{where} holds no state dict (a mapping of names to tensors)")
    weights: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{where} is not a state dict: entry {str(key)[:80]!r} is no tensor"
            )
        weights[key.removeprefix("module.")] = value
    return weights


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f", ... ({len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else "")


def _count(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def layout_problems(weights: Mapping[str, torch.Tensor], module: torch.nn.Module) -> list[str]:
    """What keeps `weights` from loading strictly into `module`, one phrase per kind."""
    expected = {key: tensor.shape for key, tensor in module.state_dict().items()}
    # BatchNorm's step counters do nothing at inference; a file without them still loads.
    missing = sorted(
        key for key in expected if key not in weights and not key.endswith("num_batches_tracked")
    )
    unexpected = sorted(key for key in weights if key not in expected)
    wrong = sorted(
        f"{key} {list(weights[key].shape)} (expected {list(shape)})"
        for key, shape in expected.items()
        if key in weights and weights[key].shape != shape
    )
    not_float = sorted(
        key
        for key, tensor in weights.items()
        if key in expected
        and not key.endswith("num_batches_tracked")
        and not tensor.is_floating_point()
    )
    problems = []
    if missing:
        problems.append(f"{_count(len(missing), 'missing key')}: {_listing(missing)}")
    if unexpected:
        problems.append(f"{_count(len(unexpected), 'unexpected key')}: {_listing(unexpected)}")
    if wrong:
        problems.append(f"{_count(len(wrong), 'wrong shape')}: {_listing(wrong)}")
    if not_float:
        problems.append(f"{_count(len(not_float), 'non-float tensor')}: {_listing(not_float)}")
    return problems


def _load_into(
    module: torch.nn.Module, weights: Mapping[str, torch.Tensor], where: str, what: str
) -> None:
    problems = layout_problems(weights, module)
    if problems:
        raise CheckpointError(f"{where} does not match the {what} layout: " + "; ".join(problems))
    module.load_state_dict(dict(weights), strict=True)
    module.eval()


# --- loading --------------------------------------------------------------------------------


@dataclass
class LoadedNetworks:
    """The five networks with their weights, on the CPU in float32, in eval mode."""

    files: CheckpointFiles
    sizes: NetworkSizes
    appearance: AppearanceFeatureExtractor
    motion: MotionExtractor
    warp: WarpingNetwork
    decoder: SPADEDecoder
    stitching: KeypointMLP
    lip: KeypointMLP | None
    """None when the stitching file has no retarget_mouth (Ditto's may not)."""
    eye: KeypointMLP | None
    """None when the stitching file has no retarget_eye."""

    @property
    def has_lip_retargeting(self) -> bool:
        return self.lip is not None

    @property
    def has_eye_retargeting(self) -> bool:
        return self.eye is not None


def detect_sizes(appearance: Mapping[str, torch.Tensor]) -> NetworkSizes:
    """PUBLISHED, or SMALL when F's first conv is SMALL's width (generated test weights)."""
    from .networks.sizes import PUBLISHED, SIZES

    first = appearance.get("first.conv.weight")
    for sizes in SIZES.values():
        if first is not None and first.shape[0] == sizes.appearance_expansion:
            return sizes
    return PUBLISHED  # anything else is checked (and reported) against the released layout


def load_networks(source: CheckpointFiles | Path) -> LoadedNetworks:
    """Every network of a checkpoint set, strictly loaded.

    Raises CheckpointError: 'checkpoint_not_found' for a missing file, 'invalid_checkpoint'
    naming the file and its missing, unexpected and wrong-shape keys for a wrong one."""
    from .networks.appearance import AppearanceFeatureExtractor
    from .networks.motion import MotionExtractor
    from .networks.spade import SPADEDecoder
    from .networks.stitching import eye_mlp, lip_mlp, stitching_mlp
    from .networks.warping import WarpingNetwork

    files = source if isinstance(source, CheckpointFiles) else locate(Path(source))
    name = LAYOUT_NAMES[files.layout]
    base: dict[str, dict[str, torch.Tensor]] = {}
    for network in ("appearance", "motion", "warp", "decoder"):
        base[network] = _weights(_read(files, network), files.shown(network))
    sizes = detect_sizes(base["appearance"])
    appearance = AppearanceFeatureExtractor(sizes)
    motion = MotionExtractor(sizes)
    warp = WarpingNetwork(sizes)
    decoder = SPADEDecoder(sizes)
    modules: dict[str, torch.nn.Module] = {
        "appearance": appearance,
        "motion": motion,
        "warp": warp,
        "decoder": decoder,
    }
    for network, module in modules.items():
        what = f"{name} {NETWORK_NAMES[network]}"
        _load_into(module, base[network], files.shown(network), what)

    raw = _read(files, "stitching")
    where = files.shown("stitching")
    if not isinstance(raw, Mapping) or RETARGETING_KEYS["stitching"] not in raw:
        raise CheckpointError(
            f"{where} has no 'retarget_shoulder' entry (the stitching network's weights); "
            "it should be a dict of retarget_shoulder, retarget_mouth and retarget_eye"
        )
    mlps: dict[str, KeypointMLP | None] = {}
    for part, make in (("stitching", stitching_mlp), ("lip", lip_mlp), ("eye", eye_mlp)):
        entry = raw.get(RETARGETING_KEYS[part])
        if entry is None:
            mlps[part] = None
            continue
        label = f"{where} [{RETARGETING_KEYS[part]}]"
        mlp = make()
        _load_into(mlp, _weights(entry, label), label, f"{name} {NETWORK_NAMES[part]}")
        mlps[part] = mlp
    stitching = mlps["stitching"]
    assert stitching is not None  # its key was checked above
    return LoadedNetworks(
        files=files,
        sizes=sizes,
        appearance=appearance,
        motion=motion,
        warp=warp,
        decoder=decoder,
        stitching=stitching,
        lip=mlps["lip"],
        eye=mlps["eye"],
    )
