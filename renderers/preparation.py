"""Avatar preparation: a training video in, an avatar package (a .tar) out.

`prepare_avatar_package` is the one entry point (the job system, the RunPod handler and
`python -m control_api prepare` call it). It is synchronous CPU work, with no network and no
asyncio: run it in a worker process or thread. It

1. checks the request (avatar id, model) and probes the video: format, duration and size
   limits (`PreparationLimits`);
2. follows the face through the video (renderers/vision/face_track.py: BlazeFace on every
   `stride`-th frame, about 5 a second, interpolated where the face holds still) and applies
   the face rules below;
3. hands the video and the face track to the model's package writer
   (renderers/<model>/prepare.py), which decodes the video again and writes the package's
   files into `{out_dir}/{avatar_id}.tar` through `PackageWriter`. The tar is written under a
   temporary name in `out_dir` and renamed into place when complete, so the final name only
   ever holds a whole package.

Two passes over the video keep memory flat whatever its length: only the face boxes are
kept between them.

Face rules, on the sampled frames (every `stride`-th and the last):

* "No face detected in video" when more than `NO_FACE_SHARE` (half) of them show no face;
* "Multiple faces detected, single face required" when at least `MULTIPLE_FACES_SHARE` (a
  fifth) of those with a face show two or more comparable faces (each at least half the size
  of the largest; someone far in the background does not count).

Errors a user can act on are `PreparationError(code, message)`, the message being the exact
user-facing text (the seed's strings where it has them). A missing face model (a broken
installation, not a bad video) stays a `RendererError('models_missing')`.
"""

from __future__ import annotations

import importlib
import io
import json
import math
import os
import pickle
import re
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np

from .errors import CodedError
from .vision.face_track import FaceTrack, track_faces
from .vision.video import (
    UnsupportedVideoError,
    VideoDecodeError,
    VideoInfo,
    iter_frames,
    probe_video,
)

PACKAGE_VERSION = 1
"""`version` in avatar.json; bump when a package's layout changes."""
MANIFEST = "avatar.json"
SUPPORTED_MODELS: tuple[str, ...] = ("wav2lip", "meshwarp", "liveportrait", "musetalk")
_WRITERS = {
    "wav2lip": "renderers.wav2lip.prepare:write_package",
    "meshwarp": "renderers.meshwarp.prepare:write_package",
    "liveportrait": "renderers.liveportrait.prepare:write_package",
    "musetalk": "renderers.musetalk.prepare:write_package",
}
AVATAR_ID_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
"""1-128 characters of A-Z a-z 0-9 _ . -, not starting with a dot."""
SAMPLES_PER_SECOND = 5
NO_FACE_SHARE = 0.5
MULTIPLE_FACES_SHARE = 0.2
FACE_SIZES = range(32, 1025)
"""Face crop sides accepted (wav2lip's published models use 96 and 256)."""

# Where each stage's progress lands in 0..1.
_PROBED, _TRACKED, _WRITTEN = 0.02, 0.35, 0.99


class PreparationError(CodedError):
    """A preparation that cannot succeed with this input. `message` is the exact user-facing
    text; `code` is a stable snake_case code for programs."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, retryable=False)


@dataclass(frozen=True)
class PreparationLimits:
    min_duration_s: float = 3.0
    max_duration_s: float = 300.0
    max_width: int = 3840
    max_height: int = 2160
    """The picture may be at most max_width x max_height either way round (a portrait-mode
    2160x3840 video is as large as a landscape 3840x2160 one)."""
    face_size: int = 96
    """Side of wav2lip's face crops (96, or 256 for wav2lip256)."""


@dataclass(frozen=True)
class PreparedAvatar:
    avatar_id: str
    model: str
    num_frames: int
    package: Path
    """The .tar written."""


@dataclass(frozen=True)
class PreparationSource:
    """What a package writer gets: the probed video and its face track."""

    path: Path
    info: VideoInfo
    track: FaceTrack
    avatar_id: str
    limits: PreparationLimits


ProgressCallback = Callable[[float, str], None]


class PackageWriterFunction(Protocol):
    def __call__(
        self, package: PackageWriter, source: PreparationSource, progress: ProgressCallback
    ) -> int:
        """Write the model's files into `package`; return the number of frames processed."""
        ...


