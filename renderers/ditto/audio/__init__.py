"""Ditto's audio front end: 16 kHz speech -> HuBERT features at 25 fps, framed exactly as
Ditto frames them (framing.py), streamed incrementally (stream.py), with HuBERT in ONNX Runtime
(hubert.py), exported from Hugging Face weights (export.py) or a random stand-in for tests
(random_model.py). Pure compute: numpy at import; onnxruntime, onnx, torch and transformers
only when used."""

from .framing import (
    DEFAULT_CHUNKSIZE,
    DEFAULT_OVERLAP,
    FEATURE_DIM,
    FPS,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    DittoFraming,
    Encoder,
    encoder_frames,
    num_frames,
    offline_features,
    online_features,
    silence_prefill,
)
from .hubert import (
    DIR_ENV,
    EXPORT_FILE,
    HUBERT_FILE,
    HUBERT_RELATIVE,
    DittoAudioError,
    HubertOnnx,
    load_hubert,
    locate_hubert,
)
from .stream import AudioFeatureStream

__all__ = [
    "DEFAULT_CHUNKSIZE",
    "DEFAULT_OVERLAP",
    "DIR_ENV",
    "EXPORT_FILE",
    "FEATURE_DIM",
    "FPS",
    "HUBERT_FILE",
    "HUBERT_RELATIVE",
    "SAMPLES_PER_FRAME",
    "SAMPLE_RATE",
    "AudioFeatureStream",
    "DittoAudioError",
    "DittoFraming",
    "Encoder",
    "HubertOnnx",
    "encoder_frames",
    "load_hubert",
    "locate_hubert",
    "num_frames",
    "offline_features",
    "online_features",
    "silence_prefill",
]
