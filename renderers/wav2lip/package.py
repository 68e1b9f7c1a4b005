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
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image

from ..base import RendererError
from ..errors import short_reason
from ..vision.portrait import MAX_IMAGE_PIXELS

_FRAME_DIRS = ("full_imgs", "face_imgs")
_SAFE_PICKLE_GLOBALS = {
    # numpy integers in coords.pkl (a LiveTalking package may hold them): data, not code.
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"),
}


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
        """The avatar frame shown as output frame `index`: forward, then backward, and again
        (ping-pong), so the loop has no jump; the turning frames are not shown twice."""
        n = self.num_frames
        if n == 1:
            return 0
        phase = index % (2 * n - 2)
        return phase if phase < n else 2 * n - 2 - phase


def load_package(source: Path, width: int, height: int, *, max_frames: int) -> Wav2LipAvatar:
    """Load the package at `source` (directory or .tar) framed to width x height.
    RendererError('invalid_package') says what is missing or wrong."""
    source = Path(source)
    # Messages name the package by its name alone: they reach users (a render's error).
    if source.is_dir():
        with _DirectoryReader(source) as reader:
            return _load(reader, width, height, max_frames, source.name)
    if source.is_file() and tarfile.is_tarfile(source):
        with _TarReader(source.open("rb"), source.name) as reader:
            return _load(reader, width, height, max_frames, source.name)
    if not source.exists():
        raise RendererError("source_unreadable", f"avatar package {source.name} does not exist")
    raise RendererError(
        "invalid_package",
        f"{source.name} is not a wav2lip avatar package: give a package directory or its .tar",
    )


def is_package(source: Path) -> bool:
    """True for a directory or tar that looks like a wav2lip package (has coords.pkl)."""
    source = Path(source)
    if source.is_dir():
        return (source / "coords.pkl").is_file()
    return source.is_file() and tarfile.is_tarfile(source)


# -- reading ----------------------------------------------------------------------------------


class _Reader:
    """Member names (relative, '/'-separated, no leading './') and their bytes."""

    names: set[str]

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _DirectoryReader(_Reader):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.names = {"coords.pkl"} if (root / "coords.pkl").is_file() else set()
        for folder in _FRAME_DIRS:
            if (root / folder).is_dir():
                self.names |= {f"{folder}/{path.name}" for path in (root / folder).iterdir()}

    def read(self, name: str) -> bytes:
        try:
            return (self.root / name).read_bytes()
        except OSError as error:
            raise RendererError(
                "source_unreadable", f"cannot read {name}: {short_reason(error)}"
            ) from None


class _TarReader(_Reader):
    """The members of an uncompressed package tar in `file` (which it closes), read in place,
    never unpacked. Every member is checked first (renderers.preparation.package_members:
    files and directories only, no `..` or absolute names, at most MAX_PACKAGE_MEMBERS members
    and MAX_PACKAGE_BYTES declared), and none may claim bytes past the file's end."""

    def __init__(self, file: BinaryIO, name: str) -> None:
        from ..preparation import PreparationError, package_members

        self.file, self.label = file, name
        try:
            size = file.seek(0, io.SEEK_END)
            file.seek(0)
            # "r:", not "r": a compressed tar could expand to far more than its file holds.
            self.tar = tarfile.open(fileobj=file, mode="r:")
            members = {}
            for member, relative in package_members(self.tar):
                if member.isfile():
                    if member.offset_data + member.size > size:
                        raise _invalid(f"{name} is damaged or cut short")
                    # A package may name them './full_imgs/...' or 'id/full_imgs/...'.
                    members[_member_name(relative.as_posix())] = member
        except PreparationError as error:
            file.close()
            raise _invalid(f"{name} is not a safe avatar package: {error.message}") from None
        except tarfile.ReadError:
            file.close()
            raise _invalid(f"{name} is not an uncompressed TAR, or is damaged") from None
        except (OSError, tarfile.TarError, EOFError):
            file.close()
            raise _invalid(f"{name} is damaged or cut short") from None
        except BaseException:
            file.close()
            raise
        self.members = members
        self.names = set(members)

    def read(self, name: str) -> bytes:
        try:
            handle = self.tar.extractfile(self.members[name])
            assert handle is not None  # a regular file (checked above)
            return handle.read()
        except (OSError, tarfile.TarError, EOFError):
            raise _invalid(f"{self.label}: {name} cannot be read") from None

    def __exit__(self, *exc: object) -> None:
        self.tar.close()
        self.file.close()