def prepare_avatar_package(
    video: Path,
    *,
    avatar_id: str,
    model: str = "wav2lip",
    out_dir: Path,
    limits: PreparationLimits = PreparationLimits(),  # noqa: B008 - frozen, so shared safely
    progress: ProgressCallback | None = None,
) -> PreparedAvatar:
    """Turn a training video into `{out_dir}/{avatar_id}.tar` (see the module doc).

    `progress(fraction, message)` is called as the work advances (fraction 0..1, a few
    hundred calls at most); an exception it raises aborts the preparation (that is how a
    caller cancels one), leaving no package behind. Raises PreparationError for anything
    wrong with the request or the video.
    """
    report = _Progress(progress)
    check_avatar_id(avatar_id)
    writer = _writer_for(model)
    if limits.face_size not in FACE_SIZES:
        raise PreparationError(
            "invalid_face_size",
            f"Invalid face size: {limits.face_size} (between {FACE_SIZES.start} and "
            f"{FACE_SIZES.stop - 1} pixels)",
        )
    video = Path(video)
    report(0.0, "probing video")
    info = probe(video, limits)
    report(_PROBED, "detecting faces")
    track = follow_face(video, info, lambda f: report(_PROBED + (_TRACKED - _PROBED) * f))
    check_faces(track)
    report(_TRACKED, "writing package")
    source = PreparationSource(video, info, track, avatar_id, limits)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{avatar_id}.tar"

    def writing(fraction: float, message: str) -> None:  # the writer's share of the whole
        report(_TRACKED + (_WRITTEN - _TRACKED) * fraction, message)

    try:
        with open_package(target) as package:
            num_frames = writer(package, source, writing)
    except VideoDecodeError as error:
        raise PreparationError("corrupt_video", f"Video could not be decoded: {error}") from None
    report(1.0, "done")
    return PreparedAvatar(avatar_id=avatar_id, model=model, num_frames=num_frames, package=target)


# -- checks ---------------------------------------------------------------------------------


def check_avatar_id(avatar_id: object) -> None:
    if not isinstance(avatar_id, str) or not AVATAR_ID_PATTERN.fullmatch(avatar_id):
        raise PreparationError(
            "invalid_avatar_id",
            "Invalid avatar_id: use 1 to 128 letters, digits, '_', '-' or '.', "
            "not starting with '.'",
        )


def _writer_for(model: object) -> PackageWriterFunction:
    if model not in _WRITERS:
        raise PreparationError(
            "unsupported_model",
            f"Unsupported model: {model} (supported: {', '.join(SUPPORTED_MODELS)})",
        )
    module, _, name = _WRITERS[str(model)].partition(":")
    return getattr(importlib.import_module(module), name)


def format_seconds(seconds: float) -> str:
    """3.0 -> '3', 2.5 -> '2.5' (the seed's messages say "minimum 3 seconds")."""
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def probe(video: Path, limits: PreparationLimits) -> VideoInfo:
    """The video's facts, or the PreparationError its format, duration or size earns."""
    try:
        info = probe_video(video)
    except FileNotFoundError:
        raise PreparationError("video_not_found", f"Video not found: {video.name}") from None
    except UnsupportedVideoError as error:
        raise PreparationError(
            "unsupported_video_format", f"Unsupported video format: {error.format}"
        ) from None
    if info.duration_s < limits.min_duration_s:
        raise PreparationError(
            "video_too_short",
            f"Video too short, minimum {format_seconds(limits.min_duration_s)} seconds required",
        )
    if info.duration_s > limits.max_duration_s:
        raise PreparationError(
            "video_too_long",
            f"Video too long, maximum {format_seconds(limits.max_duration_s)} seconds allowed",
        )
    long_side, short_side = max(info.width, info.height), min(info.width, info.height)
    max_long, max_short = (
        max(limits.max_width, limits.max_height),
        min(limits.max_width, limits.max_height),
    )
    if long_side > max_long or short_side > max_short:
        raise PreparationError(
            "video_too_large",
            f"Video too large: {info.width}x{info.height}, maximum "
            f"{limits.max_width}x{limits.max_height} allowed",
        )
    return info


def sample_stride(fps: float) -> int:
    """Frames between face samples: about `SAMPLES_PER_SECOND` samples a second."""
    return max(1, round(fps / SAMPLES_PER_SECOND)) if fps > 0 else 1


