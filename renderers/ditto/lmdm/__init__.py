"""Ditto's LMDM (latent motion diffusion model): audio features to LivePortrait motion.

A window of `seq_frames` (80, 3.2 s at 25 fps) motion vectors of 265 values (scale - 1, pitch,
yaw and roll bins of 66, translation 3, expression 63) is denoised from noise, conditioned on
the previous motion frame (`cond_frame`, 265) and per-frame features (`cond`, 1103: HuBERT 1024,
emotion 8, eye open 2, eye ball 6, the source's canonical keypoints 63).

| module | what |
| --- | --- |
| sizes.py | PUBLISHED (the released widths) and SMALL (narrow, same keys) |
| network.py | `MotionDecoder`, the FiLM transformer, keyed as the released file |
| diffusion.py | the cosine schedule, one guided denoising step and the DDIM-style sampler |
| checkpoint.py | loading `lmdm_v0.4_hubert.pth` strictly, with coded errors |
| random_weights.py | random weights written in the released file layout |
| onnx_export.py | one guided step as ONNX, with the released tensor names |

This package file imports no torch; its modules (but sizes.py) do.
"""
