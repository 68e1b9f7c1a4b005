"""M, the motion extractor: a ConvNeXt-V2-tiny backbone (depths 3-3-9-3, widths 96-192-384-768)
with seven linear heads read from the pooled features. Its state dict nests everything under
`detector.`, because the released wrapper held the backbone as `self.detector`.

The heads give raw values: pitch, yaw and roll as 66-bin logits, t (3), exp (63), scale (1)
and the canonical keypoints kp (63). `MotionOutputs` turns them into what callers use."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .sizes import NUM_KP, PUBLISHED, NetworkSizes

PARAMETERS = 28_118_728
POSE_BINS = 66
MOTION_OUTPUTS = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")
"""The order of MotionOutputs' results (and of the exported ONNX graph's outputs)."""


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over dim 1 of (B, C, H, W), with ConvNeXt's eps."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2's GRN on channels-last (B, H, W, C): each channel's spatial L2 norm,
    divided by the mean of those norms, re-weights the channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norms = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)
        ratio = norms / (norms.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * ratio) + self.beta + x


class ConvNeXtBlock(nn.Module):
    """depthwise 7x7 -> LayerNorm -> 4x expand -> GELU -> GRN -> project, plus the input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.grn = GlobalResponseNorm(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(F.gelu(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtV2Heads(nn.Module):
    """The backbone and heads, keyed as the releases' `detector`."""

    def __init__(self, sizes: NetworkSizes = PUBLISHED) -> None:
        super().__init__()
        widths, num_kp, bins = sizes.motion_widths, NUM_KP, POSE_BINS
        stem = nn.Sequential(
            nn.Conv2d(3, widths[0], kernel_size=4, stride=4), ChannelsFirstLayerNorm(widths[0])
        )
        downs = [
            nn.Sequential(
                ChannelsFirstLayerNorm(widths[i]),
                nn.Conv2d(widths[i], widths[i + 1], kernel_size=2, stride=2),
            )
            for i in range(3)
        ]
        self.downsample_layers = nn.ModuleList([stem, *downs])
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(width) for _ in range(depth)))
            for depth, width in zip(sizes.motion_depths, widths, strict=True)
        )
        last = widths[-1]
        self.norm = nn.LayerNorm(last, eps=1e-6)
        self.fc_kp = nn.Linear(last, 3 * num_kp)
        self.fc_scale = nn.Linear(last, 1)
        self.fc_pitch = nn.Linear(last, bins)
        self.fc_yaw = nn.Linear(last, bins)
        self.fc_roll = nn.Linear(last, bins)
        self.fc_t = nn.Linear(last, 3)
        self.fc_exp = nn.Linear(last, 3 * num_kp)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = image
        for down, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(down(x))
        pooled = self.norm(x.mean(dim=(-2, -1)))
        return {
            "pitch": self.fc_pitch(pooled),
            "yaw": self.fc_yaw(pooled),
            "roll": self.fc_roll(pooled),
            "t": self.fc_t(pooled),
            "exp": self.fc_exp(pooled),
            "scale": self.fc_scale(pooled),
            "kp": self.fc_kp(pooled),
        }


class MotionExtractor(nn.Module):
    def __init__(self, sizes: NetworkSizes = PUBLISHED) -> None:
        super().__init__()
        self.detector = ConvNeXtV2Heads(sizes)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.detector(image)


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """(B, 66) logits -> (B,) degrees: the softmax's expected bin, 3 degrees a bin, centred so
    that bins 0..65 span -97.5..97.5 (LivePortrait's reading of its pose heads)."""
    index = torch.arange(logits.shape[-1], dtype=logits.dtype, device=logits.device)
    return (F.softmax(logits, dim=-1) * index).sum(dim=-1) * 3.0 - 97.5


class MotionOutputs(nn.Module):
    """M with its outputs made usable, in MOTION_OUTPUTS order: pitch, yaw, roll in degrees
    (B,), t (B, 3), exp (B, 21, 3), scale (B, 1), kp (B, 21, 3). One graph for every back end,
    so the ONNX export computes exactly what the torch engine does."""

    def __init__(self, extractor: MotionExtractor, *, with_pose_logits: bool = False) -> None:
        super().__init__()
        self.extractor = extractor
        self.with_pose_logits = with_pose_logits
        """Also return the raw pitch, yaw and roll logits (B, 66) each, after the seven: what
        Ditto's motion carries (engine.MotionInfo.pose_logits); the exported graph has them."""

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raw = self.extractor(image)
        batch = image.shape[0]
        outputs = (
            bins_to_degrees(raw["pitch"].float()),
            bins_to_degrees(raw["yaw"].float()),
            bins_to_degrees(raw["roll"].float()),
            raw["t"],
            raw["exp"].reshape(batch, -1, 3),
            raw["scale"],
            raw["kp"].reshape(batch, -1, 3),
        )
        if self.with_pose_logits:
            return (*outputs, raw["pitch"], raw["yaw"], raw["roll"])
        return outputs
