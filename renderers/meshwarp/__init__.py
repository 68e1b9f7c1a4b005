"""`meshwarp`: animates a portrait by warping it along its MediaPipe face mesh, driven per frame
by the mouth shape read from the speech audio (mouth.py), idle motion and emotions (motion.py),
through a rig of precomputed warp fields (rig.py) built once per avatar (avatar.py)."""

from .renderer import MeshwarpRenderer

__all__ = ["MeshwarpRenderer"]
