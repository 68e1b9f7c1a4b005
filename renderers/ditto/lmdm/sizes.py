"""The widths and depths `MotionDecoder` is built with. PUBLISHED is the released network
(47,788,297 parameters); SMALL keeps every key, every depth and every interface shape (motion
265, condition 1103, 80 frames) with narrow layers, for tests that run the real code on a CPU
in milliseconds. The loader tells them apart by the latent width."""

from __future__ import annotations

from dataclasses import dataclass

MOTION_DIM = 265
"""scale - 1 (1), pitch, yaw, roll bins (66 each), translation (3), expression (63)."""
COND_DIM = 1103
"""HuBERT (1024) + emotion (8) + eye open (2) + eye ball (6) + source keypoints (63)."""
SEQ_FRAMES = 80
"""Frames in one window (3.2 s at 25 fps)."""
CHECKPOINT_NAME = "lmdm_v0.4_hubert.pth"


@dataclass(frozen=True)
class LMDMSizes:
    name: str
    latent: int = 512
    feedforward: int = 1024
    decoder_layers: int = 8
    encoder_layers: int = 2
    heads: int = 8
    motion_dim: int = MOTION_DIM
    cond_dim: int = COND_DIM
    seq_frames: int = SEQ_FRAMES


PUBLISHED = LMDMSizes("published")
SMALL = LMDMSizes("small", latent=32, feedforward=64, heads=2)
SIZES = {sizes.name: sizes for sizes in (PUBLISHED, SMALL)}
PUBLISHED_PARAMETERS = 47_788_297
