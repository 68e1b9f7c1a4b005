"""Ditto (antgroup/ditto-talkinghead): audio-to-motion diffusion over the LivePortrait modules.

Its parts, each loading the published files unchanged and tested on random weights in their
layouts: `audio` (HuBERT features with Ditto's streaming window arithmetic), `lmdm` (the motion
diffusion network, its checkpoint and the guided DDIM sampler) and `motion` (the 265-dim motion,
the 1103-dim condition, window fusion and smoothing, motion stitching, 25 -> 30 fps resampling).
`renderer.py` joins them over `renderers.liveportrait`'s engine as the `ditto` renderer
(settings from `AVATAR_DITTO_*`: settings.py).
"""
