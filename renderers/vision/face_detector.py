"""BlazeFace face detection: MediaPipe's face_detection_short_range.tflite and
face_detection_full_range_sparse.tflite, the second for small or far faces.

Decoding follows the options MediaPipe publishes for these models:

* input: the image letterboxed (aspect ratio kept, centred, black bars) to a square tensor,
  RGB scaled to [-1, 1];
* SSD anchors with a fixed size of 1 and centres at ((x + 0.5) / grid, (y + 0.5) / grid).
  Short range, 128x128: strides 8, 16, 16, 16, two anchors per layer (aspect ratio 1 plus the
  interpolated scale), layers of equal stride share a grid: 16x16x2 + 8x8x6 = 896.
  Full range, 192x192: one layer of stride 4, one anchor per cell: 48x48 = 2304;
* each anchor regresses 16 values: box centre x, y, width, height, then six (x, y)
  keypoints, all in tensor pixels relative to the anchor centre (divide by the tensor size);
* score = sigmoid(raw clipped to +-100), kept at >= 0.5 (short range) / 0.6 (full range);
* weighted non-maximum suppression at IoU 0.3: each kept face is the score-weighted mean of
  the boxes and keypoints it suppresses, with the best score of the group.

`blazeface` is one model, decoded as MediaPipe does. `detect_faces` runs both: the
short-range model (trained on faces within about 2 m: portraits, webcams) and the
full-range one (measured on the astronaut portrait shrunk onto a grey canvas: it finds
faces down to about 6 % of the picture's longer side, ~11 px of its 192 px input, where
the short-range one needs ~10 %; it also finds two portraits side by side, which the
short-range one misses). On small faces the short-range model fires weakly (score
0.5-0.6) on boxes two or three times the face's size, so each candidate is checked the way
MediaPipe's tracking checks a face: the face-landmark model runs on its ROI and must see a
face (presence >= 0.5). Verified full-range candidates are kept from a score of 0.5 rather
than 0.6. Candidates of the two models that are the same face (IoU > 0.3, or one's centre
inside the other's box) are merged into the best-scoring one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from .geometry import as_rgb, letterbox
from .models import FACE_DETECTION_FULL, FACE_DETECTION_SHORT, model

KEYPOINT_NAMES = (
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth",
    "right_ear_tragion",
    "left_ear_tragion",
)
"""Keypoint order. Right/left are the person's own: in an unmirrored photo of a person
facing the camera, the right eye (index 0) is on the image's left."""

NMS_IOU = 0.3
VERIFIED_MIN_SCORE = 0.5


@dataclass(frozen=True)
class FaceDetection:
    box: tuple[float, float, float, float]
    """(x0, y0, x1, y1) in image pixels; may reach past the image edges."""
    score: float
    keypoints: np.ndarray
    """(6, 2) float32 image pixels, in `KEYPOINT_NAMES` order."""

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> float:
        """Face size in pixels: the longer side of the box."""
        return max(self.width, self.height)


@dataclass(frozen=True)
class _Spec:
    model: str
    side: int
    strides: tuple[int, ...]
    anchors_per_layer: int
    min_score: float


_SHORT = _Spec(FACE_DETECTION_SHORT, 128, (8, 16, 16, 16), 2, 0.5)
_FULL = _Spec(FACE_DETECTION_FULL, 192, (4,), 1, 0.6)


@cache
def anchors(side: int, strides: tuple[int, ...], anchors_per_layer: int) -> np.ndarray:
    """(N, 2) anchor centres, normalised to the square input, in the model's output order."""
    centres = []
    i = 0
    while i < len(strides):
        # Consecutive layers with the same stride share one grid; their anchors sit together
        # per cell.
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        grid = -(-side // strides[i])
        per_cell = anchors_per_layer * (j - i)
        t = (np.arange(grid, dtype=np.float32) + 0.5) / grid
        ys, xs = np.meshgrid(t, t, indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cells, per_cell, axis=0))
        i = j
    return np.concatenate(centres)


