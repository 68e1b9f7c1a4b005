"""The meshwarp avatar package: one portrait picked from the training video.

    portrait.png   the chosen frame, whole, as decoded
    idle.mp4       (meshwarp) the video's own frames around the chosen one, at most
                   `IDLE_SECONDS` and `IDLE_MAX_SIDE` px, H.264: the idle loop the renderer
                   plays forward and back under the animated face (see loop.py); framed
                   like portrait.png (the same picture, scaled by at most a constant)
    avatar.json    avatar_id, model, fps, width, height, num_frames, version, plus
                   portrait (the file name) and source_frame (its index in the video), and
                   for meshwarp idle_clip (the clip's file name), idle_first_frame (the
                   video frame it starts with) and idle_frames (how many it holds)

Extracted into the avatars directory as `<avatar_id>/`, it is what `prepare_avatar` in
avatar.py loads when given that directory (see vision/source.py).

Which frame: among the sampled frames with exactly one face, the one with the best
`frontal_score(keypoints) * sharpness`, of those the meshwarp renderer accepts
(`analyse_portrait`: one face, large enough). Frontal: BlazeFace's nose tip halfway between
its eyes (no yaw) and the eyes level (no roll). Sharpness: the variance of the Laplacian of
the face, resized to 128x128 so that a bigger face does not win by size alone.
"""

from __future__ import annotations

import io
import math
from fractions import Fraction

import cv2
import numpy as np

from ..base import RendererError
from ..preparation import (
    PackageWriter,
    PreparationError,
    PreparationSource,
    ProgressCallback,
    manifest,
)
from ..vision import analyse_portrait
from ..vision.face_track import Sample
from ..vision.png import encode_png
from ..vision.source import PACKAGE_PORTRAIT
from ..vision.video import iter_frames
from .avatar import PACKAGE_VIDEO as PACKAGE_IDLE_CLIP

IDLE_SECONDS = 3.0
"""Length of the idle clip: the renderer keeps at most 90 frames (loop.MAX_FRAMES)."""
IDLE_MAX_SIDE = 960
"""Longest side of the idle clip's frames (a 4K video's clip stays a few megabytes)."""
IDLE_CRF = 20
SHARPNESS_SIDE = 128
CANDIDATES = 3
"""Best-scoring frames kept for the final check, in case the first is refused."""
_SEED_MESSAGES = {
    "no_face": "No face detected in video",
    "multiple_faces": "Multiple faces detected, single face required",
}


def frontal_score(keypoints: np.ndarray) -> float:
    """1 for a face looking straight at the camera with level eyes, falling to 0 at about
    45 degrees of yaw or 30 degrees of roll. `keypoints`: BlazeFace's six, in
    `KEYPOINT_NAMES` order."""
    right_eye, left_eye, nose = keypoints[0], keypoints[1], keypoints[2]
    across = left_eye - right_eye
    span = float(across @ across)
    if span <= 0:
        return 0.0
    # Where the nose tip falls along the eye line: 0.5 when frontal, 0 or 1 under an eye.
    along = float((nose - right_eye) @ across) / span
    yaw = min(1.0, abs(along - 0.5) * 2)
    roll = abs(math.atan2(float(across[1]), float(across[0])))
    return max(0.0, 1.0 - yaw / 0.5) * max(0.0, 1.0 - roll / math.radians(30))


