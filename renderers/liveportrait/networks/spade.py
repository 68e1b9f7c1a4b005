"""G, the SPADE decoder: the warped (B, 256, 64, 64) feature -> a (B, 3, 512, 512) RGB image
in [0, 1]. Six SPADE residual blocks at 64x64, two more after each 2x nearest upsampling,
then a conv to 12 channels that PixelShuffle folds into 3 channels at twice the size. Every
residual conv is spectrally normalised (see blocks.SpectralConv2d); the final one is not."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import SPADEResnetBlock
from .sizes import PUBLISHED, NetworkSizes

PARAMETERS = 55_365_388


class SPADEDecoder(nn.Module):
    UPSCALE = 2
    """The last conv makes 3 x 2 x 2 channels that PixelShuffle turns into 2x the size."""

    def __init__(self, sizes: NetworkSizes = PUBLISHED) -> None:
        super().__init__()
        channels, out, hidden = sizes.warp_channels, sizes.decoder_out_channels, sizes.spade_hidden
        wide = 2 * channels
        self.fc = nn.Conv2d(channels, wide, kernel_size=3, padding=1)
        for i in range(6):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(wide, wide, channels, hidden))
        self.up_0 = SPADEResnetBlock(wide, channels, channels, hidden)
        self.up_1 = SPADEResnetBlock(channels, out, channels, hidden)
        self.conv_img = nn.Sequential(
            nn.Conv2d(out, 3 * self.UPSCALE**2, kernel_size=3, padding=1),
            nn.PixelShuffle(self.UPSCALE),
        )

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, feature)
        x = self.up_0(F.interpolate(x, scale_factor=2.0, mode="nearest"), feature)
        x = self.up_1(F.interpolate(x, scale_factor=2.0, mode="nearest"), feature)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))


class WarpDecode(nn.Module):
    """W then G in one graph, (feature_3d, kp_source, kp_driving) -> image: what a frame costs,
    exported as one ONNX file so no (B, 256, 64, 64) intermediate crosses back to the host."""

    def __init__(self, warp: nn.Module, decoder: SPADEDecoder) -> None:
        super().__init__()
        self.warp = warp
        self.decoder = decoder

    def forward(
        self, feature_3d: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> torch.Tensor:
        return self.decoder(self.warp(feature_3d, kp_source, kp_driving))
