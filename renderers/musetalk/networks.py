"""MuseTalk 1.5's three networks, built from their published configurations and loaded from
the published files unchanged (the layout of MuseTalk's `models/` folder, settings.py):

* the UNet: diffusers' `UNet2DConditionModel` from `musetalkV15/musetalk.json`, weights
  `musetalkV15/unet.pth` (a plain state dict). Input: 8 latent channels (the VAE latent of the
  face crop with its lower half blanked, then the latent of the whole crop, the reference),
  32x32 for a 256x256 crop; called once, at timestep 0 ("not a diffusion model": a single
  step of inpainting in latent space); the audio tokens go in as `encoder_hidden_states`.
* the VAE: diffusers' `AutoencoderKL` from `sd-vae/config.json` (stabilityai/sd-vae-ft-mse),
  weights `diffusion_pytorch_model.safetensors` or `.bin` (whose attention keys still carry
  the old `query/key/value/proj_attn` names: `renamed_attention` gives them today's).
  Latents are scaled by `scaling_factor` (0.18215); images are RGB in [-1, 1].
* Whisper-tiny's encoder: transformers' `WhisperEncoder` from `whisper/config.json`, weights
  `model.safetensors` or `pytorch_model.bin` (the whole WhisperForConditionalGeneration; only
  `model.encoder.*` is read). MuseTalk stacks all its hidden states (the embedding output and
  each layer's: 5 for tiny), 50 per second of audio.

Every load is strict: a file whose keys or shapes differ from the config's network is refused
with RendererError('invalid_checkpoint') naming the file.

torch, diffusers and transformers are imported here only; nothing else in renderers/musetalk
imports them at module level.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..base import RendererError

FACE_SIZE = 256
"""MuseTalk's face crop side (the VAE sees 256x256, the UNet 32x32 latents)."""
DEFAULT_SCALING = 0.18215
SAMPLE_RATE = 16000
FEATURES_PER_SECOND = 50
"""Whisper encoder positions per second (mel hop 10 ms, stride-2 conv)."""
SAMPLES_PER_FEATURE = SAMPLE_RATE // FEATURES_PER_SECOND


def _invalid(path: Path, why: str) -> RendererError:
    return RendererError("invalid_checkpoint", f"{path.name} ({path.parent.name}/): {why}")


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise _invalid(Path(path), f"not a readable JSON config ({type(error).__name__})") from None
    if not isinstance(value, dict):
        raise _invalid(Path(path), "not a JSON object")
    return value


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch pickle (read with weights_only, so a
    file cannot run code)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file: say so plainly
        raise _invalid(path, f"cannot be read as weights ({type(error).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _invalid(path, "is not a state dict of tensors")
    return state


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise _invalid(path, "keys do not match its config: " + ", ".join(detail))
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise _invalid(
                path,
                f"{name} is {tuple(tensor.shape)}, the config wants {tuple(expected[name].shape)}",
            )
    module.load_state_dict(state, strict=True)


def build_unet(config: dict[str, Any]) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_config(config)


def build_vae(config: dict[str, Any]) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_config(config)


def build_whisper_encoder(config: dict[str, Any]) -> Any:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    return WhisperEncoder(WhisperConfig(**config))


def load_unet(config_path: Path, weights_path: Path) -> Any:
    unet = build_unet(read_json(config_path))
    _load_strict(unet, read_state_dict(weights_path), weights_path)
    return unet.eval().requires_grad_(False)


def load_vae(config_path: Path, weights_path: Path) -> Any:
    vae = build_vae(read_json(config_path))
    _load_strict(vae, renamed_attention(read_state_dict(weights_path)), weights_path)
    return vae.eval().requires_grad_(False)


_OLD_ATTENTION = {
    ".query.": ".to_q.",
    ".key.": ".to_k.",
    ".value.": ".to_v.",
    ".proj_attn.": ".to_out.0.",
}


def renamed_attention(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The VAE's attention keys as diffusers names them now: sd-vae-ft-mse's .bin (diffusers
    0.4) calls them query/key/value/proj_attn, its .safetensors to_q/to_k/to_v/to_out.0."""
    out = {}
    for key, value in state.items():
        if ".attentions." in key:
            for before, now in _OLD_ATTENTION.items():
                key = key.replace(before, now)
        out[key] = value
    return out


def load_whisper_encoder(config_path: Path, weights_path: Path) -> Any:
    encoder = build_whisper_encoder(read_json(config_path))
    state = read_state_dict(weights_path)
    for prefix in ("model.encoder.", "encoder."):
        picked = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if picked:
            break
    else:
        raise _invalid(weights_path, "has no model.encoder.* weights (not a Whisper checkpoint)")
    _load_strict(encoder, picked, weights_path)
    return encoder.eval().requires_grad_(False)


def positional_encoding(length: int, d_model: int) -> torch.Tensor:
    """MuseTalk's sinusoidal PositionalEncoding (unet.py), (1, length, d_model) float32:
    sin on even channels, cos on odd, frequencies 10000^(-2i/d)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model)
    )
    pe = torch.zeros(length, d_model)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    return pe[None]


def _dtype_device(device: str, fp16: bool) -> tuple[torch.device, torch.dtype]:
    return torch.device(device), (torch.float16 if fp16 else torch.float32)


