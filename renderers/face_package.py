"""Reading a face-video avatar package (wav2lip's, MuseTalk's): the parts both layouts share.

Such a package is a directory (as the job system installs it) or an uncompressed `.tar` of
one, read in place: `full_imgs/<n>.png` frames plus per-layout files (face crops, masks,
pickled boxes, latents). This module opens either form behind one `PackageReader`, decodes
its images safely, unpickles its box lists without running code, and frames the video to
the output size ("cover", centred on the face). The layouts themselves (which files, what
they mean) stay in each renderer's package.py.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from collections.abc import Collection
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image

from .base import RendererError
from .errors import short_reason
from .vision.portrait import MAX_IMAGE_PIXELS

Box = tuple[int, int, int, int]

_SAFE_PICKLE_GLOBALS = {
    # numpy integers in a box list (LiveTalking's packages may hold them): data, not code.
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"),
}


def invalid_package(message: str) -> RendererError:
    return RendererError("invalid_package", message)


# -- reading ----------------------------------------------------------------------------------


class PackageReader:
    """Member names (relative, '/'-separated, no leading './') and their bytes."""

    names: set[str]

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def __enter__(self) -> PackageReader:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class DirectoryReader(PackageReader):
    """A package directory: the named `files` at its top and every file in `folders`."""

    def __init__(self, root: Path, *, files: Collection[str], folders: Collection[str]) -> None:
        self.root = root
        self.names = {name for name in files if (root / name).is_file()}
        for folder in folders:
            if (root / folder).is_dir():
                self.names |= {f"{folder}/{path.name}" for path in (root / folder).iterdir()}

    def read(self, name: str) -> bytes:
        try:
            return (self.root / name).read_bytes()
        except OSError as error:
            raise RendererError(
                "source_unreadable", f"cannot read {name}: {short_reason(error)}"
            ) from None


class TarReader(PackageReader):
    """The members of an uncompressed package tar in `file` (which it closes), read in place,
    never unpacked. Every member is checked first (renderers.preparation.package_members:
    files and directories only, no `..` or absolute names, at most MAX_PACKAGE_MEMBERS members
    and MAX_PACKAGE_BYTES declared), and none may claim bytes past the file's end.

    `roots`: the package's top-level names; a member is named from the first of them in its
    path, so './full_imgs/...' and 'avatar_id/full_imgs/...' both read as 'full_imgs/...'."""

    def __init__(self, file: BinaryIO, name: str, *, roots: Collection[str]) -> None:
        from .preparation import PreparationError, package_members

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
                        raise invalid_package(f"{name} is damaged or cut short")
                    members[_member_name(relative.as_posix(), roots)] = member
        except PreparationError as error:
            file.close()
            raise invalid_package(f"{name} is not a safe avatar package: {error.message}") from None
        except tarfile.ReadError:
            file.close()
            raise invalid_package(f"{name} is not an uncompressed TAR, or is damaged") from None
        except (OSError, tarfile.TarError, EOFError):
            file.close()
            raise invalid_package(f"{name} is damaged or cut short") from None
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
            raise invalid_package(f"{self.label}: {name} cannot be read") from None

    def __exit__(self, *exc: object) -> None:
        self.tar.close()
        self.file.close()


def _member_name(name: str, roots: Collection[str]) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    for i, part in enumerate(parts):  # drop a leading folder such as 'avatar_id/'
        if part in roots:
            return "/".join(parts[i:])
    return "/".join(parts)


def open_package(
    source: Path,
    *,
    files: Collection[str],
    folders: Collection[str],
    unread: Collection[str] = (),
    not_a_package: str,
) -> PackageReader:
    """A reader for the package directory or tar at `source`: its `files` and `folders`
    (`unread`: other top-level names a tar may hold, such as an info file; they only mark
    where a tar's package starts). RendererError
    'source_unreadable' when it does not exist, else 'invalid_package' (with `not_a_package`
    as the message when it is neither a directory nor a tar). Messages name the package by
    its name alone: they reach users (a render's error)."""
    if source.is_dir():
        return DirectoryReader(source, files=files, folders=folders)
    if source.is_file() and tarfile.is_tarfile(source):
        return TarReader(source.open("rb"), source.name, roots=(*files, *folders, *unread))
    if not source.exists():
        raise RendererError("source_unreadable", f"avatar package {source.name} does not exist")
    raise invalid_package(not_a_package)


# -- decoding ---------------------------------------------------------------------------------


class _NumbersUnpickler(pickle.Unpickler):
    """Numbers in lists and tuples only; anything that names code is refused, so a package
    cannot run code when it is loaded."""

    def __init__(self, file: BinaryIO, name: str) -> None:
        super().__init__(file)
        self.name = name

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _SAFE_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{self.name} may hold only numbers, not {module}.{name}")


def unpickle_boxes(data: bytes, name: str) -> list[tuple[int, ...]]:
    """The pickled list of boxes in member `name`, each as a tuple of ints (any length: the
    caller checks it). Raises whatever a malformed pickle raises; never runs its code."""
    raw = _NumbersUnpickler(io.BytesIO(data), name).load()
    return [tuple(int(v) for v in box) for box in raw]


def numbered_images(names: set[str], folder: str) -> list[str]:
    """`folder/<n>.png` members in numeric order (LiveTalking sorts them by number too)."""
    found = []
    for name in names:
        parent, _, file = name.rpartition("/")
        stem, dot, suffix = file.rpartition(".")
        if parent == folder and dot and suffix.lower() in ("png", "jpg", "jpeg") and stem.isdigit():
            found.append((int(stem), name))
    return [name for _, name in sorted(found)]


def decode_image(data: bytes, name: str, label: str) -> np.ndarray:
    """Member `name` of package `label` as (H, W, 3) uint8 RGB, or 'invalid_package'."""
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
        raise invalid_package(f"{label}: {name} is larger than {MAX_IMAGE_PIXELS} pixels")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise invalid_package(f"{label}: {name} is not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# -- framing ----------------------------------------------------------------------------------


def cover_matrix(
    frame_w: int, frame_h: int, width: int, height: int, mean_box: np.ndarray
) -> np.ndarray:
    """2x3 affine: scale the frame to cover width x height, the crop centred on the face
    (mean_box: x1, y1, x2, y2) as far as the frame reaches."""
    scale = max(width / frame_w, height / frame_h)
    x1, y1, x2, y2 = mean_box
    centre_x, centre_y = (x1 + x2) / 2 * scale, (y1 + y2) / 2 * scale
    # Whole pixels, so the scaled-then-cropped frame and the boxes agree exactly.
    shift_x = -round(float(np.clip(centre_x - width / 2, 0, frame_w * scale - width)))
    shift_y = -round(float(np.clip(centre_y - height / 2, 0, frame_h * scale - height)))
    return np.array([[scale, 0.0, shift_x], [0.0, scale, shift_y]])


def warp_to_cover(image: np.ndarray, matrix: np.ndarray, out: np.ndarray) -> None:
    """Write `image` through a cover_matrix into `out` (H, W, 3), in place."""
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


def frame_video(
    reader: PackageReader,
    names: list[str],
    width: int,
    height: int,
    boxes: np.ndarray,
    label: str,
) -> tuple[np.ndarray, np.ndarray]:
    """The frames `names` decoded and framed to width x height ((N, H, W, 3) uint8 RGB), the
    crop centred on the mean of `boxes` ((N, 4) x1, y1, x2, y2 in the video's pixels), and
    those boxes moved into the framed pixels ((N, 4) float64 x0, y0, x1, y1)."""
    first = decode_image(reader.read(names[0]), names[0], label)
    frame_h, frame_w = first.shape[:2]
    matrix = cover_matrix(frame_w, frame_h, width, height, boxes.mean(axis=0))
    framed = np.empty((len(names), height, width, 3), dtype=np.uint8)
    for i, name in enumerate(names):
        image = first if i == 0 else decode_image(reader.read(name), name, label)
        if image.shape[:2] != (frame_h, frame_w):
            raise invalid_package(f"{label}: {name} is not {frame_w}x{frame_h} like the first")
        warp_to_cover(image, matrix, framed[i])
    scale, shift = matrix[0, 0], matrix[:, 2]
    moved = boxes * scale + np.array([shift[0], shift[1], shift[0], shift[1]])
    return framed, moved


def ping_pong(index: int, count: int) -> int:
    """The frame of `count` shown as output frame `index`: forward, then backward, and again,
    so the loop has no jump; the turning frames are not shown twice."""
    if count == 1:
        return 0
    phase = index % (2 * count - 2)
    return phase if phase < count else 2 * count - 2 - phase
