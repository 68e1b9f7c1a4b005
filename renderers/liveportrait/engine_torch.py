"""The torch back end: the networks in eager mode, float32 on the CPU; on CUDA under fp16
autocast for F, M, W and G (as LivePortrait's and Ditto's own wrappers run them), the MLPs in
float32."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from .checkpoint import CheckpointFiles, LoadedNetworks, load_networks
from .engine import (
    BackendUnavailableError,
    MotionInfo,
    check_images,
    check_keypoints,
    check_ratios,
    check_warp_inputs,
    motion_info,
    retargeting_missing,
)
from .networks.motion import MotionOutputs
from .networks.spade import WarpDecode
from .networks.stitching import Retarget, Stitch


class TorchEngine:
    backend = "torch"

    def __init__(self, networks: LoadedNetworks, *, device: str = "cpu", fp16: bool = False):
        on_gpu = device.startswith("cuda")
        if on_gpu and not torch.cuda.is_available():
            raise BackendUnavailableError(f"device {device!r} asked for, but torch sees no GPU")
        self.device = "cuda:0" if device == "cuda" else device
        self.fp16 = bool(fp16 and on_gpu)  # autocast fp16 exists for CUDA only
        self.networks = networks
        self.has_lip_retargeting = networks.lip is not None
        self.has_eye_retargeting = networks.eye is not None
        target = torch.device(self.device)
        self._appearance = networks.appearance.to(target).eval()
        self._motion = MotionOutputs(networks.motion, with_pose_logits=True).to(target).eval()
        self._warp_decode = WarpDecode(networks.warp, networks.decoder).to(target).eval()
        self._stitch = Stitch(networks.stitching).to(target).eval()
        self._lip = Retarget(networks.lip).to(target).eval() if networks.lip else None
        self._eye = Retarget(networks.eye).to(target).eval() if networks.eye else None
        self._target = target

    @classmethod
    def load(
        cls, files: CheckpointFiles, *, device: str = "cpu", fp16: bool = False
    ) -> TorchEngine:
        return cls(load_networks(files), device=device, fp16=fp16)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.fp16:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self._target, non_blocking=True)

    @staticmethod
    def _numpy(tensor: torch.Tensor) -> np.ndarray:
        return tensor.float().cpu().numpy()

    def appearance(self, image: np.ndarray) -> np.ndarray:
        image = check_images(image)
        with torch.inference_mode(), self._autocast():
            return self._numpy(self._appearance(self._tensor(image)))

    def motion(self, image: np.ndarray) -> MotionInfo:
        image = check_images(image)
        with torch.inference_mode(), self._autocast():
            outputs = self._motion(self._tensor(image))
        return motion_info([self._numpy(output) for output in outputs])

    def warp_decode(
        self, feature: np.ndarray, kp_source: np.ndarray, kp_driving: np.ndarray
    ) -> np.ndarray:
        inputs = [self._tensor(a) for a in check_warp_inputs(feature, kp_source, kp_driving)]
        with torch.inference_mode(), self._autocast():
            return self._numpy(self._warp_decode(*inputs))

    def stitch(self, kp_source: np.ndarray, kp_driving: np.ndarray) -> np.ndarray:
        inputs = [self._tensor(a) for a in check_keypoints(kp_source, kp_driving)]
        with torch.inference_mode():
            return self._numpy(self._stitch(*inputs))

    def retarget_lip(self, kp_source: np.ndarray, lip_ratios: np.ndarray) -> np.ndarray:
        if self._lip is None:
            raise retargeting_missing("lip")
        inputs = [self._tensor(a) for a in check_ratios(kp_source, lip_ratios, 2)]
        with torch.inference_mode():
            return self._numpy(self._lip(*inputs))

    def retarget_eye(self, kp_source: np.ndarray, eye_ratios: np.ndarray) -> np.ndarray:
        if self._eye is None:
            raise retargeting_missing("eye")
        inputs = [self._tensor(a) for a in check_ratios(kp_source, eye_ratios, 3)]
        with torch.inference_mode():
            return self._numpy(self._eye(*inputs))

    def close(self) -> None:
        """Drop the networks; on CUDA hand their memory back to the driver."""
        for name in ("_appearance", "_motion", "_warp_decode", "_stitch", "_lip", "_eye"):
            setattr(self, name, None)
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
