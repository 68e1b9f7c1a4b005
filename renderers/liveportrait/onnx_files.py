"""Where the project's own ONNX export of a checkpoint set lives, and how to tell a complete
export from a partial one, without torch (an install without torch runs ONNX Runtime from
files exported earlier).

    <cache>/<sha256 of the .pth files, 16 hex>-v<EXPORT_VERSION>/
        appearance.onnx  motion.onnx  warp_decode.onnx  stitching.onnx  [lip.onnx]  [eye.onnx]
        manifest.json    written last: its presence means the set is complete

A set is exported into a temporary folder and renamed into place under a lock, so two
processes never race and a reader never sees half a set."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import CheckpointFiles

EXPORT_VERSION = 2
"""Bumped whenever the exported graphs change, so older exports are not reused (2: the motion
graph also gives the raw pose logits, which Ditto's motion carries)."""
OPSET = 20
"""ONNX opset: 20 is the first whose GridSample takes 5-D volumes (the warp needs them)."""
GRAPHS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "appearance": (("image",), ("feature_3d",)),
    "motion": (
        ("image",),
        ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")
        + ("pitch_logits", "yaw_logits", "roll_logits"),
    ),
    "warp_decode": (("feature_3d", "kp_source", "kp_driving"), ("image",)),
    "stitching": (("kp_source", "kp_driving"), ("kp_driving_stitched",)),
    "lip": (("kp_source", "lip_ratios"), ("delta",)),
    "eye": (("kp_source", "eye_ratios"), ("delta",)),
    # W and G apart: only the per-module benchmark exports these
    "warp": (("feature_3d", "kp_source", "kp_driving"), ("warped",)),
    "decoder": (("warped",), ("image",)),
}
"""Each graph's input and output names, in order."""
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ExportedSet:
    folder: Path
    graphs: tuple[str, ...]
    """The graphs exported: appearance, motion, warp_decode, stitching, and lip and eye when
    the checkpoint has them."""
    sizes: str

    def path(self, graph: str) -> Path:
        return self.folder / f"{graph}.onnx"


def export_folder(cache: Path, files: CheckpointFiles) -> Path:
    return Path(cache) / f"{files.digest()[:16]}-v{EXPORT_VERSION}"


def exported_set(cache: Path, files: CheckpointFiles) -> ExportedSet | None:
    """The complete export of `files` in `cache`, or None."""
    return read_manifest(export_folder(cache, files))


def read_manifest(folder: Path) -> ExportedSet | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        graphs = tuple(str(name) for name in manifest["graphs"])
        sizes = str(manifest["sizes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if manifest.get("version") != EXPORT_VERSION or not set(graphs) <= set(GRAPHS):
        return None
    found = ExportedSet(folder, graphs, sizes)
    if not all(found.path(graph).is_file() for graph in graphs):
        return None
    return found


def write_manifest(folder: Path, graphs: tuple[str, ...], sizes: str, digest: str) -> None:
    manifest = {
        "version": EXPORT_VERSION,
        "opset": OPSET,
        "digest": digest,
        "sizes": sizes,
        "graphs": list(graphs),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
