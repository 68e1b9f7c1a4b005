"""Reading videos with PyAV: what a file is (`probe_video`) and its frames, upright, as RGB
numpy arrays (`read_frames`, or `iter_frames` to convert only the frames you look at).

Frames are turned upright by the stream's display matrix (phones store portrait videos as
landscape pictures plus a rotation), so sizes here are the picture as shown. Every decoded
frame is returned, in order, with no frame-rate conversion. Decoding uses FFmpeg's own
threads.

`UnsupportedVideoError.format` names what a file is when it is no video this can read:

* a file FFmpeg cannot open at all (text, truncated, empty): its suffix in lower case
  (`notes.mp4` -> `mp4`), or `unknown` when it has none;
* a media file without a video stream (WAV, MP3, M4A) or a still image: the container,
  by the file's suffix when that is one of the names FFmpeg gives the container (`m4a` for
  `mov,mp4,m4a,3gp,3g2,mj2`), else FFmpeg's first name for it (`wav`, `png`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import short_reason

UNKNOWN_FORMAT = "unknown"


class UnsupportedVideoError(Exception):
    """The file is no video this can decode; `format` says what it is (see the module doc)."""

    def __init__(self, format: str, reason: str) -> None:
        super().__init__(f"{format}: {reason}")
        self.format = format
        self.reason = reason


class VideoDecodeError(Exception):
    """A video opened but a frame could not be decoded."""


@dataclass(frozen=True)
class VideoInfo:
    format: str
    """The container, e.g. `mp4`, `matroska`, `webm`, `avi` (see the module doc)."""
    codec: str
    """The video codec, e.g. `h264`, `hevc`, `vp9`."""
    duration_s: float
    fps: float
    """The stream's average frame rate, or frames / duration where the two disagree."""
    width: int
    """Width of the picture as shown (after `rotation`)."""
    height: int
    frame_count: int
    """From the header, or counted from the packets when the header has none: the number
    `read_frames` yields for an intact file."""
    rotation: int = 0
    """Degrees counterclockwise the stored picture is turned to show it (0, 90, 180, -90)."""


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """What `path` is, decoding only its first frame. UnsupportedVideoError when it is no
    video; FileNotFoundError when it is missing."""
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, ValueError, UnicodeDecodeError) as error:
        raise UnsupportedVideoError(_suffix_format(path), str(error)) from None
    with container:
        label = _container_format(container.format.name, path)
        if not container.streams.video or _is_still_image(container.format.name):
            raise UnsupportedVideoError(label, "no video stream")
        stream = container.streams.video[0]
        codec = stream.codec_context.name if stream.codec_context else "unknown"
        rate = stream.average_rate or stream.guessed_rate
        frame_count = int(stream.frames or 0)
        duration = _header_duration(container, stream)
        if not frame_count or duration is None:
            frame_count, duration = _count_packets(container, stream)
    # Decoding the first frame proves the stream decodes, and gives the picture's size and
    # display matrix (PyAV exposes that on frames, not streams).
    try:
        with av.open(str(path)) as container:
            first = _first_frame(container, container.streams.video[0])
    except (av.error.FFmpegError, ValueError) as error:
        raise UnsupportedVideoError(label, f"cannot decode: {error}") from None
    if first is None:
        raise UnsupportedVideoError(label, "the video stream has no frames")
    rotation = _quarter_turn(float(first.rotation or 0))
    width, height = first.width, first.height
    if rotation % 180:
        width, height = height, width
    fps = float(rate) if rate else 0.0
    counted = frame_count / duration if frame_count and duration else 0.0
    if counted and not 0.9 * counted <= fps <= 1.1 * counted:
        # Browser recordings (WebM from MediaRecorder) can report a rate of their time base,
        # e.g. 1000; frames per second of duration is the truth then.
        fps = counted
    return VideoInfo(
        format=label,
        codec=codec,
        duration_s=float(duration or 0.0),
        fps=fps,
        width=width,
        height=height,
        frame_count=frame_count,
        rotation=rotation,
    )


class Frame:
    """One decoded frame; convert it with `rgb()` only when needed (conversion costs more
    than decoding)."""

    def __init__(self, index: int, frame, rotation: int) -> None:  # noqa: ANN001 - av.VideoFrame
        self.index = index
        self._frame = frame
        self._rotation = rotation
        turned = rotation % 180 != 0
        self.width: int = frame.height if turned else frame.width
        """Width of the picture as shown (upright)."""
        self.height: int = frame.width if turned else frame.height

    def rgb(self, max_side: int | None = None) -> np.ndarray:
        """HxWx3 uint8 RGB, upright; shrunk (area-averaged by FFmpeg's scaler) so that its
        longer side is at most `max_side`."""
        frame = self._frame
        w, h = frame.width, frame.height
        if max_side is not None and max(w, h) > max_side:
            scale = max_side / max(w, h)
            w, h = max(1, round(w * scale)), max(1, round(h * scale))
            array = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA")
            array = array.to_ndarray()
        else:
            array = frame.to_ndarray(format="rgb24")
        if self._rotation:
            array = np.ascontiguousarray(np.rot90(array, k=self._rotation // 90))
        return array


def iter_frames(path: str | os.PathLike[str], info: VideoInfo | None = None) -> Iterator[Frame]:
    """Every frame of the first video stream, in order, unconverted."""
    import av

    info = info or probe_video(path)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                yield Frame(index, frame, info.rotation)
    except av.error.FFmpegError as error:
        raise VideoDecodeError(f"cannot decode {Path(path).name}: {short_reason(error)}") from None


def read_frames(
    path: str | os.PathLike[str], *, max_side: int | None = None, info: VideoInfo | None = None
) -> Iterator[np.ndarray]:
    """Every frame as HxWx3 uint8 RGB, upright (see `Frame.rgb`)."""
    for frame in iter_frames(path, info):
        yield frame.rgb(max_side)


def _suffix_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    return suffix if suffix and suffix.isascii() and suffix.isalnum() else UNKNOWN_FORMAT


def _container_format(name: str, path: Path) -> str:
    names = [n.removesuffix("_pipe") for n in name.split(",")]
    suffix = path.suffix.lower().lstrip(".")
    return suffix if suffix in names else names[0]


def _is_still_image(name: str) -> bool:
    """FFmpeg opens PNG, JPEG, WebP ... as one-frame 'videos' (`png_pipe`, `image2`)."""
    return name.endswith("_pipe") or name == "image2"


def _first_frame(container, stream):  # noqa: ANN001, ANN202 - av types
    """The stream's first frame (None when it has none); it carries the display matrix."""
    for frame in container.decode(stream):
        return frame
    return None


def _quarter_turn(degrees: float) -> int:
    """A rotation rounded to a quarter turn, in (-180, 180]."""
    return {0: 0, 1: 90, 2: 180, 3: -90}[round(degrees / 90) % 4]


def _header_duration(container, stream) -> float | None:  # noqa: ANN001
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _count_packets(container, stream) -> tuple[int, float | None]:  # noqa: ANN001
    """Frame count and duration from the packets themselves (demuxing only, no decoding)."""
    count, start, end = 0, None, None
    for packet in container.demux(stream):
        if packet.size == 0:
            continue  # the demuxer's flush packet
        count += 1
        if packet.pts is not None and packet.time_base:
            t0 = float(packet.pts * packet.time_base)
            t1 = t0 + float((packet.duration or 0) * packet.time_base)
            start = t0 if start is None else min(start, t0)
            end = t1 if end is None else max(end, t1)
    duration = end - start if start is not None and end is not None else None
    return count, duration
