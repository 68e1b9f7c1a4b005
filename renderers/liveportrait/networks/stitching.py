"""S and R: three small MLPs over keypoints. The stitching MLP sees the source and driving
keypoints (126) and returns a correction (63 + tx, ty) that keeps the face's border where the
source had it, so the crop pastes back without a seam; the lip (65 in) and eye (66 in)
retargeting MLPs turn a source's keypoints and open-ness ratios into a keypoint delta (63).

Each is `mlp.N` Linear layers with ReLUs between (N = 0, 2, 4, ...), as the releases key them
once their DDP `module.` prefix is stripped."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

PARAMETERS = 227_263
STITCHING = (126, (128, 128, 64), 65)
LIP = (65, (128, 128, 64), 63)
EYE = (66, (256, 256, 128, 128, 64), 63)
"""(inputs, hidden widths, outputs) of each MLP, from LivePortrait's models.yaml."""


class KeypointMLP(nn.Module):
    def __init__(self, inputs: int, hidden: Sequence[int], outputs: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = inputs
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, outputs))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def stitching_mlp() -> KeypointMLP:
    return KeypointMLP(STITCHING[0], STITCHING[1], STITCHING[2])


def lip_mlp() -> KeypointMLP:
    return KeypointMLP(LIP[0], LIP[1], LIP[2])


def eye_mlp() -> KeypointMLP:
    return KeypointMLP(EYE[0], EYE[1], EYE[2])


class Stitch(nn.Module):
    """(kp_source, kp_driving) (B, 21, 3) -> kp_driving corrected: the MLP's first 63 outputs
    added to every keypoint, its last two (tx, ty) to every keypoint's x and y."""

    def __init__(self, mlp: KeypointMLP) -> None:
        super().__init__()
        self.net = mlp

    def forward(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        batch, count, _ = kp_source.shape
        delta = self.net(torch.cat([kp_source.flatten(1), kp_driving.flatten(1)], dim=1))
        exp = delta[:, : 3 * count].reshape(batch, count, 3)
        shift = delta[:, 3 * count : 3 * count + 2]
        shift = torch.cat([shift, torch.zeros_like(shift[:, :1])], dim=1)  # z untouched
        return kp_driving + exp + shift[:, None, :]


class Retarget(nn.Module):
    """(kp_source (B, 21, 3), ratios (B, n)) -> keypoint delta (B, 21, 3)."""

    def __init__(self, mlp: KeypointMLP) -> None:
        super().__init__()
        self.net = mlp

    def forward(self, kp_source: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
        batch, count, _ = kp_source.shape
        delta = self.net(torch.cat([kp_source.flatten(1), ratios], dim=1))
        return delta.reshape(batch, count, 3)
