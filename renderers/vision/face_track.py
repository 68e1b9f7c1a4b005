"""One face box for every frame of a video, from BlazeFace run on a fraction of the frames.

* Sampling: `detect_faces` runs on every `stride`-th frame (0, stride, 2*stride, ...) and on
  the last frame, each shrunk to at most `DETECT_MAX_SIDE` pixels (the detectors letterbox
  to 128 and 192 pixels anyway; boxes are mapped back to full-size pixels), on a couple of
  threads while the caller's thread goes on decoding.
* Between two samples the face is interpolated linearly when it barely moved (centre and
  size within `STEADY_CHANGE` of the face's size) and was found in both; otherwise every
  frame in between is detected too. A talking head mostly sits still, so most frames cost
  nothing, and boxes stay right when it moves.
* Which face: in a frame with several, the one overlapping the previous frame's face most
  (IoU > 0.2), else the largest.
* Frames where no face was found get a box from their neighbours: linear between the
  nearest frames with a face before and after, or the nearest one at either end.

The samples are kept (`FaceTrack.samples`) so callers can apply their own rules, e.g. how
many sampled frames showed no face or several faces. Faces smaller than `COMPARABLE_FACE`
of a sample's largest face (people far in the background) are not counted as "several".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .face_detector import FaceDetection, _iou, detect_faces
from .video import Frame

DETECT_MAX_SIDE = 640
DETECT_THREADS = 2
LOOKAHEAD = 2
"""Samples detected ahead of the interval being settled."""
STEADY_CHANGE = 0.1
COMPARABLE_FACE = 0.5
TRACK_IOU = 0.2


@dataclass(frozen=True)
class Sample:
    """The faces found on one sampled frame, in full-size frame pixels."""

    index: int
    faces: tuple[FaceDetection, ...]
    """Every face found, best score first."""
    main: FaceDetection | None
    """The tracked face (None when there was none)."""

    @property
    def comparable_faces(self) -> int:
        """Faces at least `COMPARABLE_FACE` times the size of the largest one."""
        if not self.faces:
            return 0
        largest = max(face.size for face in self.faces)
        return sum(face.size >= COMPARABLE_FACE * largest for face in self.faces)


@dataclass(frozen=True)
class FaceTrack:
    boxes: np.ndarray
    """(frames, 4) float64 (x0, y0, x1, y1) in frame pixels, one per frame; may reach past
    the frame's edges as detections do. NaN everywhere only when no frame had a face."""
    found: np.ndarray
    """(frames,) bool: the box was detected on that frame, or interpolated between two
    detections of a steady face; False where it was filled in from neighbours."""
    samples: tuple[Sample, ...]
    stride: int
    detections: int
    """How many frames `detect_faces` ran on (samples and the frames between them)."""

    @property
    def frame_count(self) -> int:
        return len(self.boxes)


def track_faces(
    frames: Iterable[Frame],
    *,
    stride: int,
    on_frame: Callable[[int], None] | None = None,
    threads: int = DETECT_THREADS,
) -> FaceTrack:
    """Follow the face through `frames` (see the module doc). `on_frame(index)` is called, in
    order, as each frame is done with; an exception it raises stops the tracking.

    Detection runs on `threads` threads (each has its own interpreters; LiteRT runs without
    the GIL) while this one keeps decoding: samples are detected as soon as they are decoded,
    a couple of them ahead of the one whose interval is being settled."""
    if stride < 1:
        raise ValueError("stride must be at least 1")
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="faces") as pool:
        tracker = _Tracker(pool, on_frame)
        try:
            pending: deque[tuple[Frame, Future[tuple[FaceDetection, ...]], list[Frame]]] = deque()
            waiting: list[Frame] = []  # decoded frames since the last sample
            last: Frame | None = None
            for frame in frames:
                last = frame
                if frame.index % stride:
                    waiting.append(frame)
                    continue
                pending.append((frame, pool.submit(_faces_in, frame), waiting))
                waiting = []
                while len(pending) > LOOKAHEAD:
                    tracker.settle(*pending.popleft())
            if waiting and last is not None:
                # The last frame is always sampled, so the frames before it have two ends.
                waiting.pop()
                pending.append((last, pool.submit(_faces_in, last), waiting))
            while pending:
                tracker.settle(*pending.popleft())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return FaceTrack(
        boxes=_fill_gaps(tracker.boxes),
        found=np.array(tracker.found, dtype=bool),
        samples=tuple(tracker.samples),
        stride=stride,
        detections=tracker.detections,
    )


