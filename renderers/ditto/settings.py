"""The ditto renderer's settings, from the environment. Reading them imports nothing heavy, so
health checks can call `from_env`, `unavailable_reason` and `describe`.

| variable | default | meaning |
| --- | --- | --- |
| `AVATAR_DITTO_DIR` | none | Ditto's `checkpoints/` folder (below) |
| `AVATAR_DITTO_STEPS` | 10 | LMDM sampling steps (`sampling_timesteps`; Ditto's code: 50) |
| `AVATAR_DITTO_OVERLAP` | 75 | frames each 80-frame window shares with the previous one |
| `AVATAR_DITTO_DEVICE` | `auto` | `auto`, `cpu` or `cuda` (`cuda:1`, ...) |
| `AVATAR_DITTO_BACKEND` | `auto` | `torch`, `onnx` or `tensorrt` (also `DITTO_INFERENCE_BACKEND`) |
| `AVATAR_DITTO_FP16` | on with CUDA | half precision on a GPU (torch autocast, TensorRT) |
| `AVATAR_DITTO_CACHE` | `$AVATAR_CACHE` | where the ONNX exports and TensorRT engines are kept |
| `AVATAR_DITTO_SEED` | 0 | the sampler's noise seed |

`AVATAR_DITTO_DIR` is laid out as Ditto's `checkpoints/` (its `ditto_pytorch/` folder is
accepted too):

    ditto_pytorch/models/lmdm_v0.4_hubert.pth          the motion diffusion model
    ditto_pytorch/models/{appearance_extractor,motion_extractor,warp_network,decoder,
                          stitch_network}.pth           LivePortrait's networks
    ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx   HuBERT

The overlap sets latency against compute: each window yields `80 - overlap` new frames, and a
frame is final only once the next window has been fused over it, so the motion of a frame needs
audio about `2 x (80 - overlap)` frames past it (renderer.py, `required_lookahead_samples`).
The maintainers run 70 to 75 online; 75 gives 0.49 s of look-ahead, 70 0.89 s.

The back end applies to the LMDM step (lmdm/engines.py) and to LivePortrait's networks (their
engines): `auto` is TensorRT when installed on a GPU, else torch; on a CPU torch, whose warp
and decode (nearly all the cost) beat ONNX Runtime's there; the LMDM alone is about 25 %
faster on ONNX Runtime (docs/benchmarks.md). `onnx` runs Ditto's released
`ditto_onnx/lmdm_v0.4_hubert.onnx` when it is in AVATAR_DITTO_DIR, else the project's export of
the .pth. HuBERT always runs in ONNX Runtime (CUDA's provider on a GPU when installed).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..base import RendererError
from ..cache import cache_dir
from ..model_settings import EnvReader, cuda_present, installed

PREFIX = "AVATAR_DITTO_"
DIR_ENV = PREFIX + "DIR"
DEFAULT_STEPS = 10
DEFAULT_OVERLAP = 75
SEQ_FRAMES = 80
MIN_OVERLAP = 40
"""Below 40 the online pipeline drops the first 80 - 2 x overlap frames of every stream
(Ditto's fusion rule); the renderer accepts 40..79."""
MODEL_FOLDERS = ("ditto_pytorch/models", "models", ".")
LMDM_FILE = "lmdm_v0.4_hubert.pth"


@dataclass(frozen=True)
class DittoSettings:
    directory: Path | None = None
    steps: int = DEFAULT_STEPS
    overlap: int = DEFAULT_OVERLAP
    device: str = "auto"
    seed: int = 0
    cache_dir: Path | None = None
    backend: str = "auto"
    fp16: bool | None = None
    """None: on when the device is CUDA."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DittoSettings:
        read = EnvReader(PREFIX, os.environ if env is None else env)
        steps = read.number("STEPS", 1, 1000)
        overlap = read.number("OVERLAP", MIN_OVERLAP, SEQ_FRAMES - 1)
        seed = read.number("SEED", 0, 2**31 - 1)
        for name, value in (("STEPS", steps), ("OVERLAP", overlap), ("SEED", seed)):
            if value is not None and value != int(value):
                raise read.invalid(name, read.raw(name), "a whole number")
        return cls(
            directory=read.path("DIR"),
            steps=int(steps) if steps is not None else DEFAULT_STEPS,
            overlap=int(overlap) if overlap is not None else DEFAULT_OVERLAP,
            device=read.device(),
            seed=int(seed) if seed is not None else 0,
            cache_dir=read.path("CACHE"),
            backend=read.backend(),
            fp16=read.flag("FP16"),
        )

    def resolved_device(self) -> str:
        if self.device == "auto":
            return "cuda:0" if cuda_present() else "cpu"
        return "cuda:0" if self.device == "cuda" else self.device

    def resolved_backend(self) -> str:
        """What `auto` stands for: TensorRT when installed on a GPU, else torch."""
        if self.backend != "auto":
            return self.backend
        cuda = self.resolved_device().startswith("cuda")
        return "tensorrt" if cuda and installed("tensorrt") else "torch"

    def resolved_fp16(self) -> bool:
        """Half precision: as asked, else on with CUDA; never on a CPU or in ONNX Runtime."""
        cuda = self.resolved_device().startswith("cuda")
        wanted = cuda if self.fp16 is None else self.fp16
        return wanted and cuda and self.resolved_backend() != "onnx"

    def engine_cache(self) -> Path:
        return self.cache_dir or cache_dir()

    def models_dir(self) -> Path | None:
        """The folder holding lmdm_v0.4_hubert.pth and the LivePortrait networks."""
        if self.directory is None:
            return None
        for folder in MODEL_FOLDERS:
            candidate = self.directory / folder
            if (candidate / LMDM_FILE).is_file():
                return candidate
        return None

    def unavailable_reason(self) -> str | None:
        """What is missing (a package, the setting, a named file), or None. Loads nothing."""
        from ..liveportrait.checkpoint import CheckpointError, locate
        from .audio.hubert import DittoAudioError, locate_hubert

        missing = [name for name in ("torch", "onnxruntime") if not installed(name)]
        if missing:
            return (
                f"the ditto renderer needs {' and '.join(missing)}, which "
                f"{'is' if len(missing) == 1 else 'are'} not installed"
            )
        if self.directory is None:
            return (
                f"no Ditto checkpoints configured: set {DIR_ENV} to Ditto's checkpoints folder "
                "(holding ditto_pytorch/models and ditto_pytorch/aux_models)"
            )
        if not self.directory.is_dir():
            return f"{DIR_ENV} does not exist or is not a directory"
        models = self.models_dir()
        if models is None:
            return (
                f"{LMDM_FILE} not found in {DIR_ENV} (looked in ditto_pytorch/models, models "
                "and the folder itself)"
            )
        try:
            locate(models)
        except CheckpointError as error:
            return f"{DIR_ENV}: {error.message.replace('AVATAR_LIVEPORTRAIT_DIR', DIR_ENV)}"
        try:
            locate_hubert(self.directory)
        except DittoAudioError as error:
            return error.message
        if self.device.startswith("cuda") and not cuda_present():
            return f"{PREFIX}DEVICE={self.device} but no NVIDIA GPU driver is present"
        if self.resolved_backend() == "tensorrt" and not installed("tensorrt"):
            return f"{PREFIX}BACKEND=tensorrt needs the 'tensorrt' package, which is not installed"
        return None

    def directory_or_raise(self) -> Path:
        reason = self.unavailable_reason()
        if reason is not None:
            raise RendererError("checkpoint_not_found", reason)
        assert self.directory is not None
        return self.directory

    def checkpoints(self) -> dict[str, object]:
        """The files, found or missing (Renderer.checkpoints), named from AVATAR_DITTO_DIR."""
        from ..liveportrait.checkpoint import LAYOUT_FILES
        from .audio.hubert import HUBERT_RELATIVE, DittoAudioError, locate_hubert

        names = [LMDM_FILE, *LAYOUT_FILES["ditto"].values()]
        models = self.models_dir()
        files: list[dict[str, object]] = [
            {
                "name": f"{MODEL_FOLDERS[0]}/{name}",
                "found": models is not None and (models / name).is_file(),
            }
            for name in names
        ]
        hubert = False
        if self.directory is not None:
            try:
                locate_hubert(self.directory)  # Ditto's file, or the project's export of it
                hubert = True
            except DittoAudioError:
                pass
        files.append({"name": HUBERT_RELATIVE, "found": hubert})
        return {
            "setting": DIR_ENV,
            "path": str(self.directory) if self.directory else None,
            "complete": all(f["found"] for f in files),
            "files": files,
        }

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.resolved_backend(),
            "fp16": self.resolved_fp16(),
            "device": self.resolved_device(),
            "steps": self.steps,
            "overlap": self.overlap,
            "dir": str(self.directory) if self.directory else None,
        }
