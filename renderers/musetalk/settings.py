"""The musetalk renderer's settings, from the environment (`AVATAR_MUSETALK_*`, like every
other renderer setting). Reading them imports nothing heavy, so health checks can call
`from_env`.

| variable | default | meaning |
| --- | --- | --- |
| `AVATAR_MUSETALK_DIR` | none | MuseTalk's `models/` folder (below) |
| `AVATAR_MUSETALK_DEVICE` | `auto` | `auto`, `cpu` or `cuda` (`cuda:1`, ...) |
| `AVATAR_MUSETALK_FP16` | on with CUDA | half precision on the GPU (MuseTalk's `--use_float16`) |
| `AVATAR_MUSETALK_BATCH` | 2 on CPU, 16 on CUDA | frames per UNet/VAE call |
| `AVATAR_MUSETALK_SILENCE_DB` | `-50` | speech frames quieter (dBFS) skip the networks |
| `AVATAR_MUSETALK_MAX_FRAMES` | `900` | avatar frames kept in memory (the idle loop plays them) |
| `AVATAR_MUSETALK_BBOX_SHIFT` | `0` | preparation: MuseTalk's `bbox_shift` (pixels) |

`AVATAR_MUSETALK_DIR` is laid out as MuseTalk's `models/` folder (its `download_weights.sh`),
the files used unchanged:

    musetalkV15/unet.pth + musetalk.json     the UNet (MuseTalk 1.5) and its config
    sd-vae/config.json + diffusion_pytorch_model.{safetensors,bin}   stabilityai/sd-vae-ft-mse
    whisper/config.json + {model.safetensors,pytorch_model.bin}      openai/whisper-tiny

Preparation (`model: musetalk`) needs the VAE only; the renderer needs all three.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..lipsync_settings import DeviceChoice, read_shared_settings
from ..model_settings import EnvReader, installed

PREFIX = "AVATAR_MUSETALK_"
DIR_ENV = PREFIX + "DIR"

UNET_FILES = ("musetalkV15/unet.pth", "musetalkV15/musetalk.json")
VAE_CONFIG = "sd-vae/config.json"
VAE_WEIGHTS = ("sd-vae/diffusion_pytorch_model.safetensors", "sd-vae/diffusion_pytorch_model.bin")
WHISPER_CONFIG = "whisper/config.json"
WHISPER_WEIGHTS = ("whisper/model.safetensors", "whisper/pytorch_model.bin")


@dataclass(frozen=True)
class MuseTalkSettings(DeviceChoice):
    models_dir: Path | None = None
    device: str = "auto"
    fp16: bool | None = None
    """None: on when the device is CUDA."""
    batch_size: int | None = None
    """None: 2 on CPU, 16 on CUDA."""
    silence_db: float = -50.0
    max_frames: int = 900
    bbox_shift: int = 0

    cpu_batch_size: ClassVar[int] = 2

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MuseTalkSettings:
        """Settings from `env` (default os.environ); RendererError('invalid_config') names the
        variable and what it accepts."""
        read = EnvReader(PREFIX, os.environ if env is None else env)
        shared = read_shared_settings(read)
        shift = read.number("BBOX_SHIFT", -100, 100)
        return cls(
            **shared,
            models_dir=read.path("DIR"),
            bbox_shift=0 if shift is None else int(shift),
        )

    # -- files -------------------------------------------------------------------------------

    def _found(self, *names: str) -> Path | None:
        """The first of `names` that exists under the models folder."""
        if self.models_dir is None:
            return None
        for name in names:
            if (self.models_dir / name).is_file():
                return self.models_dir / name
        return None

    def unet_files(self) -> tuple[Path | None, Path | None]:
        return self._found(UNET_FILES[0]), self._found(UNET_FILES[1])

    def vae_files(self) -> tuple[Path | None, Path | None]:
        return self._found(VAE_CONFIG), self._found(*VAE_WEIGHTS)

    def whisper_files(self) -> tuple[Path | None, Path | None]:
        return self._found(WHISPER_CONFIG), self._found(*WHISPER_WEIGHTS)

    def checkpoints(self) -> dict[str, object]:
        """The files, found or missing (Renderer.checkpoints)."""
        groups = [
            (UNET_FILES[0],),
            (UNET_FILES[1],),
            (VAE_CONFIG,),
            VAE_WEIGHTS,
            (WHISPER_CONFIG,),
            WHISPER_WEIGHTS,
        ]
        files = []
        for names in groups:
            found = self._found(*names)
            shown = (
                found.relative_to(self.models_dir).as_posix()
                if found and self.models_dir
                else names[0]
            )
            files.append({"name": shown, "found": found is not None})
        return {
            "setting": DIR_ENV,
            "path": str(self.models_dir) if self.models_dir else None,
            "complete": all(f["found"] for f in files),
            "files": files if self.models_dir else [],
        }

    def unavailable_reason(self) -> str | None:
        """Why the renderer cannot run from these settings (files and packages only)."""
        return self.missing()

    def missing(self, *, vae_only: bool = False) -> str | None:
        """Why the networks cannot be loaded from these settings (files and packages only)."""
        if self.models_dir is None:
            return (
                f"no MuseTalk models configured: set {DIR_ENV} to MuseTalk's models/ folder "
                "(musetalkV15/, sd-vae/, whisper/)"
            )
        if not self.models_dir.is_dir():
            return f"{DIR_ENV}={str(self.models_dir)!r} is not a directory"
        pairs = [("sd-vae", self.vae_files(), (VAE_CONFIG, VAE_WEIGHTS[0]))]
        if not vae_only:
            pairs += [
                ("musetalkV15", self.unet_files(), UNET_FILES),
                ("whisper", self.whisper_files(), (WHISPER_CONFIG, WHISPER_WEIGHTS[0])),
            ]
        for _, found, names in pairs:
            for path, name in zip(found, names, strict=True):
                if path is None:
                    return f"{name} is missing from {DIR_ENV}={str(self.models_dir)!r}"
        needed = ["torch", "diffusers"] + ([] if vae_only else ["transformers"])
        absent = [name for name in needed if not installed(name)]
        if absent:
            return (
                f"musetalk needs {' and '.join(absent)}, which "
                f"{'is' if len(absent) == 1 else 'are'} not installed (the 'musetalk' extra)"
            )
        return None
