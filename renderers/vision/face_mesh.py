"""MediaPipe's 478-point face mesh: face_landmark.tflite (468 points) plus
iris_landmark.tflite (5 points per eye), the way MediaPipe's face mesh with refined
landmarks / iris tracking graphs chain them.

1. Face ROI from a detection: the detection box, turned so that the eye keypoints
   (right eye -> left eye) lie on the horizontal, a square of 1.5 x its long side.
2. face_landmark.tflite on that ROI (192x192, RGB in [0, 1]): 468 (x, y, z) in crop
   pixels, mapped back through the ROI. z is in image pixels too (same scale as x; smaller
   is nearer the camera, roughly zero at the face's centre), not a depth in metres.
3. With `refine` (the default) the ROI is computed again from those landmarks, as MediaPipe
   does from one video frame to the next (box of all landmarks, turned by landmarks
   33 -> 263, 1.5 x), and the landmarks are run once more: the face is then centred and
   level in the crop even when the detector's box or eye keypoints were off.
4. Per eye, the box of its two corners turned along them, a square of 2.3 x its long side,
   goes through iris_landmark.tflite (64x64, [0, 1]). That model only knows one eye side;
   MediaPipe feeds it the eye of corners 33/133 as is and the eye of corners 362/263
   mirrored, and mirrors the answer back. Of its outputs only the 5 iris points are used
   (centre first, then four points on the iris edge); the 71 refined eye-contour points are
   dropped, so points 0-467 stay the face model's own.

Order of the 478 points: 0-467 face, 468-472 the iris of the person's right eye (corners
33/133, on the image's left in an unmirrored photo), 473-477 the iris of the left eye
(corners 362/263); in each five the centre comes first. That is MediaPipe's order: its
iris graph concatenates face, "left", "right" iris, naming eyes by image side (its "left"
eye is corners 33/133 and is fed to the model unmirrored); its face-mesh solution names
them by the person's side (FACEMESH_RIGHT_EYE has 33/133, FACEMESH_RIGHT_IRIS 469-472
around centre 468), as this package does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..base import RendererError
from .face_detector import FaceDetection, detect_faces
from .geometry import Roi, as_rgb, crop, roi_around
from .models import FACE_LANDMARK, IRIS_LANDMARK, model

FACE_INPUT = 192
IRIS_INPUT = 64
FACE_SCALE = 1.5
IRIS_SCALE = 2.3

RIGHT_EYE_CORNERS = (33, 133)
"""Outer and inner corner of the person's right eye (image left), iris 468-472."""
LEFT_EYE_CORNERS = (362, 263)
"""Inner and outer corner of the person's left eye (image right), iris 473-477."""

RIGHT_IRIS = slice(468, 473)
LEFT_IRIS = slice(473, 478)
RIGHT_EYE_CONTOUR = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
"""The right eye's lid outline (lower lid outer -> inner, then upper lid back), a polygon."""
LEFT_EYE_CONTOUR = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
"""The left eye's lid outline (lower lid outer -> inner, then upper lid back), a polygon."""


@dataclass(frozen=True)
class FaceMesh:
    points: np.ndarray
    """(478, 3) float32: x, y in image pixels, z relative depth in pixels (see module doc)."""
    presence: float
    """Face-presence score of the landmark model, 0..1 (MediaPipe rejects below 0.5)."""


def roi_from_detection(detection: FaceDetection) -> Roi:
    x0, y0, x1, y1 = detection.box
    corners = np.array([[x0, y0], [x1, y1]], dtype=np.float32)
    right_eye, left_eye = detection.keypoints[0], detection.keypoints[1]
    return roi_around(corners, right_eye, left_eye, FACE_SCALE)


def roi_from_landmarks(points: np.ndarray) -> Roi:
    return roi_around(points[:468, :2], points[33], points[263], FACE_SCALE)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(x, 100.0), -100.0)))


def face_landmarks(rgb: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
    """468 face landmarks (x, y in image pixels, z at the same scale) in `roi` of an RGB
    image, and the model's face-presence score (0..1): one pass, no iris refinement."""
    outputs = model(FACE_LANDMARK)(crop(rgb, roi, FACE_INPUT))
    raw = next(o for o in outputs if o.size == 468 * 3).reshape(468, 3)
    presence = _sigmoid(float(next(o for o in outputs if o.size == 1).ravel()[0]))
    points = np.empty((468, 3), dtype=np.float32)
    points[:, :2] = roi.to_image(raw[:, :2] / FACE_INPUT - 0.5)
    points[:, 2] = raw[:, 2] / FACE_INPUT * roi.size
    return points, presence


def _iris(rgb: np.ndarray, face: np.ndarray, corners: tuple[int, int], mirror: bool):
    start, end = face[corners[0], :2], face[corners[1], :2]
    roi = roi_around(np.stack([start, end]), start, end, IRIS_SCALE)
    outputs = model(IRIS_LANDMARK)(crop(rgb, roi, IRIS_INPUT, flip=mirror))
    raw = next(o for o in outputs if o.size == 5 * 3).reshape(5, 3)
    uv = raw[:, :2] / IRIS_INPUT - 0.5
    if mirror:
        uv[:, 0] = -uv[:, 0]
    iris = np.empty((5, 3), dtype=np.float32)
    iris[:, :2] = roi.to_image(uv)
    # The iris model's depth is relative to its own crop: put it in the face's depth frame
    # at the eye corners' depth, at the face model's scale (pixels).
    iris[:, 2] = raw[:, 2] / IRIS_INPUT * roi.size + face[list(corners), 2].mean()
    return iris


def landmark_presence(rgb: np.ndarray, detection: FaceDetection) -> float:
    """The landmark model's face-presence score on a detection's ROI (one pass)."""
    return face_landmarks(as_rgb(rgb), roi_from_detection(detection))[1]


def face_mesh(
    rgb: np.ndarray, detection: FaceDetection | None = None, *, refine: bool = True
) -> FaceMesh:
    """478 face + iris landmarks of one face.

    `detection`: which face; by default the largest face `detect_faces` finds
    (RendererError 'no_face' when there is none). The presence score is returned, not
    checked: `analyse_portrait` checks it.
    """
    rgb = as_rgb(rgb)
    if detection is None:
        faces = detect_faces(rgb)
        if not faces:
            raise RendererError("no_face", "No face detected in image")
        detection = max(faces, key=lambda f: f.size)
    face, presence = face_landmarks(rgb, roi_from_detection(detection))
    if refine and presence >= 0.5:
        face, presence = face_landmarks(rgb, roi_from_landmarks(face))
    points = np.concatenate(
        [
            face,
            _iris(rgb, face, RIGHT_EYE_CORNERS, mirror=False),
            _iris(rgb, face, LEFT_EYE_CORNERS, mirror=True),
        ]
    )
    return FaceMesh(points=points, presence=presence)