class _Tracker:
    """Boxes for the frames, settled one interval between two samples at a time, in order."""

    def __init__(self, pool: ThreadPoolExecutor, on_frame: Callable[[int], None] | None) -> None:
        self._pool = pool
        self._on_frame = on_frame
        self.boxes: list[np.ndarray | None] = []
        self.found: list[bool] = []
        self.samples: list[Sample] = []
        self.detections = 0

    def settle(
        self, frame: Frame, faces: Future[tuple[FaceDetection, ...]], between: list[Frame]
    ) -> None:
        """The frames `between` the previous sample and this one (`frame`), then its own."""
        detected = faces.result()
        self.detections += 1
        previous = self.samples[-1] if self.samples else None
        sample = Sample(frame.index, detected, _main_face(detected, _last_box(self.boxes)))
        a = previous.main if previous is not None else None
        b = sample.main
        if between and previous is not None and a is not None and b is not None and _steady(a, b):
            span = sample.index - previous.index
            for other in between:
                t = (other.index - previous.index) / span
                self._add((1 - t) * np.array(a.box) + t * np.array(b.box), other.index)
        elif between and (a is not None or b is not None):
            # The face moved, appeared or went: detect every frame in between.
            jobs = [self._pool.submit(_faces_in, other) for other in between]
            chain = None if a is None else np.array(a.box)
            for other, job in zip(between, jobs, strict=True):
                self.detections += 1
                main = _main_face(job.result(), chain)
                box = None if main is None else np.array(main.box)
                self._add(box, other.index)
                chain = box if box is not None else chain
        else:  # no face at either end: the frames between are taken as faceless
            for other in between:
                self._add(None, other.index)
        self.samples.append(sample)
        self._add(None if b is None else np.array(b.box), sample.index)

    def _add(self, box: np.ndarray | None, index: int) -> None:
        self.boxes.append(box)
        self.found.append(box is not None)
        if self._on_frame is not None:
            self._on_frame(index)


def _faces_in(frame: Frame) -> tuple[FaceDetection, ...]:
    small = frame.rgb(DETECT_MAX_SIDE)
    full_width = frame.width
    scale = full_width / small.shape[1]
    faces = detect_faces(small)
    if scale == 1.0:
        return tuple(faces)
    return tuple(
        FaceDetection(
            box=tuple(float(v) * scale for v in face.box),
            score=face.score,
            keypoints=face.keypoints * np.float32(scale),
        )
        for face in faces
    )


def _main_face(faces: tuple[FaceDetection, ...], prior: np.ndarray | None) -> FaceDetection | None:
    if not faces:
        return None
    if prior is not None:
        overlaps = _iou(prior, np.array([face.box for face in faces]))
        best = int(np.argmax(overlaps))
        if overlaps[best] > TRACK_IOU:
            return faces[best]
    return max(faces, key=lambda face: face.size)


def _steady(a: FaceDetection, b: FaceDetection) -> bool:
    size = max(a.size, b.size)
    centre_a = np.array([(a.box[0] + a.box[2]) / 2, (a.box[1] + a.box[3]) / 2])
    centre_b = np.array([(b.box[0] + b.box[2]) / 2, (b.box[1] + b.box[3]) / 2])
    moved = float(np.abs(centre_b - centre_a).max())
    return moved <= STEADY_CHANGE * size and abs(a.size - b.size) <= STEADY_CHANGE * size


def _last_box(boxes: list[np.ndarray | None]) -> np.ndarray | None:
    for box in reversed(boxes):
        if box is not None:
            return box
    return None


def _fill_gaps(boxes: list[np.ndarray | None]) -> np.ndarray:
    """Missing boxes, linearly from the nearest known ones (held at either end)."""
    out = np.full((len(boxes), 4), np.nan)
    known = [i for i, box in enumerate(boxes) if box is not None]
    if not known:
        return out
    for i in known:
        out[i] = boxes[i]
    index = np.arange(len(boxes))
    for column in range(4):
        out[:, column] = np.interp(index, known, out[known, column])
    return out
