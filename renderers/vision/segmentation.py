"""Person segmentation with MediaPipe's selfie_segmentation.tflite (the 256x256 "general"
model): the whole image stretched to 256x256 (no letterbox, as MediaPipe feeds it), RGB in
[0, 1]; the model's output is already a probability (sigmoid inside the model)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .geometry import as_rgb
from .models import SELFIE_SEGMENTATION, model

INPUT = 256


def person_mask(rgb: np.ndarray) -> np.ndarray:
    """HxW float32 in [0, 1]: how likely each pixel belongs to a person."""
    rgb = as_rgb(rgb)
    h, w = rgb.shape[:2]
    small = Image.fromarray(np.ascontiguousarray(rgb)).resize(
        (INPUT, INPUT), Image.Resampling.BILINEAR
    )
    tensor = np.asarray(small, dtype=np.float32) * (1.0 / 255.0)
    (raw,) = model(SELFIE_SEGMENTATION)(tensor)
    probability = Image.fromarray(raw.reshape(INPUT, INPUT).astype(np.float32))  # mode "F"
    mask = np.asarray(probability.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    return np.clip(mask, 0.0, 1.0)
