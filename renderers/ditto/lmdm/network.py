"""`MotionDecoder`, Ditto's LMDM denoiser: a FiLM transformer that predicts the clean motion
window x0 from a noisy one.

    x_t (B, N, 265) ++ cond_frame (B, 265) on every frame -> input_projection -> latent
    cond (B, N, 1103) -> cond_projection -> 2 pre-norm encoder layers -> condition tokens
    timestep -> sinusoid -> time_mlp -> to_time_cond (FiLM vector, plus the pooled condition
                                      through non_attn_cond_projection)
                                     -> to_time_tokens (2 extra memory tokens)
    decoder layers x 8: self-attention -> FiLM, cross-attention to the N + 2 memory tokens
                        -> FiLM, feed-forward -> FiLM (pre-norm, each added back)
    final_layer -> x0 (B, N, 265)

Unconditional passes (classifier-free guidance) swap the encoded condition tokens for the
learned `null_cond_embed` and the pooled condition for `null_cond_hidden`; the motion input
(x_t and cond_frame) is the same in both passes.

Positions enter only through a rotary embedding over the whole latent width (not per head),
applied to queries and keys (not values) before their projections; one shared instance keeps
its `freqs` buffer, which the released state dict therefore lists 11 times (top level, each
encoder and each decoder layer). Parameter and buffer names follow the released
`lmdm_v0.4_hubert.pth` so it loads strictly. Inference only: the training dropout is left out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .sizes import PUBLISHED, LMDMSizes

ROTARY_THETA = 10000.0
TIME_THETA = 10000.0


class RotaryEmbedding(nn.Module):
    """Rotates consecutive feature pairs (2i, 2i + 1) by position x freqs[i]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        exponents = torch.arange(0, dim, 2)[: dim // 2].float() / dim
        self.register_buffer("freqs", 1.0 / ROTARY_THETA**exponents)

    freqs: torch.Tensor

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, N, dim) rotated by each row's position 0 .. N-1."""
        positions = torch.arange(x.shape[-2], device=x.device, dtype=self.freqs.dtype)
        angles = positions[:, None, None] * self.freqs[None, :, None]  # (N, dim / 2, 1)
        angles = torch.cat((angles, angles), dim=-1).reshape(x.shape[-2], -1).to(x.dtype)
        turned = torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).reshape(x.shape)
        return x * angles.cos() + turned * angles.sin()


