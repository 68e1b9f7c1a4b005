"""Sampling motion with the LMDM, as Ditto does.

* Schedule: cosine betas (s = 0.008) over T = 1000 steps, computed in float64, clipped to
  [0, 0.999], then kept in float32 with their cumulative products (alphas_cumprod).
* One denoising step (`GuidedDenoiser`, the graph Ditto exports as ONNX/TensorRT): x0 from
  classifier-free guidance with weight 2, uncond + (cond - uncond) x 2, where the unconditional
  pass replaces the encoded audio condition by the learned null embeddings (the motion input
  stays); no clipping of x0; the noise implied by x0,
  eps = x_t / sqrt(1 - a_t) - x0 / sqrt(1 / a_t - 1).
* Sampler (`MotionSampler`): `sampling_timesteps` S (default 50) timesteps from a float32
  linspace(-1, T - 1, S + 1), truncated to integers and walked from T - 1 down; each step to
  t_next >= 0 takes x = x0 sqrt(a_next) + c eps + sigma z with
  sigma = eta sqrt((1 - a_t / a_next)(1 - a_next) / (1 - a_t)), c = sqrt(1 - a_next - sigma^2)
  (c^2 clamped at 0, where float32 rounding would otherwise give Ditto's NaN) and Ditto's
  eta = 1; the last step (t_next = -1) returns x0. S model calls in all.
* Noise: the per-step z are drawn once per setup (per S), as Ditto does; the starting x_T is
  drawn anew for each window. Both come from the sampler's own seeded generator, so the same
  seed and the same sequence of calls give the same motion, streamed or offline, and the
  global random state is never touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .network import MotionDecoder

if TYPE_CHECKING:
    from .engines import DenoiseStep

DIFFUSION_STEPS = 1000
COSINE_S = 8e-3
GUIDANCE_WEIGHT = 2.0
DEFAULT_SAMPLING_STEPS = 50
DEFAULT_ETA = 1.0


def cosine_betas(steps: int = DIFFUSION_STEPS, s: float = COSINE_S) -> np.ndarray:
    """The improved-DDPM cosine schedule's betas (float64), clipped to [0, 0.999]."""
    grid = np.arange(steps + 1, dtype=np.float64) / steps + s
    alpha_bar = np.cos(grid / (1 + s) * math.pi / 2) ** 2
    alpha_bar = alpha_bar / alpha_bar[0]
    return np.clip(1 - alpha_bar[1:] / alpha_bar[:-1], 0.0, 0.999)


def alphas_cumprod(steps: int = DIFFUSION_STEPS) -> torch.Tensor:
    """Cumulative products of 1 - beta in float32 (as Ditto keeps them), shape (steps,)."""
    betas = torch.tensor(cosine_betas(steps), dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0)


def timestep_pairs(sampling_timesteps: int, steps: int = DIFFUSION_STEPS) -> list[tuple[int, int]]:
    """(t, t_next) from T - 1 down to (t_last, -1)."""
    if sampling_timesteps < 1 or sampling_timesteps > steps:
        raise ValueError(f"sampling_timesteps must be within 1..{steps}")
    grid = torch.linspace(-1, steps - 1, steps=sampling_timesteps + 1)
    times = list(reversed(grid.int().tolist()))
    return list(zip(times[:-1], times[1:], strict=True))


