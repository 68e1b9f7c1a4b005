"""Exporting a checkpoint set to ONNX (needs torch; running the export does not).

Graphs and names are onnx_files.GRAPHS: the appearance extractor, the motion extractor with
its pose read in degrees, warp + SPADE fused (inputs feature_3d, kp_source, kp_driving, the
engine's order), and each MLP with the keypoint arithmetic around it. The batch axis is
dynamic. The warp's 5-D grid_sample exports as opset-20 GridSample, which ONNX Runtime's CPU
and CUDA providers run."""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointFiles, LoadedNetworks, load_networks
from .networks.motion import MotionOutputs
from .networks.sizes import NUM_KP, VOLUME_CHANNELS, VOLUME_DEPTH
from .networks.spade import WarpDecode
from .networks.stitching import Retarget, Stitch
from .onnx_files import GRAPHS, OPSET, ExportedSet, export_folder, read_manifest, write_manifest

EXAMPLE_BATCH = 2
"""Traced with two samples, so nothing in the graph can specialise to a batch of one."""


def graph_modules(
    networks: LoadedNetworks,
) -> dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]]:
    """Each graph's module and example inputs (CPU, float32)."""
    b = EXAMPLE_BATCH
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(b, 3, 256, 256, generator=generator)
    feature = torch.randn(b, VOLUME_CHANNELS, VOLUME_DEPTH, 64, 64, generator=generator)
    kp_source = 0.5 * torch.randn(b, NUM_KP, 3, generator=generator)
    kp_driving = kp_source + 0.02 * torch.randn(b, NUM_KP, 3, generator=generator)
    graphs: dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]] = {
        "appearance": (networks.appearance, (image,)),
        "motion": (MotionOutputs(networks.motion, with_pose_logits=True), (image,)),
        "warp_decode": (
            WarpDecode(networks.warp, networks.decoder),
            (feature, kp_source, kp_driving),
        ),
        "stitching": (Stitch(networks.stitching), (kp_source, kp_driving)),
    }
    if networks.lip is not None:
        graphs["lip"] = (Retarget(networks.lip), (kp_source, torch.rand(b, 2, generator=generator)))
    if networks.eye is not None:
        graphs["eye"] = (Retarget(networks.eye), (kp_source, torch.rand(b, 3, generator=generator)))
    return graphs


def export_graph(
    module: nn.Module, example: tuple[torch.Tensor, ...], name: str, path: Path
) -> None:
    inputs, outputs = GRAPHS[name]
    dynamic = {tensor: {0: "batch"} for tensor in (*inputs, *outputs)}
    module = module.to("cpu", torch.float32).eval()
    # The TorchScript exporter needs no onnxscript; its deprecation warning would only say so.
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """One exporter at a time per checkpoint set, across processes (POSIX advisory lock)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: the atomic rename below still keeps sets whole
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_exported(
    files: CheckpointFiles, cache: Path, networks: LoadedNetworks | None = None
) -> ExportedSet:
    """The ONNX export of `files` in `cache`, exported now unless a complete one exists."""
    folder = export_folder(cache, files)
    found = read_manifest(folder)
    if found is not None:
        return found
    with exclusive(folder.with_name(folder.name + ".lock")):
        found = read_manifest(folder)  # another process may have finished meanwhile
        if found is not None:
            return found
        networks = networks or load_networks(files)
        partial = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            graphs = graph_modules(networks)
            for name, (module, example) in graphs.items():
                export_graph(module, example, name, partial / f"{name}.onnx")
            write_manifest(partial, tuple(graphs), networks.sizes.name, files.digest())
            shutil.rmtree(folder, ignore_errors=True)  # an incomplete leftover, if any
            os.replace(partial, folder)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    found = read_manifest(folder)
    assert found is not None
    return found