def follow_face(
    video: Path, info: VideoInfo, progress: Callable[[float], None] | None = None
) -> FaceTrack:
    total = max(1, info.frame_count)
    step = max(1, total // 100)

    def on_frame(index: int) -> None:
        if progress is not None and index % step == 0:
            progress(min(1.0, index / total))

    try:
        return track_faces(
            iter_frames(video, info), stride=sample_stride(info.fps), on_frame=on_frame
        )
    except VideoDecodeError as error:
        raise PreparationError("corrupt_video", f"Video could not be decoded: {error}") from None


def check_faces(track: FaceTrack) -> None:
    """The face rules of the module doc."""
    samples = track.samples
    with_face = [sample for sample in samples if sample.main is not None]
    if not with_face or len(samples) - len(with_face) > NO_FACE_SHARE * len(samples):
        raise PreparationError("no_face", "No face detected in video")
    several = sum(sample.comparable_faces >= 2 for sample in with_face)
    if several >= MULTIPLE_FACES_SHARE * len(with_face):
        raise PreparationError("multiple_faces", "Multiple faces detected, single face required")


# -- helpers for the package writers ---------------------------------------------------------


def smooth_boxes(boxes: np.ndarray, window: int = 5) -> np.ndarray:
    """Wav2Lip's temporal smoothing: box i becomes the mean of boxes[i:i+window]; the last
    boxes, whose window would run past the end, all take the mean of the final `window`
    (all boxes when there are fewer). Means are taken over the unsmoothed boxes; (N, 4)
    float64 out."""
    boxes = np.asarray(boxes, dtype=np.float64)
    n = len(boxes)
    if n == 0:
        return boxes.copy()
    window = min(window, n)
    sums = np.concatenate([np.zeros((1, boxes.shape[1])), np.cumsum(boxes, axis=0)])
    starts = np.minimum(np.arange(n), n - window)
    return (sums[starts + window] - sums[starts]) / window


def manifest(source: PreparationSource, model: str, num_frames: int, **extra: Any) -> dict:
    """avatar.json: what the package is and what made it."""
    info = source.info
    return {
        "avatar_id": source.avatar_id,
        "model": model,
        "fps": round(info.fps, 3),
        "width": info.width,
        "height": info.height,
        "num_frames": num_frames,
        **extra,
        "version": PACKAGE_VERSION,
    }


def frame_name(folder: str, index: int) -> str:
    return f"{folder}/{index:08d}.png"


class PackageWriter:
    """Members of the package tar, written in the order they are added."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self._tar = tar
        self._mtime = int(time.time())

    def add_dir(self, name: str) -> None:
        info = self._info(name.rstrip("/"))
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        self._tar.addfile(info)

    def add_bytes(self, name: str, data: bytes) -> None:
        info = self._info(name)
        info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data))

    def add_json(self, name: str, value: Any) -> None:
        self.add_bytes(name, (json.dumps(value, indent=2) + "\n").encode())

    def add_pickle(self, name: str, value: Any) -> None:
        self.add_bytes(name, pickle.dumps(value))

    def _info(self, name: str) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.mtime, info.mode = self._mtime, 0o644
        return info


# -- reading a package someone else made ------------------------------------------------------

MAX_PACKAGE_BYTES = 8 * 1024**3
"""The most content a package's members may declare together (a tar bomb's sparse or
truncated members declare far more than the file holds)."""
MAX_PACKAGE_MEMBERS = 100_000
"""The most members a package may have (a 300 s video at 25 fps has about 15,000)."""


def package_member_path(member: tarfile.TarInfo) -> PurePosixPath | None:
    """The member's path relative to the package root (None for "." itself), or
    PreparationError('invalid_package') saying why it is unsafe: only regular files and
    directories with relative names without `..` are allowed, so that unpacking or reading a
    package can never reach outside it."""
    name = member.name
    shown = _shown(name)
    if not (member.isfile() or member.isdir()) or member.issparse():
        if member.issym():
            kind = "a symbolic link"
        elif member.islnk():
            kind = "a hard link"
        elif member.isfifo():
            kind = "a named pipe"
        elif member.ischr() or member.isblk():
            kind = "a device"
        elif member.issparse():
            kind = "a sparse file"
        else:
            kind = "a special file"
        raise _rejected(f"member '{shown}' is {kind}; only files and directories are allowed")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name) or "\\" in name:
        raise _rejected(f"member '{shown}' has control characters or backslashes in its name")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        raise _rejected(f"member '{shown}' has an absolute path")
    parts = [part for part in PurePosixPath(name).parts if part != "."]
    if ".." in parts:
        raise _rejected(f"member '{shown}' points outside the package ('..')")
    if not parts:
        if member.isfile():
            raise _rejected("a member has an empty name")
        return None
    return PurePosixPath(*parts)


def package_members(
    tar: tarfile.TarFile,
    *,
    max_members: int = MAX_PACKAGE_MEMBERS,
    max_bytes: int = MAX_PACKAGE_BYTES,
) -> Iterator[tuple[tarfile.TarInfo, PurePosixPath]]:
    """The members of a package tar with their checked paths (`package_member_path`), read
    one header at a time, so that a refusal comes before anything past the limits is read:
    PreparationError('invalid_package') for an unsafe member, more than `max_members`
    members or more than `max_bytes` of declared content. tarfile's own errors (a damaged
    or cut-short tar) pass through."""
    members = total = 0
    for member in tar:
        members += 1
        if members > max_members:
            raise _rejected(f"it has more than {max_members} members")
        relative = package_member_path(member)
        if relative is None:
            continue
        total += member.size
        if total > max_bytes:
            raise _rejected(f"it unpacks to more than {max_bytes / 1024**2:.0f} MiB")
        yield member, relative


def _rejected(why: str) -> PreparationError:
    return PreparationError("invalid_package", why)


def _shown(name: str) -> str:
    return name[:120].encode("unicode_escape").decode("ascii")


@contextmanager
def open_package(target: Path) -> Iterator[PackageWriter]:
    """A PackageWriter whose tar appears at `target` only once the block completes."""
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            yield PackageWriter(tar)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


class _Progress:
    """Calls the caller's callback when the fraction moved by a percent or the message
    changed, never going backwards."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback
        self._fraction = -1.0
        self._message = ""

    def __call__(self, fraction: float, message: str | None = None) -> None:
        if self._callback is None:
            return
        message = message or self._message
        fraction = min(1.0, max(fraction, self._fraction, 0.0))
        moved = math.floor(fraction * 100) > math.floor(self._fraction * 100)
        if moved or message != self._message:
            self._fraction, self._message = fraction, message
            self._callback(fraction, message)
