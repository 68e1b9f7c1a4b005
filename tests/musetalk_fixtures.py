"""MuseTalk models with random weights, written in the published files' layouts (MuseTalk's
`models/` folder: musetalkV15/{unet.pth, musetalk.json}, sd-vae/{config.json,
diffusion_pytorch_model.bin}, whisper/{config.json, pytorch_model.bin}).

`PUBLISHED_*` are the published configurations (musetalkV15/musetalk.json,
stabilityai/sd-vae-ft-mse's and openai/whisper-tiny's config.json); `SMALL_*` narrow them for
speed while keeping every key name's pattern (the same block types, the same modules, fewer
channels and layers), so a loader that reads SMALL files reads the published ones.

The VAE's .bin is written with the old attention names (`query`, `key`, `value`,
`proj_attn`) that stabilityai's diffusion_pytorch_model.bin carries; the Whisper .bin holds
the whole WhisperForConditionalGeneration (`model.encoder.*`, `model.decoder.*`, `proj_out`),
as openai's does.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

PUBLISHED_UNET: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.6.0.dev0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 384,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ],
}
PUBLISHED_VAE: dict[str, Any] = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.4.2",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
PUBLISHED_WHISPER: dict[str, Any] = {
    "architectures": ["WhisperForConditionalGeneration"],
    "model_type": "whisper",
    "d_model": 384,
    "encoder_layers": 4,
    "encoder_attention_heads": 6,
    "encoder_ffn_dim": 1536,
    "decoder_layers": 4,
    "decoder_attention_heads": 6,
    "decoder_ffn_dim": 1536,
    "num_mel_bins": 80,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "vocab_size": 51865,
    "activation_function": "gelu",
}

SMALL_UNET = {
    **PUBLISHED_UNET,
    "block_out_channels": [32, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "cross_attention_dim": 32,
}
SMALL_VAE = {
    **PUBLISHED_VAE,
    "block_out_channels": [8, 8, 16, 16],  # four blocks: still 8x down, 32x32 latents
    "layers_per_block": 1,
    "norm_num_groups": 4,
}
SMALL_WHISPER = {
    **PUBLISHED_WHISPER,
    "d_model": 32,
    "encoder_layers": 2,
    "encoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "decoder_layers": 1,
    "decoder_attention_heads": 2,
    "decoder_ffn_dim": 64,
    "vocab_size": 64,
    "max_target_positions": 16,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "decoder_start_token_id": 1,
    "begin_suppress_tokens": None,
    "suppress_tokens": None,
}

_OLD_ATTENTION_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def write_models(
    root: Path,
    *,
    unet: dict[str, Any] = SMALL_UNET,
    vae: dict[str, Any] = SMALL_VAE,
    whisper: dict[str, Any] = SMALL_WHISPER,
    seed: int = 0,
) -> Path:
    """A MuseTalk models/ folder at `root` with random weights; returns root."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    (root / "musetalkV15").mkdir(parents=True, exist_ok=True)
    (root / "sd-vae").mkdir(exist_ok=True)
    (root / "whisper").mkdir(exist_ok=True)
    (root / "musetalkV15" / "musetalk.json").write_text(json.dumps(unet, indent=2))
    unet_model = UNet2DConditionModel.from_config(copy.deepcopy(unet))
    torch.save(unet_model.state_dict(), root / "musetalkV15" / "unet.pth")
    (root / "sd-vae" / "config.json").write_text(json.dumps(vae, indent=2))
    vae_model = AutoencoderKL.from_config(copy.deepcopy(vae))
    torch.save(
        old_attention_names(vae_model.state_dict()), root / "sd-vae" / "diffusion_pytorch_model.bin"
    )
    (root / "whisper" / "config.json").write_text(json.dumps(whisper, indent=2))
    config = WhisperConfig(**{k: v for k, v in whisper.items() if k != "architectures"})
    whisper_model = WhisperForConditionalGeneration(config)
    state = {k: v.contiguous() for k, v in whisper_model.state_dict().items()}
    torch.save(state, root / "whisper" / "pytorch_model.bin")
    return root


def old_attention_names(state: dict[str, Any]) -> dict[str, Any]:
    """The VAE's mid-block attention keys as diffusers 0.4 named them (the published .bin)."""
    renamed = {}
    for key, value in state.items():
        new = key
        if ".attentions." in key:
            for now, before in _OLD_ATTENTION_NAMES.items():
                new = new.replace(f".{now}.", f".{before}.")
        renamed[new] = value
    return renamed
