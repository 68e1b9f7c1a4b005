"""Background replacement for the frames of any renderer.

`Compositor.apply(frame, background)` puts the person of an RGBA frame in front of a new
background: out = mask * frame + (1 - mask) * background, alpha 255.

The person mask is the frame's alpha channel when the renderer declares
`capabilities.alpha_is_person_mask`, else MediaPipe's selfie segmentation run on a copy of the
frame scaled down to the model's 256 pixels. The mask is smoothed over time (an exponential
moving average, restarted when the background or the frame size changes) so its edge does not
flicker, and feathered by a small blur.

Synchronous CPU work of a few milliseconds (see tests/test_compositor.py for the costs).
`BackgroundStage` runs it as the publisher's last step before a picture is sent. One
Compositor serves one stream of frames and keeps state between them, so calls must not
overlap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import cv2
import numpy as np
from livekit import rtc

from renderers.vision import person_mask

from .backgrounds import ORIGINAL_BACKGROUND, Background, BackgroundLibrary, parse_background

logger = logging.getLogger("avatar_runtime")

SEGMENTATION_SIZE = 256
"""Longest side of the copy segmentation runs on (the model's own input is 256x256)."""


class Compositor:
    def __init__(
        self,
        width: int,
        height: int,
        library: BackgroundLibrary | None,
        *,
        mask_from_alpha: bool,
        smoothing: float = 0.5,
        feather_px: float | None = None,
    ) -> None:
        """`smoothing`: the weight of the previous mask in the moving average (0: none).
        `feather_px`: sigma of the edge blur at frame size (default: 1 pixel per 512)."""
        if not 0.0 <= smoothing < 1.0:
            raise ValueError("smoothing must be in [0, 1)")
        self.width = width
        self.height = height
        self.library = library
        self.mask_from_alpha = mask_from_alpha
        self.smoothing = smoothing
        self.feather_px = feather_px if feather_px is not None else max(width, height) / 512.0
        self._resolved: tuple[str, Background] | None = None
        self._mask: np.ndarray | None = None  # the smoothed mask, at the size it is made at
        self._mask_for: tuple[str, int, int] | None = None  # (spec, width, height) of _mask
        self._colors: dict[tuple[tuple[int, int, int], int, int], np.ndarray] = {}
        self._picture: tuple[np.ndarray, np.ndarray] | None = None  # library RGB, as RGBA

    def resolve(self, spec: str) -> Background:
        """`parse_background(spec, library)`, remembered for the last spec so that reading the
        current spec on every frame costs nothing. ValueError for an unknown spec."""
        resolved = self._resolved
        if resolved is not None and resolved[0] == spec:
            return resolved[1]
        background = parse_background(spec, self.library)
        self._resolved = (spec, background)
        return background

    def apply(self, frame: np.ndarray, background: Background) -> np.ndarray:
        """The frame (HxWx4 uint8 RGBA) over `background`, as a new HxWx4 uint8 array with
        alpha 255. `original` only makes the alpha opaque (without segmenting), and returns
        the frame itself when it already is. The input is never modified."""
        if background.is_original:
            self.reset()  # a later background starts from a fresh mask, not a stale one
            return self._opaque(frame)
        height, width = frame.shape[:2]
        mask = self._person_mask(frame, background.spec)
        if background.kind == "blur":
            backdrop = self._blurred(frame, mask)
        elif background.kind == "color":
            assert background.color is not None
            backdrop = self._solid(background.color, width, height)
        elif background.kind == "image":
            if self.library is None:
                raise KeyError(background.image_id)
            assert background.image_id is not None
            backdrop = self._image(background.image_id, width, height)
        else:
            raise ValueError(f"unknown background kind {background.kind!r}")
        # Blends all four channels (C++, multi-threaded); the alpha is set opaque afterwards.
        out = cv2.blendLinear(frame, backdrop, mask, 1.0 - mask)
        out[..., 3] = 255
        return out

    def reset(self) -> None:
        """Forget the smoothed mask (the next frame's mask is taken as it is)."""
        self._mask = None
        self._mask_for = None

    # -- the mask ----------------------------------------------------------------------------

    def _person_mask(self, frame: np.ndarray, spec: str) -> np.ndarray:
        """HxW float32 in [0, 1], smoothed over time and feathered."""
        height, width = frame.shape[:2]
        feather = self.feather_px
        if self.mask_from_alpha:
            raw = frame[..., 3].astype(np.float32) * np.float32(1.0 / 255.0)
        else:
            scale = SEGMENTATION_SIZE / max(width, height)
            if scale < 1.0:
                size = (max(1, round(width * scale)), max(1, round(height * scale)))
                small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            else:
                small = frame
            raw = person_mask(np.ascontiguousarray(small[..., :3]))
            # The model's probabilities fade out over many pixels: firm up the middle of the
            # ramp so the inside is exactly person and the outside exactly background.
            raw = np.clip((raw - 0.2) * (1.0 / 0.6), 0.0, 1.0, out=raw)
            feather *= raw.shape[1] / width  # in the small mask's pixels

        key = (spec, width, height)
        if self._mask is not None and self._mask_for == key and self.smoothing > 0.0:
            mask = cv2.addWeighted(raw, 1.0 - self.smoothing, self._mask, self.smoothing, 0.0)
        else:
            mask = raw
        self._mask, self._mask_for = mask, key

        if feather > 0.25:
            mask = cv2.GaussianBlur(mask, (0, 0), feather)
        if mask.shape != (height, width):
            mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)
        return mask

    # -- backgrounds -------------------------------------------------------------------------

    def _blurred(self, frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The frame's own background, heavily blurred, worked out at 1/8 of the size.

        The blur is weighted by the background part of the mask (a normalised convolution), so
        the person's colours do not bleed into it as a halo; where the person covers everything
        nearby, the plain blur fills in.
        """
        height, width = frame.shape[:2]
        small_size = (max(1, width // 8), max(1, height // 8))
        small = cv2.resize(frame, small_size, interpolation=cv2.INTER_AREA).astype(np.float32)
        weight = 1.0 - cv2.resize(mask, small_size, interpolation=cv2.INTER_AREA)
        sigma = max(small_size) / 24.0 + 1.0
        plain = cv2.GaussianBlur(small, (0, 0), sigma)
        weighted = cv2.GaussianBlur(small * weight[..., None], (0, 0), sigma)
        coverage = cv2.GaussianBlur(weight, (0, 0), sigma)[..., None]
        share = np.clip(coverage * 10.0, 0.0, 1.0)  # how much of the weighted blur to trust
        blurred = weighted / np.maximum(coverage, 1e-3) * share + plain * (1.0 - share)
        blurred = np.clip(blurred, 0.0, 255.0).astype(np.uint8)
        return cv2.resize(blurred, (width, height), interpolation=cv2.INTER_LINEAR)

    def _solid(self, color: tuple[int, int, int], width: int, height: int) -> np.ndarray:
        key = (color, width, height)
        solid = self._colors.get(key)
        if solid is None:
            if len(self._colors) > 8:
                self._colors.clear()
            solid = np.empty((height, width, 4), dtype=np.uint8)
            solid[...] = (*color, 255)
            solid.flags.writeable = False
            self._colors[key] = solid
        return solid

    def _image(self, image_id: str, width: int, height: int) -> np.ndarray:
        rgb = self.library.image(image_id, width, height)  # type: ignore[union-attr]
        if self._picture is None or self._picture[0] is not rgb:
            # The library hands out the same array until the image or the size changes.
            rgba = np.empty((height, width, 4), dtype=np.uint8)
            rgba[..., :3] = rgb
            rgba[..., 3] = 255
            rgba.flags.writeable = False
            self._picture = (rgb, rgba)
        return self._picture[1]

    def _opaque(self, frame: np.ndarray) -> np.ndarray:
        if not self.mask_from_alpha and frame[..., 3].min() == 255:
            return frame
        out = frame.copy()
        out[..., 3] = 255
        return out


__all__ = ["ORIGINAL_BACKGROUND", "Compositor"]


class BackgroundStage:
    """A Compositor as the last step of the frame path: each picture over the background that
    is current when the picture is sent (`background()` returns its spec).

    It runs on the event loop, right before the frame's slot (the pacer starts it early by its
    cost): 0.1 ms for `original`, about 1.5 ms for a colour or image behind a renderer's own
    person mask and about 6 ms with segmentation, at 512x512 (tests/test_compositor.py). On
    the loop, not a thread: segmenting on a worker thread beside the LiveKit SDK's own threads
    crashed the process now and then (a segfault inside liblivekit_ffi, about one test run in
    six), and inline it never did. A failure (say, a background image deleted while shown) is
    logged once and pictures go out as drawn.
    """

    def __init__(self, compositor: Compositor, background: Callable[[], str]) -> None:
        self._compositor = compositor
        self._background = background
        self._failing = False

    def composite(self, pixels: np.ndarray) -> np.ndarray:
        """`pixels` (HxWx4 RGBA) over the current background; `pixels` itself on failure."""
        compositor = self._compositor
        try:
            result = compositor.apply(pixels, compositor.resolve(self._background()))
        except Exception:
            if not self._failing:
                logger.exception("background compositing failed; sending frames without it")
                self._failing = True
            return pixels
        if self._failing:
            logger.info("background compositing works again")
            self._failing = False
        return result

    async def finish_frame(self, frame: rtc.VideoFrame) -> rtc.VideoFrame:
        """`composite` for an RGBA VideoFrame (the pacer's finishing step)."""
        pixels = np.frombuffer(frame.data, dtype=np.uint8).reshape(frame.height, frame.width, 4)
        result = self.composite(pixels)
        if result is pixels:
            return frame
        return rtc.VideoFrame(
            frame.width, frame.height, rtc.VideoBufferType.RGBA, np.ascontiguousarray(result).data
        )
