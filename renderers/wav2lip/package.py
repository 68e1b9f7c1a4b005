"""A wav2lip avatar package, loaded for rendering: the frames the avatar shows, framed to the
output size, the face crops the network reads, and each frame's face box in output pixels.

A package is a directory (as the job system installs it into the avatars directory) or a
`.tar` of one, laid out as renderers/wav2lip/prepare.py writes it (LiveTalking's layout,
seed 000): `full_imgs/%08d.png`, `face_imgs/%08d.png` and `coords.pkl`, a pickled list of
(y1, y2, x1, x2). `avatar.json` is optional (LiveTalking's own packages have none).

The frames are framed once, at load, the way a video is shown "cover": scaled to fill the
output and cropped, the crop centred on the face as far as the picture allows. They are kept
decoded, so at most `max_frames` of them (the idle loop plays those).
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..face_package import (
    PackageReader,
    TarReader,
    decode_image,
    frame_video,
    invalid_package,
    numbered_images,
    open_package,
    ping_pong,
    unpickle_boxes,
)

_FILES = ("coords.pkl",)
_FOLDERS = ("full_imgs", "face_imgs")
_UNREAD = ("avatar.json",)  # optional (LiveTalking's packages have none), not read


@dataclass(frozen=True)
class Wav2LipAvatar:
    frames: np.ndarray
    """(N, H, W, 3) uint8 RGB: each frame framed to the output size."""
    faces: np.ndarray
    """(N, S, S, 3) uint8 RGB: the package's face crops (the network's input)."""
    boxes: np.ndarray
    """(N, 4) float64 x0, y0, x1, y1: where each face crop lies in the framed frame."""

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def face_size(self) -> int:
        return int(self.faces.shape[1])

    def frame_for(self, index: int) -> int:
        """The avatar frame shown as output frame `index` (ping-pong)."""
        return ping_pong(index, self.num_frames)


def load_package(source: Path, width: int, height: int, *, max_frames: int) -> Wav2LipAvatar:
    """Load the package at `source` (directory or .tar) framed to width x height.
    RendererError('invalid_package') says what is missing or wrong."""
    source = Path(source)
    not_a_package = (
        f"{source.name} is not a wav2lip avatar package: give a package directory or its .tar"
    )
    with open_package(
        source, files=_FILES, folders=_FOLDERS, unread=_UNREAD, not_a_package=not_a_package
    ) as reader:
        return _load(reader, width, height, max_frames, source.name)


def is_package(source: Path) -> bool:
    """True for a directory or tar that looks like a wav2lip package (has coords.pkl)."""
    source = Path(source)
    if source.is_dir():
        return (source / "coords.pkl").is_file()
    return source.is_file() and tarfile.is_tarfile(source)


def check_package_tar(data: bytes, name: str = "package") -> None:
    """RendererError('invalid_package') unless `data` is an uncompressed wav2lip package tar
    with a coords.pkl whose every member is safe: what `load_package` checks before it reads
    anything, for a caller that wants to refuse a package before queueing work on it."""
    with TarReader(io.BytesIO(data), name, roots=(*_FILES, *_FOLDERS, *_UNREAD)) as reader:
        if "coords.pkl" not in reader.names:
            raise invalid_package(f"{name} is not a wav2lip avatar package: no coords.pkl")


def _load(
    reader: PackageReader, width: int, height: int, max_frames: int, label: str
) -> Wav2LipAvatar:
    if "coords.pkl" not in reader.names:
        raise invalid_package(f"{label} is not a wav2lip avatar package: no coords.pkl")
    coords = _read_coords(reader.read("coords.pkl"), label)
    full = numbered_images(reader.names, "full_imgs")
    faces = numbered_images(reader.names, "face_imgs")
    count = min(len(coords), len(full), len(faces))
    if count == 0:
        raise invalid_package(
            f"{label} is not a usable wav2lip avatar package: it has {len(full)} full_imgs, "
            f"{len(faces)} face_imgs and {len(coords)} coords"
        )
    count = min(count, max_frames)
    # coords.pkl holds y1, y2, x1, x2 (LiveTalking's order): as x1, y1, x2, y2.
    box = np.asarray(coords[:count], dtype=np.float64)[:, [2, 0, 3, 1]]
    framed, boxes = frame_video(reader, full[:count], width, height, box, label)
    crops = [decode_image(reader.read(name), name, label) for name in faces[:count]]
    sizes = {crop.shape[:2] for crop in crops}
    if len(sizes) != 1 or next(iter(sizes))[0] != next(iter(sizes))[1]:
        raise invalid_package(f"{label}: face_imgs must all be the same square size")
    return Wav2LipAvatar(frames=framed, faces=np.stack(crops), boxes=boxes)


def _read_coords(data: bytes, label: str) -> list[tuple[int, int, int, int]]:
    try:
        coords = unpickle_boxes(data, "coords.pkl")
    except Exception as error:  # any malformed pickle: a bad package, said plainly
        raise invalid_package(
            f"{label}: coords.pkl is not a list of (y1, y2, x1, x2): {error}"
        ) from None
    for y1, y2, x1, x2 in (c if len(c) == 4 else (0, 0, 0, 0) for c in coords):
        if y2 <= y1 or x2 <= x1:
            raise invalid_package(f"{label}: coords.pkl has an empty box {(y1, y2, x1, x2)}")
    return coords  # type: ignore[return-value]
