"""Background specs and the library of background images.

A background spec is a string:

* `original`: the renderer's own picture, nothing composited;
* `blur`: the picture's own background, strongly blurred;
* `color:#RRGGBB` (or just `#RRGGBB`): a solid colour;
* any other string: the id of an image registered in a `BackgroundLibrary`.

A library has two layers. The images registered (uploaded) into it are PNG files in one
directory, so they survive restarts and every process pointed at that directory (the control
API that registers them, the avatar workers that show them) sees the same set. Under them lie
the images bundled with the runtime in `avatar_runtime/assets/backgrounds/` (package data,
drawn by `scripts/make_backgrounds.py`): `medical_office`, `clinic_room`, `hospital_room` and
`consultation_room`, there out of the box. An upload with a bundled image's id is shown instead
of it, and removing the upload brings the bundled image back; the bundled images themselves
are never written or removed.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from renderers.cache import cache_dir
from renderers.vision import load_image

ORIGINAL = "original"
BLUR = "blur"

ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_COLOR = re.compile(r"(?:color:)?#([0-9a-fA-F]{6})")
_SUFFIX = ".png"
BUNDLED_BACKGROUNDS_DIR = Path(__file__).resolve().parent / "assets" / "backgrounds"
"""The background images shipped with the runtime, `<id>.jpg` (or .jpeg, .png, .webp)."""
_BUNDLED_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def default_backgrounds_dir() -> Path:
    """`AVATAR_BACKGROUNDS_DIR`, else `$AVATAR_CACHE/backgrounds`."""
    explicit = os.environ.get("AVATAR_BACKGROUNDS_DIR")
    if explicit:
        return Path(explicit).expanduser()
    return cache_dir() / "backgrounds"


@dataclass(frozen=True)
class Background:
    """A parsed, valid background spec."""

    kind: str
    """'original', 'blur', 'color' or 'image'."""
    spec: str
    """The spec in its canonical spelling ('color:#rrggbb' for colours)."""
    color: tuple[int, int, int] | None = None
    image_id: str | None = None

    @property
    def is_original(self) -> bool:
        return self.kind == ORIGINAL


ORIGINAL_BACKGROUND = Background(ORIGINAL, ORIGINAL)


def parse_background(spec: str, library: BackgroundLibrary | None = None) -> Background:
    """The Background a spec names; ValueError, listing what is valid, when it names none."""
    if spec == ORIGINAL:
        return ORIGINAL_BACKGROUND
    if spec == BLUR:
        return Background(BLUR, BLUR)
    if isinstance(spec, str):
        color = _COLOR.fullmatch(spec)
        if color is not None:
            hex_digits = color.group(1).lower()
            rgb = tuple(int(hex_digits[i : i + 2], 16) for i in (0, 2, 4))
            return Background("color", f"color:#{hex_digits}", color=rgb)  # type: ignore[arg-type]
    ids = library.ids() if library is not None else []
    if spec in ids:
        return Background("image", spec, image_id=spec)
    valid = valid_backgrounds(library, ids=ids)
    raise ValueError(f"unknown background {spec!r}; valid: {', '.join(valid)}")


def valid_backgrounds(
    library: BackgroundLibrary | None = None, *, ids: list[str] | None = None
) -> list[str]:
    """What `parse_background` accepts, as a list to show: the built-in specs, the colour
    pattern and the library's image ids (`ids`, when the caller has just listed them)."""
    if ids is None:
        ids = library.ids() if library is not None else []
    return [ORIGINAL, BLUR, "color:#RRGGBB", *ids]