class Attention(nn.Module):
    """Multi-head attention keyed like torch's nn.MultiheadAttention (in_proj_weight and
    in_proj_bias stacked q, k, v; out_proj), batch first."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        q = self._heads(self._project(query, 0))
        k = self._heads(self._project(key, 1))
        v = self._heads(self._project(value, 2))
        # Written out rather than scaled_dot_product_attention: the TorchScript ONNX exporter
        # mis-infers that op's shapes here, and at 80 frames the fused kernel gains nothing.
        weights = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1), dim=-1)
        mixed = weights @ v  # (B, heads, N, dim / heads)
        batch, _, length, _ = mixed.shape
        return self.out_proj(mixed.transpose(1, 2).reshape(batch, length, -1))

    def _project(self, x: torch.Tensor, part: int) -> torch.Tensor:
        """x through the q (0), k (1) or v (2) rows of the stacked projection."""
        width = self.out_proj.in_features
        rows = slice(part * width, (part + 1) * width)
        return F.linear(x, self.in_proj_weight[rows], self.in_proj_bias[rows])

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.reshape(batch, length, self.heads, width // self.heads).transpose(1, 2)


class FiLM(nn.Module):
    """A (scale, shift) pair per feature from the conditioning vector: (1 + scale) x + shift."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Mish(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        scale, shift = self.block(condition)[:, None, :].chunk(2, dim=-1)
        return (1 + scale) * x + shift


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer with rotary self-attention and a GELU MLP."""

    def __init__(self, sizes: LMDMSizes, rotary: RotaryEmbedding) -> None:
        super().__init__()
        dim = sizes.latent
        self.self_attn = Attention(dim, sizes.heads)
        self.linear1 = nn.Linear(dim, sizes.feedforward)
        self.linear2 = nn.Linear(sizes.feedforward, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.rotary = rotary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        turned = self.rotary.rotate(h)
        x = x + self.self_attn(turned, turned, h)
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer; each of its three sublayers' output is FiLM-modulated by the
    time (+ pooled condition) vector before it is added back."""

    def __init__(self, sizes: LMDMSizes, rotary: RotaryEmbedding) -> None:
        super().__init__()
        dim = sizes.latent
        self.self_attn = Attention(dim, sizes.heads)
        self.multihead_attn = Attention(dim, sizes.heads)
        self.linear1 = nn.Linear(dim, sizes.feedforward)
        self.linear2 = nn.Linear(sizes.feedforward, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.film1 = FiLM(dim)
        self.film2 = FiLM(dim)
        self.film3 = FiLM(dim)
        self.rotary = rotary

    def forward(self, x: torch.Tensor, memory: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        turned = self.rotary.rotate(h)
        x = x + self.film1(self.self_attn(turned, turned, h), t)
        h = self.norm2(x)
        attended = self.multihead_attn(self.rotary.rotate(h), self.rotary.rotate(memory), memory)
        x = x + self.film2(attended, t)
        h = self.linear2(F.gelu(self.linear1(self.norm3(x))))
        return x + self.film3(h, t)


class DecoderStack(nn.Module):
    def __init__(self, layers: list[DecoderLayer]) -> None:
        super().__init__()
        self.stack = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        for layer in self.stack:
            x = layer(x, memory, t)
        return x


class TimestepEmbedding(nn.Module):
    """Integer timesteps (B,) -> (B, dim): sines then cosines of geometric frequencies."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, times: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        step = math.log(TIME_THETA) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=times.device) * -step)
        angles = times.float()[:, None] * freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class MotionDecoder(nn.Module):
    """Predicts x0 (B, N, motion) from x_t (B, N, motion), cond_frame (B, motion), cond
    (B, N, cond) with N = sizes.seq_frames (the null condition is learned per frame), and
    integer timesteps (B,)."""

    def __init__(self, sizes: LMDMSizes = PUBLISHED) -> None:
        super().__init__()
        self.sizes = sizes
        dim = sizes.latent
        self.rotary = RotaryEmbedding(dim)
        self.time_mlp = nn.Sequential(TimestepEmbedding(dim), nn.Linear(dim, 4 * dim), nn.Mish())
        self.to_time_cond = nn.Sequential(nn.Linear(4 * dim, dim))
        self.to_time_tokens = nn.Sequential(nn.Linear(4 * dim, 2 * dim))
        """Two extra memory tokens (split in `decode`)."""
        self.null_cond_embed = nn.Parameter(torch.randn(1, sizes.seq_frames, dim))
        self.null_cond_hidden = nn.Parameter(torch.randn(1, dim))
        self.norm_cond = nn.LayerNorm(dim)
        self.input_projection = nn.Linear(2 * sizes.motion_dim, dim)
        self.cond_encoder = nn.Sequential(
            *(EncoderLayer(sizes, self.rotary) for _ in range(sizes.encoder_layers))
        )
        self.cond_projection = nn.Linear(sizes.cond_dim, dim)
        self.non_attn_cond_projection = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim)
        )
        self.seqTransDecoder = DecoderStack(
            [DecoderLayer(sizes, self.rotary) for _ in range(sizes.decoder_layers)]
        )
        self.final_layer = nn.Linear(dim, sizes.motion_dim)

    # -- the pieces ------------------------------------------------------------------------

    def embed_motion(self, x: torch.Tensor, cond_frame: torch.Tensor) -> torch.Tensor:
        frames = cond_frame[:, None, :].expand(-1, x.shape[1], -1)
        return self.input_projection(torch.cat((x, frames), dim=-1))

    def encode_condition(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(condition tokens (B, N, latent), pooled condition (B, latent))."""
        tokens = self.cond_encoder(self.cond_projection(cond))
        return tokens, self.non_attn_cond_projection(tokens.mean(dim=-2))

    def null_condition(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The unconditional pass's stand-ins for encode_condition's outputs."""
        return (
            self.null_cond_embed.expand(batch, -1, -1),
            self.null_cond_hidden.expand(batch, -1),
        )

    def decode(
        self,
        motion: torch.Tensor,
        tokens: torch.Tensor,
        pooled: torch.Tensor,
        times: torch.Tensor,
    ) -> torch.Tensor:
        hidden = self.time_mlp(times)
        t = self.to_time_cond(hidden) + pooled
        time_tokens = self.to_time_tokens(hidden).reshape(hidden.shape[0], 2, -1)
        memory = self.norm_cond(torch.cat((tokens, time_tokens), dim=-2))
        return self.final_layer(self.seqTransDecoder(motion, memory, t))

    # -- the passes ------------------------------------------------------------------------

    def forward(
        self,
        x: torch.Tensor,
        cond_frame: torch.Tensor,
        cond: torch.Tensor,
        times: torch.Tensor,
        conditioned: bool = True,
    ) -> torch.Tensor:
        """One pass: x0 predicted with the condition, or without it (`conditioned=False`)."""
        if conditioned:
            tokens, pooled = self.encode_condition(cond)
        else:
            tokens, pooled = self.null_condition(x.shape[0])
        return self.decode(self.embed_motion(x, cond_frame), tokens, pooled, times)

    def guided_forward(
        self,
        x: torch.Tensor,
        cond_frame: torch.Tensor,
        cond: torch.Tensor,
        times: torch.Tensor,
        guidance_weight: float,
    ) -> torch.Tensor:
        """Classifier-free guidance: uncond + (cond - uncond) x weight. Both passes run as one
        batch of 2B through the decoder; the encoder runs for the conditioned half only."""
        batch = x.shape[0]
        tokens, pooled = self.encode_condition(cond)
        null_tokens, null_pooled = self.null_condition(batch)
        motion = self.embed_motion(x, cond_frame)
        both = self.decode(
            torch.cat((motion, motion)),
            torch.cat((null_tokens.to(tokens.dtype), tokens)),
            torch.cat((null_pooled.to(pooled.dtype), pooled)),
            torch.cat((times, times)),
        )
        unconditioned, conditioned = both[:batch], both[batch:]
        return unconditioned + (conditioned - unconditioned) * guidance_weight


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
