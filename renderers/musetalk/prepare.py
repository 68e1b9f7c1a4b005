"""The MuseTalk avatar package (seed 000's layout, as MuseTalk 1.5's and LiveTalking's
`genavatar.py` write it), from the training video and its face track:

    full_imgs/00000000.png  every frame, as decoded (no watermark)
    coords.pkl              pickled list of [x1, y1, x2, y2] int face boxes, one per frame
    latents.pt              torch.save'd list of (1, 8, 32, 32) float16 tensors: the VAE latent
                            of the 256x256 face crop with its lower half zeroed, then that of
                            the whole crop (x 0.18215, sampled from the posterior as MuseTalk
                            does, from a fixed seed)
    mask/00000000.png       grayscale blending mask over the frame's crop box
    mask_coords.pkl         pickled list of the crop boxes [x1, y1, x2, y2]
    avator_info.json        {avatar_id, video_path, bbox_shift, version: "v15"} (the seed's
                            spelling of "avatar")
    avatar.json             the project's manifest (as every package of ours has)

The face box is MuseTalk's (musetalk/utils/preprocessing.py get_landmark_and_bbox) from
MediaPipe's face mesh instead of DWPose's 68 points: x from the leftmost to the rightmost jaw
point, y2 the chin's lowest point, the "half face" point the nose bridge (MediaPipe 5 for
68-point 29) moved down by `bbox_shift`, and y1 as far above it as the chin is below; with
v1.5's `extra_margin` of 10 pixels added below the chin. A box that comes out empty or off
the frame's left falls back to the face detector's box, as MuseTalk falls back to S3FD's.

The mask follows MuseTalk's get_image_prepare_material with face parsing in v1.5's "jaw"
mode, the parsing coming from MediaPipe instead of BiSeNet (whose weights are not available
here): see `jaw_mask`. The crop box is the square of half-side max(w, h) // 2 * 1.5 around the
face box's centre; the parsing is kept only inside the face box and below the crop box's
middle, then blurred with a Gaussian of kernel int(0.1 * side // 2 * 2) + 1.

The VAE comes from AVATAR_MUSETALK_DIR's sd-vae/ (settings.py); preparation fails with
`models_missing` when it is not there.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..base import RendererError
from ..preparation import (
    PackageWriter,
    PreparationError,
    PreparationSource,
    ProgressCallback,
    frame_name,
    manifest,
)
from ..vision.png import encode_png
from ..vision.video import iter_frames

if TYPE_CHECKING:
    from .networks import FaceEncoder

FACE_SIZE = 256
EXTRA_MARGIN = 10
"""v1.5: pixels added below the chin."""
CROP_EXPAND = 1.5
UPPER_BOUNDARY_RATIO = 0.5
PARSING_SIDE = 512
"""BiSeNet parses the crop at 512x512; the jaw-mode kernels are sized for that."""
CHEEK_WIDTH = 90
"""v1.5's left_cheek_width / right_cheek_width."""
VERSION = "v15"
LATENT_BATCH = 8
LATENT_SEED = 0

# MediaPipe face-mesh points standing in for the 68-point ones MuseTalk reads.
JAW = (127, 234, 93, 132, 58, 172, 136, 150, 152, 379, 365, 397, 288, 361, 323, 454, 356)
"""68-point 0-16, the jaw line from the right ear to the left."""
CHIN = 152
HALF_FACE = 5
"""68-point 29, the lower nose bridge."""
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip
NOSE = (
    168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 97, 326, 98, 327, 129, 358, 49, 279, 48, 278, 64,
    294, 219, 439, 218, 438, 237, 457, 44, 274, 45, 275, 220, 440, 115, 344, 131, 360, 102, 331,
)  # fmt: skip
"""The nose's points; their hull is what BiSeNet labels nose (class 10)."""
LIPS = (
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185,
)  # fmt: skip
"""The lips' outer outline (BiSeNet's classes 11-13: mouth, upper and lower lip)."""