def check_package_tar(data: bytes, name: str = "package") -> None:
    """RendererError('invalid_package') unless `data` is an uncompressed wav2lip package tar
    with a coords.pkl whose every member is safe: what `load_package` checks before it reads
    anything, for a caller that wants to refuse a package before queueing work on it."""
    with _TarReader(io.BytesIO(data), name) as reader:
        if "coords.pkl" not in reader.names:
            raise _invalid(f"{name} is not a wav2lip avatar package: no coords.pkl")


def _invalid(message: str) -> RendererError:
    return RendererError("invalid_package", message)


def _member_name(name: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    for i, part in enumerate(parts):  # drop a leading folder such as 'avatar_id/'
        if part in (*_FRAME_DIRS, "coords.pkl", "avatar.json"):
            return "/".join(parts[i:])
    return "/".join(parts)


# -- assembling -------------------------------------------------------------------------------


def _load(reader: _Reader, width: int, height: int, max_frames: int, label: str) -> Wav2LipAvatar:
    if "coords.pkl" not in reader.names:
        raise RendererError(
            "invalid_package", f"{label} is not a wav2lip avatar package: no coords.pkl"
        )
    coords = _read_coords(reader.read("coords.pkl"), label)
    full = _numbered(reader.names, "full_imgs")
    faces = _numbered(reader.names, "face_imgs")
    count = min(len(coords), len(full), len(faces))
    if count == 0:
        raise RendererError(
            "invalid_package",
            f"{label} is not a usable wav2lip avatar package: it has {len(full)} full_imgs, "
            f"{len(faces)} face_imgs and {len(coords)} coords",
        )
    count = min(count, max_frames)
    first = _decode(reader.read(full[0]), full[0], label)
    frame_h, frame_w = first.shape[:2]
    mean_box = np.mean(np.asarray(coords[:count], dtype=np.float64), axis=0)
    matrix = _cover(frame_w, frame_h, width, height, mean_box)
    framed = np.empty((count, height, width, 3), dtype=np.uint8)
    crops: list[np.ndarray] = []
    for i, (full_name, face_name) in enumerate(zip(full[:count], faces[:count], strict=True)):
        image = first if i == 0 else _decode(reader.read(full_name), full_name, label)
        if image.shape[:2] != (frame_h, frame_w):
            raise RendererError(
                "invalid_package", f"{label}: {full_name} is not {frame_w}x{frame_h} like the first"
            )
        _warp(image, matrix, framed[i])
        crops.append(_decode(reader.read(face_name), face_name, label))
    sizes = {crop.shape[:2] for crop in crops}
    if len(sizes) != 1 or next(iter(sizes))[0] != next(iter(sizes))[1]:
        raise RendererError(
            "invalid_package", f"{label}: face_imgs must all be the same square size"
        )
    box = np.asarray(coords[:count], dtype=np.float64)  # y1, y2, x1, x2 in the video's pixels
    scale, shift = matrix[0, 0], matrix[:, 2]
    boxes = np.stack(
        [
            box[:, 2] * scale + shift[0],
            box[:, 0] * scale + shift[1],
            box[:, 3] * scale + shift[0],
            box[:, 1] * scale + shift[1],
        ],
        axis=1,
    )
    return Wav2LipAvatar(frames=framed, faces=np.stack(crops), boxes=boxes)


class _CoordsUnpickler(pickle.Unpickler):
    """coords.pkl holds numbers in lists and tuples; anything that names code is refused, so a
    package cannot run code when it is loaded."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _SAFE_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"coords.pkl may hold only numbers, not {module}.{name}")


def _read_coords(data: bytes, label: str) -> list[tuple[int, int, int, int]]:
    try:
        raw = _CoordsUnpickler(io.BytesIO(data)).load()
        coords = [tuple(int(v) for v in box) for box in raw]
    except Exception as error:  # any malformed pickle: a bad package, said plainly
        raise RendererError(
            "invalid_package", f"{label}: coords.pkl is not a list of (y1, y2, x1, x2): {error}"
        ) from None
    for y1, y2, x1, x2 in (c if len(c) == 4 else (0, 0, 0, 0) for c in coords):
        if y2 <= y1 or x2 <= x1:
            raise RendererError(
                "invalid_package", f"{label}: coords.pkl has an empty box {(y1, y2, x1, x2)}"
            )
    return coords  # type: ignore[return-value]


def _numbered(names: set[str], folder: str) -> list[str]:
    """`folder/<n>.png` members in numeric order (LiveTalking sorts them by number too)."""
    found = []
    for name in names:
        parent, _, file = name.rpartition("/")
        stem, dot, suffix = file.rpartition(".")
        if parent == folder and dot and suffix.lower() in ("png", "jpg", "jpeg") and stem.isdigit():
            found.append((int(stem), name))
    return [name for _, name in sorted(found)]


def _decode(data: bytes, name: str, label: str) -> np.ndarray:
    # The size from the header first: OpenCV would decode a small file that claims a huge
    # picture (a decompression bomb) before anything could refuse it.
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
    except Image.DecompressionBombError:
        width = height = MAX_IMAGE_PIXELS
    except Exception:  # noqa: BLE001 - not an image Pillow knows: imdecode refuses it below
        width = height = 0
    if width * height > MAX_IMAGE_PIXELS:
        raise RendererError(
            "invalid_package", f"{label}: {name} is larger than {MAX_IMAGE_PIXELS} pixels"
        )
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise RendererError("invalid_package", f"{label}: {name} is not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _cover(frame_w: int, frame_h: int, width: int, height: int, mean_box: np.ndarray) -> np.ndarray:
    """2x3 affine: scale the frame to cover width x height, the crop centred on the face
    (mean_box: y1, y2, x1, x2) as far as the frame reaches."""
    scale = max(width / frame_w, height / frame_h)
    y1, y2, x1, x2 = mean_box
    centre_x, centre_y = (x1 + x2) / 2 * scale, (y1 + y2) / 2 * scale
    # Whole pixels, so the scaled-then-cropped frame and the boxes agree exactly.
    shift_x = -round(float(np.clip(centre_x - width / 2, 0, frame_w * scale - width)))
    shift_y = -round(float(np.clip(centre_y - height / 2, 0, frame_h * scale - height)))
    return np.array([[scale, 0.0, shift_x], [0.0, scale, shift_y]])


def _warp(image: np.ndarray, matrix: np.ndarray, out: np.ndarray) -> None:
    height, width = out.shape[:2]
    flags = cv2.INTER_AREA if matrix[0, 0] < 1 else cv2.INTER_LINEAR
    if matrix[0, 0] < 1:  # INTER_AREA needs resize; scale first, then crop
        scaled = cv2.resize(
            image,
            (round(image.shape[1] * matrix[0, 0]), round(image.shape[0] * matrix[1, 1])),
            interpolation=flags,
        )
        x0, y0 = round(-matrix[0, 2]), round(-matrix[1, 2])
        crop = scaled[y0 : y0 + height, x0 : x0 + width]
        out[:] = 0
        out[: crop.shape[0], : crop.shape[1]] = crop
        return
    cv2.warpAffine(
        image, matrix, (width, height), dst=out, flags=flags, borderMode=cv2.BORDER_REPLICATE
    )
