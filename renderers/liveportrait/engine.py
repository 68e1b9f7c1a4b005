"""The interface the liveportrait renderer is written against: numpy in, numpy out, float32,
batch first (any B >= 1), whichever back end runs the networks.

    appearance(image (B,3,256,256) RGB in [0,1])          -> f_s (B,32,16,64,64)
    motion(image)                                           -> MotionInfo
    warp_decode(f_s, kp_source (B,21,3), kp_driving (B,21,3)) -> (B,3,512,512) RGB in [0,1]
    stitch(kp_source, kp_driving)      -> kp_driving + the stitching MLP's delta (exp, tx, ty)
    retarget_lip(kp_source, (B,2) [source lip ratio, target])          -> delta (B,21,3)
    retarget_eye(kp_source, (B,3) [source eye L, source eye R, target]) -> delta (B,21,3)

Back ends: engine_torch.py (CPU; CUDA with fp16 autocast), engine_onnx.py (ONNX Runtime on
the project's own export; imports no torch once exported) and engine_tensorrt.py. Importing
this module imports neither torch nor onnxruntime."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..base import RendererError
from ..model_settings import installed
from .networks.sizes import NUM_KP, VOLUME_CHANNELS, VOLUME_DEPTH
from .settings import LivePortraitSettings

logger = logging.getLogger(__name__)

IMAGE_SIZE = 256
OUTPUT_SIZE = 512
FEATURE_SHAPE = (VOLUME_CHANNELS, VOLUME_DEPTH, 64, 64)


@dataclass(frozen=True)
class MotionInfo:
    """The motion extractor's reading of a batch of portraits."""

    pitch: np.ndarray
    yaw: np.ndarray
    roll: np.ndarray
    """(B,) degrees each, the expectation over the 66 pose bins, as LivePortrait reads them."""
    t: np.ndarray
    """(B, 3) translation; only tx, ty move the keypoints."""
    exp: np.ndarray
    """(B, 21, 3) expression deformation."""
    scale: np.ndarray
    """(B, 1)."""
    kp: np.ndarray
    """(B, 21, 3) canonical keypoints."""
    pose_logits: np.ndarray | None = None
    """(B, 3, 66) the raw pitch, yaw and roll bin logits the degrees were read from, when the
    engine keeps them (Ditto's motion vector carries logits, not degrees); None otherwise."""


