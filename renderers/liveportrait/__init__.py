"""`liveportrait`: a portrait animated by LivePortrait's networks, compatible with the
published checkpoints (LivePortrait's `pretrained_weights/liveportrait/` or Ditto's
`ditto_pytorch/models/`).

The networks (networks/), their checkpoint loader (checkpoint.py) and random test weights in
the published layouts (random_weights.py); the engine the renderer drives (engine.py) with its
torch, ONNX Runtime and TensorRT back ends (engine_*.py, onnx_export.py); the keypoint
arithmetic (keypoint_math.py); settings from `AVATAR_LIVEPORTRAIT_*` (settings.py).

Importing this package imports neither torch nor onnxruntime: the registry and health checks
import it on machines without them."""