class BackgroundLibrary:
    """Background images by id: those registered, stored as `<id>.png` in `directory`, over
    those bundled in `bundled_dir` (default `BUNDLED_BACKGROUNDS_DIR`; a registered image wins
    over a bundled one with the same id).

    Thread-safe: the control API registers images while sessions composite. Writes are atomic
    (a temporary file renamed into place), so other processes never read half a file, and the
    fitted copies cached in memory are keyed on the file shown (its path, size and modification
    time), so an image re-registered by another process, or the bundled one coming back when an
    upload is removed, is picked up on the next frame.
    """

    def __init__(self, directory: Path | None = None, bundled_dir: Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_backgrounds_dir()
        self.bundled_dir = Path(bundled_dir) if bundled_dir is not None else BUNDLED_BACKGROUNDS_DIR
        self._lock = threading.Lock()
        # (id, width, height) -> (file signature, fitted RGB image)
        self._fitted: dict[tuple[str, int, int], tuple[tuple[str, int, int], np.ndarray]] = {}

    def register(self, background_id: str, data: bytes) -> None:
        """Store an image (PNG, JPEG or WebP bytes) under `background_id`, replacing any (a
        bundled image with that id stays in the package, hidden while this one exists).

        ValueError for a malformed id; RendererError from `load_image` ('unsupported_format',
        'corrupt_image', 'image_too_large') for bytes that are no usable image. Decoding and
        PNG encoding take a while for large photos: call it off the event loop.
        """
        _check_id(background_id)
        rgb = load_image(data)
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="PNG")
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(
                prefix=f".{background_id}-", suffix=".tmp", dir=self.directory
            )
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(buffer.getvalue())
                os.replace(temporary, self._path(background_id))
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            self._forget(background_id)

    def remove(self, background_id: str) -> None:
        """Delete a registered image (a bundled one with that id shows again); KeyError when
        none has that id. Bundled images cannot be removed."""
        with self._lock:
            self._forget(background_id)
            if not ID_PATTERN.fullmatch(background_id):
                raise KeyError(background_id)
            try:
                self._path(background_id).unlink()
            except FileNotFoundError:
                raise KeyError(background_id) from None

    def ids(self) -> list[str]:
        """Every id an image can be had for, registered or bundled, sorted."""
        return sorted({*self.registered_ids(), *self.bundled_ids()})

    def registered_ids(self) -> list[str]:
        """The ids of the registered (uploaded) images, sorted."""
        return _stems(self.directory, (_SUFFIX,))

    def bundled_ids(self) -> list[str]:
        """The ids of the bundled images, sorted, whether or not a registered one hides them."""
        return _stems(self.bundled_dir, _BUNDLED_SUFFIXES)

    def is_bundled(self, background_id: str) -> bool:
        """Whether the image shown for `background_id` is the bundled one (none registered)."""
        found = self._find(background_id)
        return found is not None and found[0]

    def path(self, background_id: str) -> Path:
        """The file of the image shown for `background_id`: the registered one, else the
        bundled one. KeyError when there is neither."""
        found = self._find(background_id)
        if found is None:
            raise KeyError(background_id)
        return found[1]

    def __contains__(self, background_id: object) -> bool:
        return isinstance(background_id, str) and self._find(background_id) is not None

    def image(self, background_id: str, width: int, height: int) -> np.ndarray:
        """The image as (height, width, 3) uint8 RGB, scaled to cover that size and cropped
        around its centre. Cached per size; the array is read-only. KeyError when no image has
        that id."""
        key = (background_id, width, height)
        with self._lock:
            for _ in range(3):  # the registered file may go between finding and reading it
                found = self._find(background_id)
                if found is None:
                    self._forget(background_id)
                    raise KeyError(background_id)
                path = found[1]
                try:
                    stat = path.stat()
                    break
                except FileNotFoundError:
                    continue
            else:
                raise KeyError(background_id)
            signature = (str(path), stat.st_size, stat.st_mtime_ns)
            cached = self._fitted.get(key)
            if cached is not None and cached[0] == signature:
                return cached[1]
            try:
                source = load_image(path)
            except FileNotFoundError:
                raise KeyError(background_id) from None
            fitted = cover_fit(source, width, height)
            fitted.flags.writeable = False
            self._fitted[key] = (signature, fitted)
            return fitted

    def _path(self, background_id: str) -> Path:
        return self.directory / f"{background_id}{_SUFFIX}"

    def _bundled_path(self, background_id: str) -> Path | None:
        for suffix in _BUNDLED_SUFFIXES:
            candidate = self.bundled_dir / f"{background_id}{suffix}"
            if candidate.is_file():
                return candidate
        return None

    def _find(self, background_id: str) -> tuple[bool, Path] | None:
        """(bundled?, file) of the image shown for `background_id`, or None."""
        if not isinstance(background_id, str) or not ID_PATTERN.fullmatch(background_id):
            return None
        if background_id in (ORIGINAL, BLUR):
            return None
        registered = self._path(background_id)
        if registered.is_file():
            return False, registered
        bundled = self._bundled_path(background_id)
        return (True, bundled) if bundled is not None else None

    def _forget(self, background_id: str) -> None:
        for key in [key for key in self._fitted if key[0] == background_id]:
            del self._fitted[key]


def _stems(directory: Path, suffixes: tuple[str, ...]) -> list[str]:
    """The valid image ids among the files in `directory` ending in one of `suffixes`."""
    try:
        names = [path.name for path in directory.iterdir()]
    except OSError:  # missing, or not a directory
        return []
    found: set[str] = set()
    for name in names:
        stem, dot, suffix = name.rpartition(".")
        if dot and f".{suffix}" in suffixes and ID_PATTERN.fullmatch(stem):
            if stem not in (ORIGINAL, BLUR):
                found.add(stem)
    return sorted(found)


def cover_fit(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """`rgb` scaled (keeping its aspect) to the smallest size covering width x height, then
    cropped to exactly that size around its centre."""
    h, w = rgb.shape[:2]
    scale = max(width / w, height / h)
    scaled_w = max(width, round(w * scale))
    scaled_h = max(height, round(h * scale))
    shrinking = scaled_w < w or scaled_h < h
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    scaled = cv2.resize(rgb, (scaled_w, scaled_h), interpolation=interpolation)
    left = (scaled_w - width) // 2
    top = (scaled_h - height) // 2
    return np.ascontiguousarray(scaled[top : top + height, left : left + width])


def _check_id(background_id: str) -> None:
    if not isinstance(background_id, str) or not ID_PATTERN.fullmatch(background_id):
        raise ValueError(
            f"invalid background id {background_id!r}: 1 to 64 characters of a-z, 0-9, '_' "
            "and '-', starting with a letter or digit"
        )
    if background_id in (ORIGINAL, BLUR):
        raise ValueError(f"'{background_id}' is reserved and cannot name an image")