def muse_box(
    points: np.ndarray, shift: int, width: int, height: int
) -> tuple[int, int, int, int] | None:
    """MuseTalk's face box [x1, y1, x2, y2] from face-mesh `points` (pixels, truncated to
    integers as MuseTalk truncates its landmarks), v1.5's extra margin included; None when
    MuseTalk would fall back to the detector's box."""
    jaw = points[list(JAW), :2].astype(np.int32)
    chin_y = max(int(jaw[:, 1].max()), int(points[CHIN, 1]))
    half_y = int(points[HALF_FACE, 1]) + shift
    y1 = max(0, half_y - (chin_y - half_y))
    x1, x2 = int(jaw[:, 0].min()), int(jaw[:, 0].max())
    if chin_y - y1 <= 0 or x2 - x1 <= 0 or x1 < 0:
        return None
    return x1, y1, min(x2, width), min(chin_y + EXTRA_MARGIN, height)


def crop_box(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """MuseTalk's get_crop_box(box, 1.5)."""
    x, y, x1, y1 = box
    xc, yc = (x + x1) // 2, (y + y1) // 2
    s = int(max(x1 - x, y1 - y) // 2 * CROP_EXPAND)
    return xc - s, yc - s, xc + s, yc + s


def _kernels() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FaceParsing's jaw-mode kernels: a downward cone (21 rows) with a 12-row tail, the
    flat cheek erosion ellipse, and the mask of the cheeks (outside the middle 2 x 90 px)."""
    cone, tail = 21, 12
    size = cone + tail
    kernel = np.zeros((size, size), dtype=np.uint8)
    centre = size // 2
    for row in range(cone // 2, cone):
        width = 2 * (row - cone // 2) + 1
        kernel[row, centre - width // 2 : centre + width // 2 + 1] = 1
    base = int(kernel[cone - 1].sum())
    kernel[cone:, max(0, centre - base // 2) : min(size, centre + base // 2 + 1)] = 1
    cheek_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (35, 3))
    cheeks = np.zeros((PARSING_SIDE, PARSING_SIDE), dtype=np.uint8)
    middle = PARSING_SIDE // 2
    cheeks[:, : middle - CHEEK_WIDTH + 1] = 255
    cheeks[:, middle + CHEEK_WIDTH :] = 255
    return kernel, cheek_kernel, cheeks


_KERNEL, _CHEEK_KERNEL, _CHEEKS = _kernels()


def jaw_mask(
    points: np.ndarray, crop: tuple[int, int, int, int], person: np.ndarray | None
) -> np.ndarray:
    """FaceParsing's "jaw" mode at 512x512 over `crop`, from MediaPipe instead of BiSeNet:

    * face skin (BiSeNet class 1) -> the face-mesh oval, less the lips and nose it contains;
    * dilated by the downward cone (the mask reaches below the chin), eroded sideways over
      the cheeks (outside the middle 180 px), exactly as FaceParsing does;
    * the nose (class 10) taken out again, the lips and mouth (11-13) put in;
    * and, with `person` (MediaPipe's selfie segmentation over the crop, 0..1), cut to the
      person, which BiSeNet's classes are by nature (the dilation may otherwise reach past
      the chin into the background).

    uint8 0/255, PARSING_SIDE square."""
    x0, y0, x1, y1 = crop
    scale = PARSING_SIDE / max(1, x1 - x0)

    def polygon(indices: tuple[int, ...], hull: bool = False) -> np.ndarray:
        pts = (points[list(indices), :2] - (x0, y0)) * scale
        pts = np.round(pts).astype(np.int32)
        return cv2.convexHull(pts) if hull else pts

    def filled(pts: np.ndarray) -> np.ndarray:
        out = np.zeros((PARSING_SIDE, PARSING_SIDE), dtype=np.uint8)
        cv2.fillPoly(out, [pts], 255)
        return out

    lips, nose = filled(polygon(LIPS)), filled(polygon(NOSE, hull=True))
    skin = filled(polygon(FACE_OVAL)) & ~lips & ~nose
    dilated = cv2.dilate(skin, _KERNEL, iterations=1)
    eroded = cv2.erode(dilated, _CHEEK_KERNEL, iterations=2)
    face = (eroded & _CHEEKS) | (dilated & ~_CHEEKS)
    mask = np.where((face == 255) & (nose == 0), 255, 0).astype(np.uint8) | lips
    if person is not None:
        inside = cv2.resize(person, (PARSING_SIDE, PARSING_SIDE), interpolation=cv2.INTER_LINEAR)
        mask[inside < 0.5] = 0
    return mask


def blend_mask(
    parsing: np.ndarray, box: tuple[int, int, int, int], crop: tuple[int, int, int, int]
) -> np.ndarray:
    """get_image_prepare_material: the parsing (PARSING_SIDE square) resized to the crop, kept
    inside the face box and below the crop's middle, blurred. uint8, crop-sized."""
    x, y, x1, y1 = box
    xs, ys, xe, ye = crop
    side = xe - xs
    full = cv2.resize(parsing, (side, ye - ys), interpolation=cv2.INTER_LINEAR)
    mask = np.zeros_like(full)
    mask[y - ys : y1 - ys, x - xs : x1 - xs] = full[y - ys : y1 - ys, x - xs : x1 - xs]
    mask[: int((ye - ys) * UPPER_BOUNDARY_RATIO)] = 0
    kernel = int(0.1 * side // 2 * 2) + 1
    return cv2.GaussianBlur(mask, (kernel, kernel), 0)


def _crop_rgb(rgb: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
    """rgb over `crop`, black past the frame's edges (PIL's crop)."""
    x0, y0, x1, y1 = crop
    h, w = rgb.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0, 3), dtype=np.uint8)
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if fx1 > fx0 and fy1 > fy0:
        out[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0] = rgb[fy0:fy1, fx0:fx1]
    return out


class _Landmarks:
    """Face-mesh points frame after frame, as MediaPipe tracks them: the ROI of each frame
    from the previous frame's points, a new detection only when the face is lost."""

    def __init__(self) -> None:
        self._last: np.ndarray | None = None

    def __call__(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        from ..vision.face_detector import detect_faces
        from ..vision.face_mesh import face_landmarks, face_mesh, roi_from_landmarks

        if self._last is not None:
            points, presence = face_landmarks(rgb, roi_from_landmarks(self._last))
            if presence >= 0.5:
                self._last = points
                return points
        self._last = None
        faces = detect_faces(rgb)
        if not faces:
            return None
        if np.all(np.isfinite(box)):  # the tracked face, not someone else's
            centre = (box[:2] + box[2:]) / 2
            face = min(faces, key=lambda f: _distance(f.box, centre))
        else:
            face = max(faces, key=lambda f: f.size)
        mesh = face_mesh(rgb, face)
        if mesh.presence < 0.5:
            return None
        self._last = mesh.points[:468]
        return self._last


def _distance(box: tuple[float, ...] | np.ndarray, centre: np.ndarray) -> float:
    x0, y0, x1, y1 = box
    return float(np.hypot((x0 + x1) / 2 - centre[0], (y0 + y1) / 2 - centre[1]))


def _fallback_box(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (int(v) for v in np.nan_to_num(box))
    x0, y0 = min(max(0, x0), width - 1), min(max(0, y0), height - 1)
    return x0, y0, max(x0 + 1, min(x1, width)), max(y0 + 1, min(y1 + EXTRA_MARGIN, height))


def load_face_encoder() -> FaceEncoder:
    """The VAE's encoder from AVATAR_MUSETALK_DIR, or PreparationError('models_missing')."""
    from .settings import MuseTalkSettings

    try:
        settings = MuseTalkSettings.from_env()
    except RendererError as error:
        raise PreparationError("models_missing", error.message) from None
    reason = settings.missing(vae_only=True)
    if reason is not None:
        raise PreparationError(
            "models_missing", f"MuseTalk preparation needs the sd-vae-ft-mse VAE: {reason}"
        )
    from .networks import FaceEncoder, load_vae

    config, weights = settings.vae_files()
    assert config is not None and weights is not None
    try:
        vae = load_vae(config, weights)
    except RendererError as error:
        raise PreparationError("models_missing", error.message) from None
    return FaceEncoder(
        vae, device=settings.resolved_device(), fp16=settings.resolved_fp16(), seed=LATENT_SEED
    )


def write_package(
    package: PackageWriter, source: PreparationSource, progress: ProgressCallback
) -> int:
    import torch

    from ..vision.segmentation import person_mask
    from .settings import MuseTalkSettings

    shift = MuseTalkSettings.from_env().bbox_shift
    encoder = load_face_encoder()
    info = source.info
    boxes = source.track.boxes
    total = max(1, len(boxes))
    track = _Landmarks()
    package.add_dir("full_imgs")
    package.add_dir("mask")
    coords: list[list[int]] = []
    crops: list[list[int]] = []
    latents: list[torch.Tensor] = []
    pending: list[np.ndarray] = []

    def encode(keep: int) -> None:
        while len(pending) > keep:
            batch, pending[:] = pending[:LATENT_BATCH], pending[LATENT_BATCH:]
            out = encoder.latents(np.stack(batch))
            latents.extend(t[None].to(torch.float16).clone() for t in out)

    for frame in iter_frames(source.path, info):
        rgb = frame.rgb()
        height, width = rgb.shape[:2]
        track_box = boxes[min(frame.index, len(boxes) - 1)]
        points = track(rgb, track_box)
        box = muse_box(points, shift, width, height) if points is not None else None
        if box is None:
            box = _fallback_box(track_box, width, height)
        crop = crop_box(box)
        if points is not None:
            around = _crop_rgb(rgb, crop)
            parsing = jaw_mask(points, crop, person_mask(around))
        else:  # no landmarks: the lower half of the face box, as an ellipse
            parsing = _box_parsing(box, crop)
        mask = blend_mask(parsing, box, crop)
        x1, y1, x2, y2 = box
        face = cv2.resize(
            rgb[y1:y2, x1:x2], (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LANCZOS4
        )
        pending.append(face)
        encode(LATENT_BATCH - 1)
        index = len(coords)
        package.add_bytes(frame_name("full_imgs", index), encode_png(rgb))
        package.add_bytes(frame_name("mask", index), _png_gray(mask))
        coords.append([x1, y1, x2, y2])
        crops.append(list(crop))
        progress(min(1.0, (index + 1) / total), "writing frames")
    encode(0)
    package.add_pickle("coords.pkl", coords)
    package.add_pickle("mask_coords.pkl", crops)
    buffer = io.BytesIO()
    torch.save(latents, buffer)
    package.add_bytes("latents.pt", buffer.getvalue())
    package.add_json(
        "avator_info.json",
        {
            "avatar_id": source.avatar_id,
            "video_path": Path(source.path).name,
            "bbox_shift": shift,
            "version": VERSION,
        },
    )
    package.add_json(
        "avatar.json",
        manifest(
            source,
            "musetalk",
            len(coords),
            face_size=FACE_SIZE,
            bbox_shift=shift,
            extra_margin=EXTRA_MARGIN,
            parsing="mediapipe-jaw",
            musetalk_version=VERSION,
        ),
    )
    return len(coords)


def _box_parsing(box: tuple[int, int, int, int], crop: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = crop
    scale = PARSING_SIDE / max(1, x1 - x0)
    bx0, by0, bx1, by1 = ((v - o) * scale for v, o in zip(box, (x0, y0, x0, y0), strict=True))
    out = np.zeros((PARSING_SIDE, PARSING_SIDE), dtype=np.uint8)
    centre = (int((bx0 + bx1) / 2), int(by0 + (by1 - by0) * 0.7))
    axes = (int((bx1 - bx0) * 0.4), int((by1 - by0) * 0.3))
    cv2.ellipse(out, centre, axes, 0, 0, 360, 255, -1)
    return out


def _png_gray(mask: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", mask)
    assert ok
    return data.tobytes()
