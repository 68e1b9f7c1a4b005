"""The Wav2Lip generator, written from the layer specification of Rudrabha/Wav2Lip
(`models/wav2lip.py`, 96 px) and of LiveTalking's 256-px variant (`wav2lip_v2.py`), so that the
published checkpoints load with their own key names (see
../shared/docs/reference/livetalking-wav2lip-musetalk.md, section 2).

The network maps a 16-column mel window and a 6-channel face (lower half masked + reference,
BGR like the training data) to the generated face, 0..1. Each conv block is conv -> batch norm
(-> + input when residual) -> ReLU, registered as `conv_block.0` / `conv_block.1` because that is
what the checkpoints call them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

SUPPORTED_SIZES = (96, 256)
MEL_BINS = 80
MEL_STEPS = 16


@dataclass(frozen=True)
class Block:
    """One conv block: `transpose` uses ConvTranspose2d (decoder upsampling)."""

    cin: int
    cout: int
    kernel: int
    stride: int | tuple[int, int] = 1
    padding: int = 0
    residual: bool = False
    transpose: bool = False
    output_padding: int = 0


def _residuals(channels: int, count: int) -> list[Block]:
    return [Block(channels, channels, 3, 1, 1, residual=True) for _ in range(count)]


def _down(cin: int, cout: int, residuals: int) -> list[Block]:
    """Stride-2 conv that halves the picture, then residual convs at the new width."""
    return [Block(cin, cout, 3, 2, 1), *_residuals(cout, residuals)]


def _up(cin: int, cout: int, residuals: int, kernel: int = 3, stride: int = 2) -> list[Block]:
    """Transposed conv that doubles the picture (or grows 1x1 to kxk), then residual convs."""
    if stride == 1:
        first = Block(cin, cout, kernel, 1, 0, transpose=True)
    else:
        first = Block(cin, cout, kernel, stride, 1, transpose=True, output_padding=1)
    return [first, *_residuals(cout, residuals)]


def face_encoder_spec(size: int) -> list[list[Block]]:
    stages = [
        [Block(6, 16, 7, 1, 3)],
        _down(16, 32, 2),
        _down(32, 64, 3),
        _down(64, 128, 2),
        _down(128, 256, 2),
        _down(256, 512, 1),
    ]
    if size == 96:  # 3x3 -> 1x1
        stages.append([Block(512, 512, 3, 1, 0), Block(512, 512, 1, 1, 0)])
    else:  # 256: one more halving to 4x4, then a 4x4 kernel down to 1x1
        stages.append(_down(512, 512, 1))
        stages.append([Block(512, 512, 4, 1, 0), Block(512, 512, 1, 1, 0)])
    return stages


def audio_encoder_spec() -> list[Block]:
    """80x16 mel -> 512x1x1 embedding (the same in both sizes)."""
    return [
        Block(1, 32, 3, 1, 1),
        *_residuals(32, 2),
        Block(32, 64, 3, (3, 1), 1),
        *_residuals(64, 2),
        Block(64, 128, 3, 3, 1),
        *_residuals(128, 2),
        Block(128, 256, 3, (3, 2), 1),
        *_residuals(256, 1),
        Block(256, 512, 3, 1, 0),
        Block(512, 512, 1, 1, 0),
    ]


def face_decoder_spec(size: int) -> list[list[Block]]:
    """Input channels count the encoder skip concatenated after the previous stage."""
    stages = [[Block(512, 512, 1, 1, 0)]]
    if size == 96:
        stages += [_up(1024, 512, 1, kernel=3, stride=1), _up(1024, 512, 2)]
    else:
        stages += [_up(1024, 512, 1, kernel=4, stride=1), _up(1024, 512, 1), _up(1024, 512, 2)]
    stages += [_up(768, 384, 2), _up(512, 256, 2), _up(320, 128, 2), _up(160, 64, 2)]
    return stages


class ConvBlock(nn.Module):
    def __init__(self, spec: Block) -> None:
        super().__init__()
        conv: nn.Module
        if spec.transpose:
            conv = nn.ConvTranspose2d(
                spec.cin,
                spec.cout,
                spec.kernel,
                spec.stride,
                spec.padding,
                output_padding=spec.output_padding,
            )
        else:
            conv = nn.Conv2d(spec.cin, spec.cout, spec.kernel, spec.stride, spec.padding)
        self.conv_block = nn.Sequential(conv, nn.BatchNorm2d(spec.cout))
        self.residual = spec.residual
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:  # added before the ReLU, as in the original
            out = out + x
        return self.activation(out)


def _sequential(blocks: list[Block]) -> nn.Sequential:
    return nn.Sequential(*(ConvBlock(block) for block in blocks))


class Wav2Lip(nn.Module):
    """Wav2Lip generator for `size` x `size` faces (96: the published model; 256: LiveTalking's)."""

    def __init__(self, size: int = 96) -> None:
        super().__init__()
        if size not in SUPPORTED_SIZES:
            raise ValueError(f"Wav2Lip size must be one of {SUPPORTED_SIZES}, not {size}")
        self.size = size
        self.face_encoder_blocks = nn.ModuleList(_sequential(s) for s in face_encoder_spec(size))
        self.audio_encoder = _sequential(audio_encoder_spec())
        self.face_decoder_blocks = nn.ModuleList(_sequential(s) for s in face_decoder_spec(size))
        self.output_block = nn.Sequential(
            ConvBlock(Block(80, 32, 3, 1, 1)),
            nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0),
            nn.Sigmoid(),
        )

    def forward(self, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """mel (B,1,80,16), faces (B,6,size,size) BGR 0..1 -> (B,3,size,size) BGR 0..1."""
        skips = []
        x = faces
        for block in self.face_encoder_blocks:
            x = block(x)
            skips.append(x)
        x = self.audio_encoder(mel)
        for block in self.face_decoder_blocks:
            # Each decoder stage is joined with the deepest encoder feature not used yet.
            x = torch.cat((block(x), skips.pop()), dim=1)
        return self.output_block(x)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
