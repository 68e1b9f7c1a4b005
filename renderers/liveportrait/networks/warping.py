"""W, the warping module: from the source and driving keypoints it predicts a dense 3-D flow
and an occlusion map, deforms the appearance volume f_s with them and flattens the result into
the (B, 256, 64, 64) feature the SPADE decoder paints.

Argument order: `WarpingNetwork.forward(feature, kp_source, kp_driving)`, Ditto's order and
the engine's. LivePortrait's own module takes (feature, kp_driving, kp_source) but its wrapper
always passes them by keyword; the weights are the same either way."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Hourglass, SameBlock2d, coordinate_grid
from .sizes import NUM_KP, PUBLISHED, VOLUME_CHANNELS, VOLUME_DEPTH, NetworkSizes

PARAMETERS = 45_529_829
KP_VARIANCE = 0.01
"""Width of the Gaussian blob drawn around each keypoint in the motion heatmaps."""


def gaussian_heatmaps(kp: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(B, K, 3) keypoints on a (D, H, W, 3) grid -> (B, K, D, H, W) Gaussian blobs."""
    offsets = grid[None, None] - kp[:, :, None, None, None, :]
    return torch.exp(-0.5 * offsets.pow(2).sum(-1) / KP_VARIANCE)


class DenseMotionNetwork(nn.Module):
    """Per-voxel mixture of K+1 candidate flows (identity + one rigid shift per keypoint),
    weighted by a softmax mask that a 3-D hourglass predicts from the candidates' deformed
    features and the keypoints' heatmaps; plus the occlusion map."""

    LEVELS = 5
    """Hourglass levels: 64x64 halves to 2x2 at the bottom."""

    def __init__(self, sizes: NetworkSizes = PUBLISHED) -> None:
        super().__init__()
        self.num_kp = NUM_KP
        compress = sizes.flow_compress
        inputs = (NUM_KP + 1) * (compress + 1)  # per candidate: its warped features + heatmap
        self.hourglass = Hourglass(sizes.flow_expansion, inputs, self.LEVELS, sizes.flow_max)
        width = self.hourglass.out_channels
        kernel = sizes.flow_mask_kernel
        self.mask = nn.Conv3d(width, NUM_KP + 1, kernel_size=kernel, padding=kernel // 2)
        self.compress = nn.Conv3d(VOLUME_CHANNELS, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress)
        self.occlusion = nn.Conv2d(width * VOLUME_DEPTH, 1, kernel_size=7, padding=3)

    def forward(
        self, feature: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> deformation (B, D, H, W, 3) for grid_sample, occlusion (B, 1, H, W) in 0..1."""
        batch, _, depth, height, width = feature.shape
        parts = self.num_kp + 1
        small = F.relu(self.norm(self.compress(feature)))  # (B, c, D, H, W)
        grid = coordinate_grid(depth, height, width, kp_source)
        # candidate k reads the source at x - kp_driving[k] + kp_source[k]; candidate 0 at x
        shifts = kp_source - kp_driving  # (B, K, 3)
        flows = grid[None, None] + shifts[:, :, None, None, None, :]
        identity = grid.expand(batch, 1, depth, height, width, 3)
        flows = torch.cat([identity, flows], dim=1)  # (B, K+1, D, H, W, 3)
        # every candidate sampled in one call: the K+1 grids stacked along depth
        stacked = flows.reshape(batch, parts * depth, height, width, 3)
        deformed = F.grid_sample(small, stacked, align_corners=False)  # (B, c, (K+1)D, H, W)
        deformed = deformed.view(batch, -1, parts, depth, height, width).transpose(1, 2)
        heat = gaussian_heatmaps(kp_driving, grid) - gaussian_heatmaps(kp_source, grid)
        heat = torch.cat([torch.zeros_like(heat[:, :1]), heat], dim=1)  # background: none
        inputs = torch.cat([heat.unsqueeze(2), deformed], dim=2)  # (B, K+1, c+1, D, H, W)
        prediction = self.hourglass(inputs.reshape(batch, -1, depth, height, width))

        weights = F.softmax(self.mask(prediction), dim=1)  # (B, K+1, D, H, W)
        deformation = (flows * weights.unsqueeze(-1)).sum(dim=1)
        occlusion = torch.sigmoid(self.occlusion(prediction.flatten(1, 2)))
        return deformation, occlusion


class WarpingNetwork(nn.Module):
    def __init__(self, sizes: NetworkSizes = PUBLISHED) -> None:
        super().__init__()
        self.dense_motion_network = DenseMotionNetwork(sizes)
        width = sizes.warp_channels
        self.third = SameBlock2d(VOLUME_CHANNELS * VOLUME_DEPTH, width, leaky=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1)

    def forward(
        self, feature: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> torch.Tensor:
        """f_s (B, 32, 16, 64, 64), kps (B, 21, 3) -> (B, 256, 64, 64), occlusion applied."""
        deformation, occlusion = self.dense_motion_network(feature, kp_source, kp_driving)
        warped = F.grid_sample(feature, deformation, align_corners=False)
        out = self.fourth(self.third(warped.flatten(1, 2)))
        return out * occlusion
