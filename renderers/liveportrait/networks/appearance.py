"""F, the appearance feature extractor: a 256x256 RGB portrait in [0, 1] -> the feature volume
f_s (B, 32, 16, 64, 64) that the warping module deforms."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import DownBlock2d, ResBlock3d, SameBlock2d
from .sizes import PUBLISHED, VOLUME_CHANNELS, VOLUME_DEPTH, NetworkSizes

PARAMETERS = 836_224


class AppearanceFeatureExtractor(nn.Module):
    def __init__(self, sizes: NetworkSizes = PUBLISHED) -> None:
        super().__init__()
        expansion = sizes.appearance_expansion
        self.first = SameBlock2d(3, expansion)
        # two halvings, 256 -> 64, the width doubling each time
        self.down_blocks = nn.ModuleList(
            [DownBlock2d(expansion, 2 * expansion), DownBlock2d(2 * expansion, 4 * expansion)]
        )
        self.second = nn.Conv2d(4 * expansion, VOLUME_CHANNELS * VOLUME_DEPTH, kernel_size=1)
        # "3dr0".."3dr5": a Sequential with named children, as the releases key them
        self.resblocks_3d = nn.Sequential()
        for i in range(sizes.appearance_res_blocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(VOLUME_CHANNELS))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.first(image)
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        batch, _, height, width = out.shape
        return self.resblocks_3d(out.view(batch, VOLUME_CHANNELS, VOLUME_DEPTH, height, width))
