"""Small, real media files for tests and benchmarks, made with PyAV in well under a second.

* `talking_head_video`: scikit-image's astronaut portrait (Eileen Collins, public domain)
  swaying and zooming slightly in front of a plain background, H.264 in MP4; `faces=2` puts two
  portraits side by side. It returns where the portrait was drawn in every frame, so a test can
  check that face boxes follow the face.
* `no_face_video`: a drifting gradient with noise.
* `not_a_video`: a text file with a video's name.
* `speech_like_audio`: syllables of a voiced tone (a 110-190 Hz pitch with harmonics,
  amplitude-modulated at about 4 syllables a second, with pauses), as WAV, or MP3 / M4A (AAC)
  / anything else PyAV can write, chosen by the file's suffix.
"""

from __future__ import annotations

import itertools
import math
import wave
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data

PORTRAIT_CROP = (slice(0, 360), slice(70, 430))
"""The astronaut's head and shoulders: the 512x512 photograph's face (about 95 px, box x
177-272, y 80-175) sits in the upper middle of this 360x360 crop."""
BACKGROUND_BGR = (96, 112, 128)


@cache
def astronaut_head() -> np.ndarray:
    """The 360x360 RGB head-and-shoulders crop of the astronaut portrait."""
    return np.ascontiguousarray(data.astronaut()[PORTRAIT_CROP])


@dataclass(frozen=True)
class TalkingHead:
    path: Path
    fps: int
    size: tuple[int, int]
    """(width, height)"""
    transforms: np.ndarray
    """(frames, faces, 2, 3) float64: the affine map from `astronaut_head()` pixels to frame
    pixels of each portrait in each frame."""

    @property
    def num_frames(self) -> int:
        return len(self.transforms)

    def to_frame(self, frame: int, points: np.ndarray, face: int = 0) -> np.ndarray:
        """(N, 2) points of `astronaut_head()` -> where they are in `frame`."""
        matrix = self.transforms[frame, face]
        return points @ matrix[:, :2].T + matrix[:, 2]


def write_video(
    path: Path | str,
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    pixel_format: str = "rgb24",
    codec: str = "libx264",
    rotation: int = 0,
) -> Path:
    """Encode HxWx3 uint8 frames (`pixel_format` rgb24 or bgr24) into `path`; the container
    follows the suffix. `rotation` stores a display matrix (degrees counterclockwise, as
    `av.VideoFrame.rotation` reads it back)."""
    path = Path(path)
    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=round(fps))
        assert isinstance(stream, av.VideoStream), codec
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            # Fast enough for a test to make its media on the fly; quality is still plenty.
            stream.options = {"preset": "ultrafast", "crf": "18"}
        if rotation:
            stream.set_display_rotation(rotation)
        for image in itertools.chain([first], frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=pixel_format)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _sway(k: int, fps: float, seconds: float) -> tuple[float, float, float]:
    """(dx, dy, scale) of frame k: a slow sway of +-4 % of the width, a nod, a breathing zoom."""
    t = k / fps
    return (
        0.04 * math.sin(2 * math.pi * t / max(seconds, 1.0)),
        0.015 * math.sin(2 * math.pi * 0.7 * t),
        1.0 + 0.03 * math.sin(2 * math.pi * 0.4 * t),
    )


def talking_head_video(
    path: Path | str,
    seconds: float = 3.5,
    fps: int = 25,
    size: tuple[int, int] = (640, 360),
    faces: int = 1,
    *,
    rotation: int = 0,
    blur: Callable[[int], float] | None = None,
) -> TalkingHead:
    """The astronaut moving slightly, `faces` (1 or 2) portraits side by side, each filling
    its share of the width (and 94 % of the height). `rotation` (a multiple of 90) stores the
    frames turned and a display matrix that turns them back, as phones do. `blur(k)` gives
    frame k a Gaussian blur of that sigma in pixels (0: sharp)."""
    if faces not in (1, 2):
        raise ValueError("faces must be 1 or 2")
    width, height = size
    head = cv2.cvtColor(astronaut_head(), cv2.COLOR_RGB2BGR)
    side = head.shape[0]
    base = min(0.94 * height, width / faces) / side
    count = max(1, round(seconds * fps))
    transforms = np.zeros((count, faces, 2, 3))
    for k in range(count):
        dx, dy, zoom = _sway(k, fps, seconds)
        scale = base * zoom
        for face in range(faces):
            cx = width * (face + 0.5) / faces + dx * width
            cy = height * 0.5 + dy * height
            transforms[k, face] = [
                [scale, 0.0, cx - scale * side / 2],
                [0.0, scale, cy - scale * side / 2],
            ]

    def frames() -> Iterator[np.ndarray]:  # drawn as they are encoded: memory stays flat
        for k in range(count):
            canvas: np.ndarray = np.empty((height, width, 3), np.uint8)
            canvas[:] = BACKGROUND_BGR
            for matrix in transforms[k]:
                # Draw the portrait over what is there (the background, or the other one).
                cv2.warpAffine(
                    head, matrix, (width, height), dst=canvas, flags=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_TRANSPARENT,
                )  # fmt: skip
            sigma = blur(k) if blur is not None else 0.0
            if sigma > 0:
                canvas = cv2.GaussianBlur(canvas, (0, 0), sigma)
            yield _turned(canvas, rotation)

    write_video(path, frames(), fps, pixel_format="bgr24", rotation=rotation)
    return TalkingHead(Path(path), fps, (width, height), transforms)