class LivePortraitEngine(Protocol):
    backend: str
    """'torch', 'onnx' or 'tensorrt': what actually runs."""
    device: str
    """'cpu' or 'cuda:N'."""
    fp16: bool
    has_lip_retargeting: bool
    has_eye_retargeting: bool

    def appearance(self, image: np.ndarray) -> np.ndarray: ...

    def motion(self, image: np.ndarray) -> MotionInfo: ...

    def warp_decode(
        self, feature: np.ndarray, kp_source: np.ndarray, kp_driving: np.ndarray
    ) -> np.ndarray: ...

    def stitch(self, kp_source: np.ndarray, kp_driving: np.ndarray) -> np.ndarray: ...

    def retarget_lip(self, kp_source: np.ndarray, lip_ratios: np.ndarray) -> np.ndarray: ...

    def retarget_eye(self, kp_source: np.ndarray, eye_ratios: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


class BackendUnavailableError(RendererError):
    def __init__(self, message: str) -> None:
        super().__init__("backend_unavailable", message)


def retargeting_missing(part: str) -> RendererError:
    """Raised by retarget_lip / retarget_eye when the checkpoint has no such network."""
    key = {"lip": "retarget_mouth", "eye": "retarget_eye"}[part]
    return RendererError(
        "retargeting_unavailable",
        f"this checkpoint's stitching file has no {part} retargeting network ({key}); "
        f"check has_{part}_retargeting before asking for it",
    )


# --- input checks shared by the back ends ---------------------------------------------------


def _array(value: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """`value` as C-contiguous float32 after checking its shape (-1: the batch, any >= 1)."""
    array = np.ascontiguousarray(value, dtype=np.float32)
    expected = "(B, " + ", ".join(str(n) for n in shape[1:]) + ")"
    if array.ndim != len(shape) or array.shape[0] < 1 or array.shape[1:] != shape[1:]:
        raise ValueError(f"{what} must be {expected}, got {array.shape}")
    return array


def check_images(image: np.ndarray) -> np.ndarray:
    return _array(image, (-1, 3, IMAGE_SIZE, IMAGE_SIZE), "image")


def check_feature(feature: np.ndarray) -> np.ndarray:
    return _array(feature, (-1, *FEATURE_SHAPE), "feature")


def check_keypoints(*keypoints: np.ndarray) -> list[np.ndarray]:
    arrays = [_array(kp, (-1, NUM_KP, 3), "keypoints") for kp in keypoints]
    _same_batch(arrays)
    return arrays


def check_ratios(kp_source: np.ndarray, ratios: np.ndarray, width: int) -> list[np.ndarray]:
    arrays = [
        _array(kp_source, (-1, NUM_KP, 3), "kp_source"),
        _array(ratios, (-1, width), "ratios"),
    ]
    _same_batch(arrays)
    return arrays


def check_warp_inputs(
    feature: np.ndarray, kp_source: np.ndarray, kp_driving: np.ndarray
) -> list[np.ndarray]:
    arrays = [check_feature(feature), *check_keypoints(kp_source, kp_driving)]
    _same_batch(arrays)
    return arrays


def _same_batch(arrays: list[np.ndarray]) -> None:
    sizes = {array.shape[0] for array in arrays}
    if len(sizes) > 1:
        raise ValueError(f"batch sizes differ: {sorted(sizes)}")


def motion_info(outputs: list[np.ndarray]) -> MotionInfo:
    """MotionInfo from the motion graph's outputs in MOTION_OUTPUTS order, optionally followed
    by the raw pitch, yaw and roll logits (B, 66) each, which become `pose_logits`."""
    arrays = [np.asarray(o, dtype=np.float32) for o in outputs]
    pitch, yaw, roll, t, exp, scale, kp = arrays[:7]
    batch = pitch.shape[0]
    logits = None
    if len(arrays) == 10:
        logits = np.stack([a.reshape(batch, -1) for a in arrays[7:]], axis=1)
    return MotionInfo(
        pitch=pitch.reshape(batch),
        yaw=yaw.reshape(batch),
        roll=roll.reshape(batch),
        t=t.reshape(batch, 3),
        exp=exp.reshape(batch, NUM_KP, 3),
        scale=scale.reshape(batch, 1),
        kp=kp.reshape(batch, NUM_KP, 3),
        pose_logits=logits,
    )


class GraphEngine:
    """An engine over exported graphs (onnx_files.GRAPHS: ONNX Runtime sessions, TensorRT
    engines): the checks and the graph each call runs; subclasses say how a graph runs."""

    has_lip_retargeting: bool
    has_eye_retargeting: bool

    def _run(self, graph: str, *arrays: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def appearance(self, image: np.ndarray) -> np.ndarray:
        return self._run("appearance", check_images(image))[0]

    def motion(self, image: np.ndarray) -> MotionInfo:
        return motion_info(self._run("motion", check_images(image)))

    def warp_decode(
        self, feature: np.ndarray, kp_source: np.ndarray, kp_driving: np.ndarray
    ) -> np.ndarray:
        return self._run("warp_decode", *check_warp_inputs(feature, kp_source, kp_driving))[0]

    def stitch(self, kp_source: np.ndarray, kp_driving: np.ndarray) -> np.ndarray:
        return self._run("stitching", *check_keypoints(kp_source, kp_driving))[0]

    def retarget_lip(self, kp_source: np.ndarray, lip_ratios: np.ndarray) -> np.ndarray:
        if not self.has_lip_retargeting:
            raise retargeting_missing("lip")
        return self._run("lip", *check_ratios(kp_source, lip_ratios, 2))[0]

    def retarget_eye(self, kp_source: np.ndarray, eye_ratios: np.ndarray) -> np.ndarray:
        if not self.has_eye_retargeting:
            raise retargeting_missing("eye")
        return self._run("eye", *check_ratios(kp_source, eye_ratios, 3))[0]


# --- choosing and loading -------------------------------------------------------------------


def _usable_device(settings: LivePortraitSettings, backend: str) -> str:
    """settings.resolved_device(), except that `auto` falls back to the CPU when the GPU the
    driver suggests cannot be used by `backend` (torch sees none, ONNX Runtime lacks CUDA)."""
    device = settings.resolved_device()
    if settings.device != "auto" or not device.startswith("cuda"):
        return device
    if backend == "onnx":
        if not installed("onnxruntime"):
            return "cpu"  # OnnxEngine then says what is missing
        import onnxruntime as ort

        usable = "CUDAExecutionProvider" in ort.get_available_providers()
    else:
        import torch

        usable = torch.cuda.is_available()
    return device if usable else "cpu"


def load_engine(settings: LivePortraitSettings) -> LivePortraitEngine:
    """The engine `settings` ask for, with the checkpoint set loaded.

    `auto`: TensorRT when installed on a GPU (falling back to torch if it cannot build the
    graphs), else torch on a GPU; on a CPU settings.CPU_AUTO_BACKEND (torch; ONNX Runtime
    when torch is not installed). Raises RendererError: 'checkpoint_not_found' or
    'invalid_checkpoint' for the files, 'backend_unavailable' for a back end that cannot run
    here."""
    from .checkpoint import locate

    files = locate(settings.directory_or_raise())
    backend = settings.resolved_backend()
    device = _usable_device(settings, backend)
    fp16 = settings.resolved_fp16() and device.startswith("cuda")
    cache = settings.engine_cache()
    if backend == "tensorrt":
        from .engine_tensorrt import TensorRTEngine

        try:
            return TensorRTEngine.load(files, cache, device=device, fp16=fp16)
        except BackendUnavailableError as error:
            if settings.backend != "auto":
                raise
            logger.warning("liveportrait: TensorRT unavailable (%s); using torch", error.message)
            backend = "torch"
    if backend == "torch":
        if not installed("torch"):
            raise BackendUnavailableError("the torch back end needs torch, which is not installed")
        from .engine_torch import TorchEngine

        return TorchEngine.load(files, device=device, fp16=fp16)
    if backend == "onnx":
        from .engine_onnx import OnnxEngine

        return OnnxEngine.load(files, cache, device=device)
    raise BackendUnavailableError(f"unknown liveportrait back end {backend!r}")
