"""The wav2lip avatar package, as LiveTalking's `avatars/wav2lip/genavatar.py` lays it out
(the RunPod contract, seed 000):

    coords.pkl              pickled list of (y1, y2, x1, x2) int tuples, one per frame
    full_imgs/00000000.png  every frame of the video, as decoded (no watermark)
    face_imgs/00000000.png  frame[y1:y2, x1:x2] resized to face_size x face_size
    avatar.json             avatar_id, model, fps, width, height, num_frames, face_size,
                            version (and pads, smoothing_window)

The boxes follow LiveTalking's preprocessing: the face box (here BlazeFace's, from the face
track) clipped at 0 and rounded down to whole pixels, padded by PADS = [top 0, bottom 10,
left 0, right 0] and clamped to the frame, then smoothed over time (each box the mean of
itself and the next four, the last ones the mean of the final five) and rounded down again.
The crop is resized with OpenCV's bilinear `resize`, as LiveTalking does; PNGs hold exactly
the decoded pixels.

Frames are PNG-encoded on a small thread pool (renderers/vision/png.py releases the GIL)
while this thread decodes the next ones; at most a few frames are in flight, so memory does
not grow with the video's length.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import cv2
import numpy as np

from ..preparation import (
    PackageWriter,
    PreparationSource,
    ProgressCallback,
    frame_name,
    manifest,
    smooth_boxes,
)
from ..vision.png import encode_png
from ..vision.video import iter_frames

PADS = (0, 10, 0, 0)
"""top, bottom, left, right (LiveTalking's and Wav2Lip's default)."""
SMOOTHING_WINDOW = 5
ENCODE_THREADS = max(1, min(4, os.cpu_count() or 1))
IN_FLIGHT = 2 * ENCODE_THREADS + 2


def face_coords(
    boxes: np.ndarray, width: int, height: int, pads: tuple[int, int, int, int] = PADS
) -> list[tuple[int, int, int, int]]:
    """(N, 4) face boxes (x0, y0, x1, y1) -> LiveTalking's smoothed (y1, y2, x1, x2) crops,
    plain Python ints, each at least one pixel inside the frame."""
    top, bottom, left, right = pads
    box = np.floor(np.clip(np.asarray(boxes, dtype=np.float64), 0, None))
    padded = np.stack(
        [
            np.maximum(0, box[:, 0] - left),
            np.maximum(0, box[:, 1] - top),
            np.minimum(width, box[:, 2] + right),
            np.minimum(height, box[:, 3] + bottom),
        ],
        axis=1,
    )
    smooth = np.floor(smooth_boxes(padded, SMOOTHING_WINDOW)).astype(np.int64)
    coords = []
    for x1, y1, x2, y2 in smooth.tolist():
        x1, y1 = min(x1, width - 1), min(y1, height - 1)
        coords.append((y1, max(y2, y1 + 1), x1, max(x2, x1 + 1)))
    return coords


def write_package(
    package: PackageWriter, source: PreparationSource, progress: ProgressCallback
) -> int:
    info, face_size = source.info, source.limits.face_size
    coords = face_coords(source.track.boxes, info.width, info.height)
    total = max(1, len(coords))
    package.add_dir("full_imgs")
    package.add_dir("face_imgs")
    written: list[tuple[int, int, int, int]] = []
    pending: deque[tuple[int, Future[tuple[bytes, bytes]]]] = deque()

    def flush(keep: int) -> None:
        while len(pending) > keep:
            index, job = pending.popleft()
            full, face = job.result()
            package.add_bytes(frame_name("full_imgs", index), full)
            package.add_bytes(frame_name("face_imgs", index), face)
            progress(min(1.0, (index + 1) / total), "writing frames")

    with ThreadPoolExecutor(ENCODE_THREADS, thread_name_prefix="png") as pool:
        try:
            for frame in iter_frames(source.path, info):
                # A decoder may give a frame more or less than the face pass did: the
                # extra ones reuse the last box, and coords.pkl lists the frames written.
                y1, y2, x1, x2 = coords[min(frame.index, len(coords) - 1)]
                rgb = frame.rgb()
                pending.append(
                    (frame.index, pool.submit(_encode, rgb, (y1, y2, x1, x2), face_size))
                )
                written.append((y1, y2, x1, x2))
                flush(IN_FLIGHT)
            flush(0)
        finally:
            for _, job in pending:
                job.cancel()
    package.add_pickle("coords.pkl", written)
    package.add_json(
        "avatar.json",
        manifest(
            source,
            "wav2lip",
            len(written),
            face_size=face_size,
            pads=list(PADS),
            smoothing_window=SMOOTHING_WINDOW,
        ),
    )
    return len(written)


def _encode(rgb: np.ndarray, box: tuple[int, int, int, int], face_size: int) -> tuple[bytes, bytes]:
    y1, y2, x1, x2 = box
    face = cv2.resize(rgb[y1:y2, x1:x2], (face_size, face_size), interpolation=cv2.INTER_LINEAR)
    return encode_png(rgb), encode_png(face)
