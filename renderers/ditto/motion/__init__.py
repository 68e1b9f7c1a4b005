"""Ditto's motion space in numpy: the 265-dim motion vector (motion.py), the LMDM's per-frame
condition (condition.py), motion stitching onto a source portrait (stitch.py), and the window
bookkeeping around the LMDM plus 25 -> 30 fps resampling (windows.py). Pure compute: no
networks, no torch."""