class GuidedDenoiser(nn.Module):
    """One guided step: (x (B, N, 265), cond_frame (B, 265), cond (B, N, 1103), time_cond (B,)
    int64) -> (pred_noise, x_start), both (B, N, 265)."""

    def __init__(self, decoder: MotionDecoder, guidance_weight: float = GUIDANCE_WEIGHT) -> None:
        super().__init__()
        self.decoder = decoder
        self.guidance_weight = guidance_weight
        cumulative = alphas_cumprod()
        self.register_buffer(
            "sqrt_recip1m_alphas_cumprod", torch.sqrt(1.0 / (1.0 - cumulative)), persistent=False
        )
        self.register_buffer(
            "sqrt_recipm1_alphas_cumprod", torch.sqrt(1.0 / cumulative - 1), persistent=False
        )

    sqrt_recip1m_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor
    backend = "torch"

    @property
    def device(self) -> torch.device:
        return self.sqrt_recip1m_alphas_cumprod.device

    @property
    def window_shape(self) -> tuple[int, int, int]:
        sizes = self.decoder.sizes
        return (1, sizes.seq_frames, sizes.motion_dim)

    def forward(
        self,
        x: torch.Tensor,
        cond_frame: torch.Tensor,
        cond: torch.Tensor,
        time_cond: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x_start = self.decoder.guided_forward(x, cond_frame, cond, time_cond, self.guidance_weight)
        a = self.sqrt_recip1m_alphas_cumprod[time_cond][:, None, None]
        b = self.sqrt_recipm1_alphas_cumprod[time_cond][:, None, None]
        return a * x - x_start / b, x_start


@dataclass(frozen=True)
class _Step:
    time: int
    time_next: int
    alpha_next_sqrt: float
    c: float
    sigma: float


class MotionSampler:
    """Ditto's sampler around one denoising step (a `GuidedDenoiser`, or a step on another
    back end: engines.py), on the step's device.

    `sample(cond_frame (1, 265), cond (1, N, 1103))` -> motion (1, N, 265). Call `setup` to
    change the number of steps (it redraws the per-step noise); the same seed gives the same
    noise sequence, so two samplers fed the same windows in the same order agree exactly."""

    def __init__(
        self,
        denoiser: DenoiseStep,
        sampling_timesteps: int = DEFAULT_SAMPLING_STEPS,
        seed: int = 0,
        eta: float = DEFAULT_ETA,
    ) -> None:
        self.denoiser = denoiser
        self.eta = eta
        self.seed = seed
        self.sampling_timesteps = 0
        self.steps: list[_Step] = []
        self.noise: list[torch.Tensor] = []
        self.generator = torch.Generator()
        self.setup(sampling_timesteps, seed)

    @property
    def device(self) -> torch.device:
        return self.denoiser.device

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.denoiser.window_shape

    def setup(self, sampling_timesteps: int, seed: int | None = None) -> None:
        """The step plan and the per-step noise for `sampling_timesteps` steps, the generator
        reseeded (with `seed`, or the sampler's own)."""
        if seed is not None:
            self.seed = seed
        self.generator.manual_seed(self.seed)
        cumulative = alphas_cumprod()
        self.steps = []
        for time, time_next in timestep_pairs(sampling_timesteps):
            if time_next < 0:
                self.steps.append(_Step(time, time_next, 1.0, 0.0, 0.0))
                continue
            alpha, alpha_next = cumulative[time], cumulative[time_next]
            sigma = self.eta * ((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha)).sqrt()
            # c^2 is 0 in exact arithmetic when a_t ~ 0 (t = 999); float32 can round it below
            # 0, where Ditto's own code gives NaN (e.g. 3 steps): clamped, it is 0.
            c = (1 - alpha_next - sigma**2).clamp(min=0).sqrt()
            self.steps.append(
                _Step(time, time_next, float(alpha_next.sqrt()), float(c), float(sigma))
            )
        self.noise = [self._draw() for step in self.steps if step.time_next >= 0]
        self.sampling_timesteps = sampling_timesteps

    def _draw(self) -> torch.Tensor:
        return torch.randn(self.shape, generator=self.generator).to(self.device)

    @torch.inference_mode()
    def sample(
        self,
        cond_frame: torch.Tensor,
        cond: torch.Tensor,
        sampling_timesteps: int | None = None,
        x: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The denoised motion window (1, N, 265). `x` is the starting noise x_T; by default
        it is drawn from the sampler's generator."""
        if sampling_timesteps is not None and sampling_timesteps != self.sampling_timesteps:
            self.setup(sampling_timesteps)
        device = self.device
        cond_frame = cond_frame.to(device, torch.float32)
        cond = cond.to(device, torch.float32)
        x = self._draw() if x is None else x.to(device, torch.float32)
        noise = iter(self.noise)
        for step in self.steps:
            time_cond = torch.full((x.shape[0],), step.time, dtype=torch.long, device=device)
            pred_noise, x_start = self.denoiser(x, cond_frame, cond, time_cond)
            if step.time_next < 0:
                x = x_start
                break
            x = x_start * step.alpha_next_sqrt + step.c * pred_noise + step.sigma * next(noise)
        return x