def _decode(spec: _Spec, regressors: np.ndarray, scores: np.ndarray, min_score: float):
    """Raw outputs -> (boxes (N, 4) x0 y0 x1 y1, keypoints (N, 6, 2), scores (N,)),
    normalised to the square input, only those above the score threshold."""
    raw = regressors.reshape(-1, 16)
    logits = np.clip(scores.reshape(-1).astype(np.float64), -100.0, 100.0)
    prob = 1.0 / (1.0 + np.exp(-logits))
    keep = prob >= min_score
    anchor = anchors(spec.side, spec.strides, spec.anchors_per_layer)
    if len(anchor) != len(raw):
        raise RuntimeError(
            f"{spec.model}: {len(raw)} outputs but {len(anchor)} anchors; model not as expected"
        )
    raw, prob, anchor = raw[keep] / spec.side, prob[keep], anchor[keep]
    centre = raw[:, 0:2] + anchor
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 4:16].reshape(-1, 6, 2) + anchor[:, None, :]
    return boxes, keypoints, prob


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float):
    """Weighted non-maximum suppression; returns [(box, keypoints, score)], best first."""
    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    alive = np.ones(len(scores), dtype=bool)
    kept = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        group = alive & (_iou(boxes[i], boxes) > iou)
        group[i] = True
        alive &= ~group
        weights = scores[group] / scores[group].sum()
        box = (boxes[group] * weights[:, None]).sum(axis=0)
        points = (keypoints[group] * weights[:, None, None]).sum(axis=0)
        kept.append((box, points, float(scores[i])))
    return kept


def _run(spec: _Spec, rgb: np.ndarray, min_score: float | None = None) -> list[FaceDetection]:
    tensor, box = letterbox(rgb, spec.side)
    outputs = model(spec.model)(tensor * 2.0 - 1.0)
    regressors = next(o for o in outputs if o.shape[-1] == 16)
    scores = next(o for o in outputs if o.shape[-1] == 1)
    threshold = spec.min_score if min_score is None else min_score
    boxes, keypoints, prob = _decode(spec, regressors, scores, threshold)
    faces = []
    for b, k, score in weighted_nms(boxes, keypoints, prob, NMS_IOU):
        x0, y0, x1, y1 = (float(c) for c in box.to_image(b.reshape(2, 2)).ravel())
        faces.append(
            FaceDetection(
                box=(x0, y0, x1, y1),
                score=score,
                keypoints=box.to_image(k).astype(np.float32),
            )
        )
    return faces


def blazeface(rgb: np.ndarray, *, full_range: bool = False) -> list[FaceDetection]:
    """One BlazeFace model's faces (no verification), best score first."""
    return _run(_FULL if full_range else _SHORT, as_rgb(rgb))


def _same_face(a: FaceDetection, b: FaceDetection) -> bool:
    def centre_inside(p: FaceDetection, q: FaceDetection) -> bool:
        cx, cy = (p.box[0] + p.box[2]) / 2, (p.box[1] + p.box[3]) / 2
        return q.box[0] <= cx <= q.box[2] and q.box[1] <= cy <= q.box[3]

    overlap = _iou(np.array(a.box), np.array([b.box]))[0]
    return overlap > NMS_IOU or centre_inside(a, b) or centre_inside(b, a)


def detect_faces(rgb: np.ndarray, *, verify: bool = True) -> list[FaceDetection]:
    """Faces in an HxWx3 uint8 RGB image, best score first: both BlazeFace models, each
    candidate confirmed by the face-landmark model unless `verify` is False (see the module
    doc). About 5 ms plus 2 ms per candidate."""
    rgb = as_rgb(rgb)
    # Verified candidates may score a little lower than MediaPipe's full-range threshold
    # (0.6): faces of ~20 px in its input (e.g. four portraits in a 2x2 grid) score 0.55-0.6.
    full_min = VERIFIED_MIN_SCORE if verify else None
    candidates = sorted(_run(_SHORT, rgb) + _run(_FULL, rgb, full_min), key=lambda f: -f.score)
    if verify and candidates:
        from .face_mesh import landmark_presence  # face_mesh imports this module

        candidates = [face for face in candidates if landmark_presence(rgb, face) >= 0.5]
    faces: list[FaceDetection] = []
    for face in candidates:
        if not any(_same_face(face, kept) for kept in faces):
            faces.append(face)
    return faces