def _turned(image: np.ndarray, rotation: int) -> np.ndarray:
    """The picture as stored when a player must turn it `rotation` degrees counterclockwise
    to show it upright."""
    if rotation % 90:
        raise ValueError("rotation must be a multiple of 90 degrees")
    return np.ascontiguousarray(np.rot90(image, k=-(rotation // 90)))


def no_face_video(
    path: Path | str, seconds: float = 3.5, fps: int = 25, size: tuple[int, int] = (320, 240)
) -> Path:
    """A slowly drifting diagonal gradient with a little noise: nothing like a face."""
    width, height = size
    rng = np.random.default_rng(7)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for k in range(max(1, round(seconds * fps))):
        shade = 60 + 140 * ((xs + ys + 3 * k) % (width + height)) / (width + height)
        noisy = shade[..., None] + rng.normal(0, 6, (height, width, 3))
        frames.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return write_video(path, frames, fps)


def not_a_video(path: Path | str) -> Path:
    """A text file, whatever its name says."""
    path = Path(path)
    path.write_text("This is a text file, not a video.\n")
    return path


def speech_like_audio(path: Path | str, seconds: float, sample_rate: int = 16000) -> np.ndarray:
    """Write syllable-like speech to `path` (WAV 16-bit mono; other suffixes through PyAV) and
    return the samples (float32 mono in [-1, 1])."""
    samples = _syllables(seconds, sample_rate)
    path = Path(path)
    if path.suffix.lower() == ".wav":
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(sample_rate)
            out.writeframes((samples * 32767).astype("<i2").tobytes())
    else:
        _encode_audio(path, samples, sample_rate)
    return samples


def _syllables(seconds: float, sample_rate: int) -> np.ndarray:
    rng = np.random.default_rng(11)
    n = round(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    # A wandering pitch (110-190 Hz) with its first harmonics, like a voiced vowel.
    pitch = 150 + 40 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voice = sum(np.sin(h * phase) / h for h in (1, 2, 3, 4, 5))
    # Syllables of 120-300 ms, some followed by a pause, each a smooth bump of loudness.
    envelope = np.zeros(n)
    at = round(0.15 * sample_rate)
    while at < n:
        length = round(rng.uniform(0.12, 0.30) * sample_rate)
        bump = np.sin(np.linspace(0, np.pi, length)) ** 2 * rng.uniform(0.5, 1.0)
        envelope[at : at + length] = bump[: n - at]
        at += length + round(rng.choice([0.03, 0.05, 0.35], p=[0.5, 0.3, 0.2]) * sample_rate)
    noise = rng.normal(0, 0.01, n)
    samples = 0.35 * envelope * voice / 2.3 + noise * (envelope > 0.05)
    return np.clip(samples, -1, 1).astype(np.float32)


def _encode_audio(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    codec = {".mp3": "libmp3lame", ".ogg": "libopus", ".opus": "libopus"}.get(
        path.suffix.lower(), "aac"
    )
    pcm = (samples * 32767).astype(np.int16)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=sample_rate, layout="mono")
        assert isinstance(stream, av.AudioStream), codec
        for start in range(0, len(pcm), 1024):
            frame = av.AudioFrame.from_ndarray(
                pcm[None, start : start + 1024], format="s16", layout="mono"
            )
            frame.sample_rate = sample_rate
            # PyAV converts the samples and re-chunks them to what the encoder takes.
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
