"""LivePortrait's five networks, rebuilt from their published layer shapes so that the released
`.pth` files load with strict `load_state_dict` and unchanged key names:

| module | network | published parameters |
| --- | --- | --- |
| appearance.py | F, the appearance feature extractor | 836,224 |
| motion.py | M, the ConvNeXt-V2-tiny motion extractor and its heads | 28,118,728 |
| warping.py | W, dense motion + warping | 45,529,829 |
| spade.py | G, the SPADE decoder | 55,365,388 |
| stitching.py | S, the stitching and the lip and eye retargeting MLPs | 227,263 |

blocks.py holds the pieces several of them share. Every module here imports torch; the package
above does not, so import these only where torch is wanted.
"""