def _placed(module: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """`module` on `device` in `dtype` (cast only when it changes: diffusers warns on any cast)."""
    module = module.to(device)
    return module if dtype == torch.float32 else module.to(dtype=dtype)


class FaceEncoder:
    """The VAE's encoder, as MuseTalk's preparation uses it (vae.get_latents_for_unet)."""

    def __init__(self, vae: Any, *, device: str = "cpu", fp16: bool = False, seed: int = 0) -> None:
        self.device, self.dtype = _dtype_device(device, fp16)
        self.vae = _placed(vae, self.device, self.dtype)
        self.scaling = float(getattr(vae.config, "scaling_factor", None) or DEFAULT_SCALING)
        self._generator = torch.Generator(device=self.device).manual_seed(seed)

    @torch.no_grad()
    def latents(self, faces_rgb: np.ndarray) -> torch.Tensor:
        """(B, 256, 256, 3) uint8 RGB crops -> (B, 8, h, w) float32 on the CPU: the latent of
        the crop with its lower half zeroed (MuseTalk's half mask keeps rows < 128), then the
        latent of the whole crop. MuseTalk samples the posterior (latent_dist.sample()); so do
        these, from a seeded generator, so a package is reproducible."""
        images = torch.from_numpy(np.ascontiguousarray(faces_rgb)).to(self.device)
        images = images.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        masked = images.clone()
        masked[:, :, images.shape[2] // 2 :, :] = 0.0
        both = torch.cat([masked, images]) * 2.0 - 1.0  # Normalize(mean 0.5, std 0.5)
        dist = self.vae.encode(both.to(self.dtype)).latent_dist
        noise = torch.randn(
            dist.mean.shape, generator=self._generator, device=self.device, dtype=dist.mean.dtype
        )
        latents = (dist.mean + dist.std * noise) * self.scaling
        n = len(faces_rgb)
        return torch.cat([latents[:n], latents[n:]], dim=1).float().cpu()


class MuseTalkNetworks:
    """The three networks on one device, as the renderer runs them."""

    def __init__(
        self, unet: Any, vae: Any, whisper: Any, *, device: str = "cpu", fp16: bool = False
    ) -> None:
        self.device, self.dtype = _dtype_device(device, fp16)
        self.unet = _placed(unet, self.device, self.dtype)
        self.vae = _placed(vae, self.device, self.dtype)
        self.whisper = _placed(whisper, self.device, self.dtype)
        self.fp16 = fp16
        self.scaling = float(getattr(vae.config, "scaling_factor", None) or DEFAULT_SCALING)
        config = whisper.config
        self.feature_dim = int(config.d_model)
        self.layers = int(config.encoder_layers) + 1  # hidden states: embeddings + each layer
        self.mel_bins = int(config.num_mel_bins)
        self.mel_frames = int(config.max_source_positions) * 2
        cross = unet.config.cross_attention_dim
        cross = cross[0] if isinstance(cross, (list, tuple)) else cross
        if int(cross) != self.feature_dim:
            raise RendererError(
                "invalid_checkpoint",
                f"the UNet's cross_attention_dim ({cross}) is not the Whisper encoder's width "
                f"({self.feature_dim})",
            )
        self._timestep = torch.tensor([0], device=self.device)
        self._pe: torch.Tensor | None = None

    @classmethod
    def load(cls, models_dir: Path, *, device: str, fp16: bool) -> MuseTalkNetworks:
        from .settings import MuseTalkSettings

        files = MuseTalkSettings(models_dir=models_dir)
        unet_weights, unet_config = files.unet_files()
        vae_config, vae_weights = files.vae_files()
        whisper_config, whisper_weights = files.whisper_files()
        assert unet_weights and unet_config and vae_config and vae_weights
        assert whisper_config and whisper_weights
        return cls(
            load_unet(unet_config, unet_weights),
            load_vae(vae_config, vae_weights),
            load_whisper_encoder(whisper_config, whisper_weights),
            device=device,
            fp16=fp16,
        )

    @property
    def description(self) -> str:
        return f"torch on {self.device} ({'fp16' if self.fp16 else 'fp32'})"

    @torch.no_grad()
    def audio_features(self, mel: np.ndarray) -> np.ndarray:
        """(mel_bins, mel_frames) log-mel (WhisperFeatureExtractor's, 30 s padded) ->
        (positions, layers, feature_dim) float32: every hidden state of the encoder, stacked
        as MuseTalk's get_whisper_chunk stacks them (dim 2)."""
        features = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32))[None]
        out = self.whisper(features.to(self.device, self.dtype), output_hidden_states=True)
        return torch.stack(out.hidden_states, dim=2)[0].float().cpu().numpy()

    @torch.no_grad()
    def generate(self, latents: torch.Tensor, audio: np.ndarray) -> np.ndarray:
        """latents (B, 8, h, w) and audio tokens (B, T, feature_dim) -> (B, 256, 256, 3) uint8
        RGB faces: PE(audio) as the cross-attention context, one UNet step at t=0, VAE decode."""
        tokens = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        if self._pe is None or self._pe.shape[1] < tokens.shape[1]:
            self._pe = positional_encoding(tokens.shape[1], self.feature_dim)
        tokens = (tokens + self._pe[:, : tokens.shape[1]]).to(self.device, self.dtype)
        sample = latents.to(self.device, self.dtype)
        predicted = self.unet(sample, self._timestep, encoder_hidden_states=tokens).sample
        image = self.vae.decode(predicted / self.scaling).sample
        image = (image.float() / 2 + 0.5).clamp(0, 1)
        return (image.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu().numpy()