def sharpness(rgb: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Variance of the Laplacian of the face in `box`, at a fixed size."""
    h, w = rgb.shape[:2]
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(w, math.ceil(box[2])), min(h, math.ceil(box[3]))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return 0.0
    grey = cv2.cvtColor(np.ascontiguousarray(rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    grey = cv2.resize(grey, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def write_package(
    package: PackageWriter, source: PreparationSource, progress: ProgressCallback
) -> int:
    return write_portrait_package(package, source, progress, model="meshwarp", idle_clip=True)


def write_portrait_package(
    package: PackageWriter,
    source: PreparationSource,
    progress: ProgressCallback,
    *,
    model: str,
    idle_clip: bool = False,
) -> int:
    """The package of every renderer that animates one portrait (meshwarp, liveportrait):
    the chosen frame and a manifest naming `model`; with `idle_clip`, also the video's own
    frames around it as `idle.mp4`."""
    faces = {s.index: s.main for s in _single_face_samples(source.track.samples) if s.main}
    frontal = {index: frontal_score(face.keypoints) for index, face in faces.items()}
    total = max(1, source.info.frame_count)
    best: list[tuple[float, int, np.ndarray]] = []  # (score, frame index, rgb), best first
    count = 0
    for frame in iter_frames(source.path, source.info):
        count += 1
        if frame.index % 10 == 0:
            progress(min(0.9, 0.9 * frame.index / total), "choosing the portrait")
        if frame.index not in frontal:
            continue
        rgb = frame.rgb()
        score = frontal[frame.index] * sharpness(rgb, faces[frame.index].box)
        best.append((score, frame.index, rgb))
        best.sort(key=lambda item: -item[0])
        del best[CANDIDATES:]
    index, portrait = _accepted(best)
    progress(0.92, "writing portrait")
    package.add_bytes(PACKAGE_PORTRAIT, encode_png(portrait))
    extra: dict[str, object] = {}
    if idle_clip:
        progress(0.95, "writing the idle clip")
        first, clip, frames = idle_clip_bytes(source, index, count)
        package.add_bytes(PACKAGE_IDLE_CLIP, clip)
        extra = {"idle_clip": PACKAGE_IDLE_CLIP, "idle_first_frame": first, "idle_frames": frames}
    package.add_json(
        "avatar.json",
        manifest(source, model, count, portrait=PACKAGE_PORTRAIT, source_frame=index, **extra),
    )
    return count


def idle_clip_bytes(source: PreparationSource, chosen: int, count: int) -> tuple[int, bytes, int]:
    """(first frame index, MP4 bytes, frames in it): up to `IDLE_SECONDS` of the video's
    frames, starting at the chosen portrait's frame (the loop then starts on the portrait)
    or earlier when the video ends sooner, upright, scaled to at most `IDLE_MAX_SIDE`."""
    import av

    fps = source.info.fps if source.info.fps > 0 else 30.0
    length = max(2, round(IDLE_SECONDS * fps))
    first = max(0, min(chosen, count - length))
    w, h = source.info.width, source.info.height
    k = min(1.0, IDLE_MAX_SIDE / max(w, h))
    size = (max(2, round(w * k / 2) * 2), max(2, round(h * k / 2) * 2))  # even, for 4:2:0
    out = io.BytesIO()
    written = 0
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(IDLE_CRF), "preset": "veryfast"}
        for frame in iter_frames(source.path, source.info):
            if frame.index < first:
                continue
            if frame.index >= first + length:
                break
            rgb = frame.rgb()
            if rgb.shape[1::-1] != size:
                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            container.mux(stream.encode(picture))
            written += 1
        container.mux(stream.encode(None))
    return first, out.getvalue(), written


def _single_face_samples(samples: tuple[Sample, ...]) -> list[Sample]:
    single = [s for s in samples if s.main is not None and len(s.faces) == 1]
    # Fall back to frames where a smaller face was seen beside the main one.
    return single or [s for s in samples if s.main is not None and s.comparable_faces == 1]


def _accepted(best: list[tuple[float, int, np.ndarray]]) -> tuple[int, np.ndarray]:
    """The best frame the meshwarp renderer accepts as a portrait."""
    error: RendererError | None = None
    for _, index, rgb in best:
        try:
            analyse_portrait(rgb)
            return index, rgb
        except RendererError as refused:
            error = error or refused
    if error is None:
        raise PreparationError("no_face", _SEED_MESSAGES["no_face"])
    raise PreparationError(error.code, _SEED_MESSAGES.get(error.code, error.message))
