"""`testcard`: a measurement pattern. Each frame carries a stamp (see pattern.py) with its frame
number, the speech position and level of the audio it belongs to, and shows a level meter a
person can watch move with the voice. Needs no weights and costs about a millisecond a frame."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..base import FrameRequest, Renderer, RendererCapabilities, VideoFormat
from .pattern import Stamp, byte_to_db, draw_stamp, level_to_byte, read_stamp

__all__ = ["TestcardRenderer", "Stamp", "read_stamp", "byte_to_db", "level_to_byte"]

_BARS = np.array(
    [
        [192, 192, 192],
        [192, 192, 0],
        [0, 192, 192],
        [0, 192, 0],
        [192, 0, 192],
        [192, 0, 0],
        [0, 0, 192],
    ],
    dtype=np.uint8,
)


class TestcardRenderer(Renderer):
    __test__ = False  # not a pytest test class despite the name

    name = "testcard"
    capabilities = RendererCapabilities(sample_rate=16000, batch_size=1)

    def __init__(self, video: VideoFormat) -> None:
        super().__init__(video)
        self._background = self._make_background(video.width, video.height)

    @staticmethod
    def _make_background(width: int, height: int) -> np.ndarray:
        frame = np.zeros((height, width, 4), dtype=np.uint8)
        frame[..., 3] = 255
        columns = (np.arange(width) * len(_BARS)) // width
        frame[:, :, :3] = _BARS[columns][None, :, :]
        return frame

    def render(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
        return [self._render_one(request) for request in requests]

    def _render_one(self, request: FrameRequest) -> np.ndarray:
        frame = self._background.copy()
        window = request.own_window()
        rms = float(np.sqrt(np.mean(window.astype(np.float64) ** 2))) if window.size else 0.0
        level = level_to_byte(rms)
        self._draw_meter(frame, level, request.is_speech, request.index)
        draw_stamp(
            frame,
            Stamp(
                frame_index=request.index,
                speech_position=request.speech_position,
                level=level,
                speech=request.is_speech,
                segment=request.segment,
            ),
        )
        return frame

    def _draw_meter(self, frame: np.ndarray, level: int, speech: bool, index: int) -> None:
        height, width = frame.shape[:2]
        # A grey band under the stamp, with a sweeping tick so frozen video is obvious.
        top = height // 4
        bottom = height - height // 8
        frame[top:bottom, :, :3] = 40
        tick = int(index % 30 * width / 30)
        frame[bottom - height // 32 : bottom, tick : tick + max(2, width // 60), :3] = 255
        # The meter: -60 dBFS empty, 0 dBFS full.
        fraction = float(np.clip((byte_to_db(level) + 60.0) / 60.0, 0.0, 1.0))
        meter_top = bottom - int((bottom - top - height // 16) * fraction)
        left, right = width // 3, 2 * width // 3
        colour = (40, 220, 80) if speech else (90, 90, 90)
        frame[meter_top : bottom - height // 32, left:right, 0] = colour[0]
        frame[meter_top : bottom - height // 32, left:right, 1] = colour[1]
        frame[meter_top : bottom - height // 32, left:right, 2] = colour[2]
