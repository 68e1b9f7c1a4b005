"""Background specs and the library of background images.

A background spec is a string:

* `original`: the renderer's own picture, nothing composited;
* `blur`: the picture's own background, strongly blurred;
* `color:#RRGGBB` (or just `#RRGGBB`): a solid colour;
* any other string: the id of an image registered in a `BackgroundLibrary`.

Ids such as `medical_office` or `clinic_room` are nothing special: they resolve once an image
has been registered under them. The library keeps its images as PNG files in one directory, so
they survive restarts and every process pointed at that directory (the control API that
registers them, the avatar workers that show them) sees the same set.
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
    """Background images by id, stored as `<id>.png` in `directory`.

    Thread-safe: the control API registers images while sessions composite. Writes are atomic
    (a temporary file renamed into place), so other processes never read half a file, and the
    fitted copies cached in memory are keyed on the file's size and modification time, so an
    image re-registered by another process is picked up on the next frame.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_backgrounds_dir()
        self._lock = threading.Lock()
        # (id, width, height) -> (file signature, fitted RGB image)
        self._fitted: dict[tuple[str, int, int], tuple[tuple[int, int], np.ndarray]] = {}

    def register(self, background_id: str, data: bytes) -> None:
        """Store an image (PNG, JPEG or WebP bytes) under `background_id`, replacing any.

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
        """Delete an image; KeyError when no image has that id."""
        with self._lock:
            self._forget(background_id)
            if not ID_PATTERN.fullmatch(background_id):
                raise KeyError(background_id)
            try:
                self._path(background_id).unlink()
            except FileNotFoundError:
                raise KeyError(background_id) from None

    def ids(self) -> list[str]:
        """The registered ids, sorted."""
        try:
            names = [path.name for path in self.directory.iterdir()]
        except FileNotFoundError:
            return []
        found = (name[: -len(_SUFFIX)] for name in names if name.endswith(_SUFFIX))
        return sorted(stem for stem in found if ID_PATTERN.fullmatch(stem))

    def __contains__(self, background_id: object) -> bool:
        return (
            isinstance(background_id, str)
            and ID_PATTERN.fullmatch(background_id) is not None
            and self._path(background_id).is_file()
        )

    def image(self, background_id: str, width: int, height: int) -> np.ndarray:
        """The image as (height, width, 3) uint8 RGB, scaled to cover that size and cropped
        around its centre. Cached per size; the array is read-only. KeyError when no image has
        that id."""
        if not ID_PATTERN.fullmatch(background_id):
            raise KeyError(background_id)
        path = self._path(background_id)
        key = (background_id, width, height)
        with self._lock:
            try:
                stat = path.stat()
            except FileNotFoundError:
                self._forget(background_id)
                raise KeyError(background_id) from None
            signature = (stat.st_size, stat.st_mtime_ns)
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

    def _forget(self, background_id: str) -> None:
        for key in [key for key in self._fitted if key[0] == background_id]:
            del self._fitted[key]


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
