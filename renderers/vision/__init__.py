"""MediaPipe's face models in-process, on LiteRT (ai-edge-litert), CPU, one thread each.

* `detect_faces(rgb)`: BlazeFace boxes, scores and 6 keypoints.
* `face_mesh(rgb, detection=None)`: the 478-point mesh (468 face + 2 x 5 iris points, in
  MediaPipe's index order).
* `person_mask(rgb)`: selfie segmentation, HxW float32 in [0, 1].
* `analyse_portrait(rgb)`: the mesh of the one face of an avatar portrait, or a
  RendererError with a stable code (no_face, multiple_faces, image_too_small,
  face_too_small).
* `load_image(path_or_bytes)`: PNG / JPEG / WebP as HxWx3 uint8 RGB (unsupported_format,
  corrupt_image).

Images are HxWx3 uint8 RGB numpy arrays; coordinates are image pixels. The .tflite files
come from the mediapipe 0.10.14 wheel, fetched once by `python -m avatar_runtime
download-files` (download.py) into a cache outside the package (see models.py); the mediapipe
package itself is not used (its protobuf pin clashes with livekit's).
Every call is synchronous CPU work of a few milliseconds: keep it off the event loop.
Interpreters are per thread, so calls from several threads are safe.
"""

from .face_detector import KEYPOINT_NAMES, FaceDetection, detect_faces
from .face_mesh import (
    LEFT_EYE_CONTOUR,
    LEFT_IRIS,
    RIGHT_EYE_CONTOUR,
    RIGHT_IRIS,
    FaceMesh,
    face_mesh,
)
from .models import models_dir
from .portrait import analyse_portrait, load_image
from .segmentation import person_mask

__all__ = [
    "KEYPOINT_NAMES",
    "LEFT_EYE_CONTOUR",
    "LEFT_IRIS",
    "RIGHT_EYE_CONTOUR",
    "RIGHT_IRIS",
    "FaceDetection",
    "FaceMesh",
    "analyse_portrait",
    "detect_faces",
    "face_mesh",
    "load_image",
    "models_dir",
    "person_mask",
]
