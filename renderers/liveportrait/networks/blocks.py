"""Layers shared by LivePortrait's networks. Attribute names are part of the checkpoint format:
each `self.<name>` below becomes a key prefix in the published state dicts, so they are kept
as the releases spell them even where another name would read better."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SameBlock2d(nn.Module):
    """conv 3x3 -> batch norm -> ReLU (leaky in the warping module), size kept."""

    def __init__(self, cin: int, cout: int, *, leaky: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(cout)
        self.ac: nn.Module = nn.LeakyReLU() if leaky else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ac(self.norm(self.conv(x)))


class DownBlock2d(nn.Module):
    """conv 3x3 -> batch norm -> ReLU -> 2x2 average pool: halves height and width."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), 2)


class DownBlock3d(nn.Module):
    """The 3-D version: halves height and width, keeps depth."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), (1, 2, 2))


class UpBlock3d(nn.Module):
    """Nearest upsampling of height and width by 2 -> conv -> batch norm -> ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        return F.relu(self.norm(self.conv(x)))


class ResBlock3d(nn.Module):
    """Pre-activation residual block (norm -> ReLU -> conv, twice) on a feature volume."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(channels)
        self.norm2 = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        return x + self.conv2(F.relu(self.norm2(out)))


def _widths(expansion: int, levels: int, ceiling: int) -> list[int]:
    """Channel width after each of `levels` halvings: expansion * 2^(i+1), capped."""
    return [min(ceiling, expansion * 2 ** (i + 1)) for i in range(levels)]


class HourglassEncoder(nn.Module):
    def __init__(self, expansion: int, cin: int, levels: int, ceiling: int) -> None:
        super().__init__()
        widths = _widths(expansion, levels, ceiling)
        inputs = [cin, *widths[:-1]]
        self.down_blocks = nn.ModuleList(
            DownBlock3d(a, b) for a, b in zip(inputs, widths, strict=True)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every level's output, the input first: the decoder's skip connections."""
        levels = [x]
        for block in self.down_blocks:
            levels.append(block(levels[-1]))
        return levels


class HourglassDecoder(nn.Module):
    def __init__(self, expansion: int, cin: int, levels: int, ceiling: int) -> None:
        super().__init__()
        widths = _widths(expansion, levels, ceiling)
        blocks = []
        for i in reversed(range(levels)):
            # the deepest level takes the encoder's output alone, the others it + a skip
            width_in = widths[i] if i == levels - 1 else 2 * widths[i]
            blocks.append(UpBlock3d(width_in, min(ceiling, expansion * 2**i)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_channels = expansion + cin
        self.conv = nn.Conv3d(self.out_channels, self.out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_channels)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        out = levels[-1]
        for block, skip in zip(self.up_blocks, reversed(levels[:-1]), strict=True):
            out = torch.cat([block(out), skip], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    """3-D U-Net over (B, C, D, H, W); output channels `expansion + cin`."""

    def __init__(self, expansion: int, cin: int, levels: int, ceiling: int) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(expansion, cin, levels, ceiling)
        self.decoder = HourglassDecoder(expansion, cin, levels, ceiling)
        self.out_channels = self.decoder.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class SpectralConv2d(nn.Module):
    """A Conv2d whose weight is divided by its largest singular value, stored the way
    `torch.nn.utils.spectral_norm` stores it (`weight_orig`, `weight_u`, `weight_v`), so the
    published files load without torch's hook or its `_metadata` version stamp.

    Inference never updates u and v: sigma = u . (W v) from the stored vectors, as torch's own
    spectral norm does in eval mode."""

    weight_u: torch.Tensor
    weight_v: torch.Tensor

    def __init__(self, cin: int, cout: int, kernel: int, *, bias: bool = True) -> None:
        super().__init__()
        self.padding = kernel // 2
        # bias before weight_orig: the order torch's spectral_norm leaves the parameters in
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.weight_orig = nn.Parameter(torch.empty(cout, cin, kernel, kernel))
        self.register_buffer("weight_u", F.normalize(torch.randn(cout), dim=0, eps=1e-12))
        inputs = cin * kernel**2
        self.register_buffer("weight_v", F.normalize(torch.randn(inputs), dim=0, eps=1e-12))
        nn.init.kaiming_uniform_(self.weight_orig, a=5**0.5)

    def normalized_weight(self) -> torch.Tensor:
        matrix = self.weight_orig.flatten(1)
        sigma = torch.dot(self.weight_u, torch.mv(matrix, self.weight_v))
        return self.weight_orig / sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.normalized_weight().to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.conv2d(x, weight, bias, padding=self.padding)


class SPADE(nn.Module):
    """Spatially-adaptive normalisation: instance-normalise `x`, then scale and shift it per
    pixel by maps predicted from `segmap` (resized to x's size, nearest)."""

    def __init__(self, channels: int, label_channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(channels, affine=False)
        self.mlp_shared = nn.Sequential(
            nn.Conv2d(label_channels, hidden, kernel_size=3, padding=1), nn.ReLU()
        )
        self.mlp_gamma = nn.Conv2d(hidden, channels, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        if segmap.shape[-2:] != x.shape[-2:]:
            segmap = F.interpolate(segmap, size=x.shape[-2:], mode="nearest")
        hidden = self.mlp_shared(segmap)
        return self.param_free_norm(x) * (1 + self.mlp_gamma(hidden)) + self.mlp_beta(hidden)


class SPADEResnetBlock(nn.Module):
    """Two SPADE -> leaky ReLU -> spectral conv steps plus a shortcut (a learned 1x1 spectral
    conv without bias when the width changes)."""

    def __init__(self, cin: int, cout: int, label_channels: int, hidden: int = 128) -> None:
        super().__init__()
        middle = min(cin, cout)
        self.learned_shortcut = cin != cout
        self.conv_0 = SpectralConv2d(cin, middle, 3)
        self.conv_1 = SpectralConv2d(middle, cout, 3)
        if self.learned_shortcut:
            self.conv_s = SpectralConv2d(cin, cout, 1, bias=False)
        self.norm_0 = SPADE(cin, label_channels, hidden)
        self.norm_1 = SPADE(middle, label_channels, hidden)
        if self.learned_shortcut:
            self.norm_s = SPADE(cin, label_channels, hidden)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, segmap)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, segmap), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, segmap), 0.2))
        return shortcut + dx


def coordinate_grid(depth: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(D, H, W, 3) grid of (x, y, z) in [-1, 1], x to the right, y down, z inwards: the
    coordinates `grid_sample` reads (align_corners=False reads the same values)."""
    dtype, device = like.dtype, like.device
    z = torch.linspace(-1.0, 1.0, depth, dtype=dtype, device=device)
    y = torch.linspace(-1.0, 1.0, height, dtype=dtype, device=device)
    x = torch.linspace(-1.0, 1.0, width, dtype=dtype, device=device)
    zz, yy, xx = torch.meshgrid(z, y, x, indexing="ij")
    return torch.stack([xx, yy, zz], dim=-1)
