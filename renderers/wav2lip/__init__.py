"""`wav2lip`: an avatar package's video with its mouth re-drawn by the Wav2Lip network
(renderer.py), the avatar preparation that writes LiveTalking's wav2lip package (prepare.py),
the network and its checkpoints (model.py, checkpoint.py), mel features (mel.py) and the
inference back ends (backends.py). Nothing here imports torch at import time: the registry
names `renderers.wav2lip.renderer:Wav2LipRenderer`, which imports it only in `load`."""
