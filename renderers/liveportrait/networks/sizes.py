"""The widths and depths the networks are built with. PUBLISHED is the released architecture;
SMALL keeps every interface shape (256 input, a (32, 16, 64, 64) feature volume, 21
keypoints, a 512 output) with far narrower layers, for tests and quick benchmarks that run the
real code paths on a CPU in milliseconds. No weights are published at SMALL size; the loader
recognises it by its first layer's width."""

from __future__ import annotations

from dataclasses import dataclass

NUM_KP = 21
VOLUME_CHANNELS = 32
VOLUME_DEPTH = 16
"""f_s is (B, VOLUME_CHANNELS, VOLUME_DEPTH, 64, 64) for a 256x256 input."""


@dataclass(frozen=True)
class NetworkSizes:
    name: str
    appearance_expansion: int = 64
    appearance_res_blocks: int = 6
    motion_depths: tuple[int, int, int, int] = (3, 3, 9, 3)
    motion_widths: tuple[int, int, int, int] = (96, 192, 384, 768)
    flow_expansion: int = 32
    """The dense motion hourglass: width of its first level, doubling down to flow_max."""
    flow_max: int = 1024
    flow_compress: int = 4
    """Channels f_s is compressed to before the K+1 candidate warps."""
    flow_mask_kernel: int = 7
    warp_expansion: int = 64
    """The warped feature handed to the decoder has 4 x warp_expansion channels."""
    decoder_out_channels: int = 64
    spade_hidden: int = 128

    @property
    def warp_channels(self) -> int:
        return 4 * self.warp_expansion


PUBLISHED = NetworkSizes("published")
SMALL = NetworkSizes(
    "small",
    appearance_expansion=8,
    appearance_res_blocks=1,
    motion_depths=(1, 1, 1, 1),
    motion_widths=(8, 16, 32, 64),
    flow_expansion=4,
    flow_max=32,
    flow_compress=1,
    flow_mask_kernel=1,
    warp_expansion=4,
    decoder_out_channels=8,
    spade_hidden=16,
)
SIZES = {sizes.name: sizes for sizes in (PUBLISHED, SMALL)}
