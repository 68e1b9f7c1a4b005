"""Loading a portrait image and checking it holds exactly one usable face."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..base import RendererError
from .face_detector import detect_faces
from .face_mesh import FaceMesh, face_mesh
from .geometry import as_rgb

FORMATS = ("PNG", "JPEG", "WEBP")
MAX_IMAGE_PIXELS = 40_000_000
"""The largest picture decoded (a 40 MP photo is about 120 MB as RGB): a file of a few KiB can
claim 100000x100000 pixels (a decompression bomb), so the size in its header is checked
before anything is decoded. avatar_runtime.offline's OfflineRenderLimits uses the same."""


def sniff_format(head: bytes) -> str | None:
    """'PNG', 'JPEG' or 'WEBP' from a file's first bytes, else None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def load_image(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> np.ndarray:
    """A PNG, JPEG or WebP file (path or bytes) as an HxWx3 uint8 RGB array.

    EXIF orientation is applied; transparency is composited over white. RendererError
    'unsupported_format' when the bytes are no PNG/JPEG/WebP, 'corrupt_image' when they
    claim to be one but do not decode. A missing file raises FileNotFoundError.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = "image"
    else:
        data = Path(source).read_bytes()
        name = Path(source).name
    kind = sniff_format(data[:16])
    if kind is None:
        raise RendererError("unsupported_format", f"{name} is not a PNG, JPEG or WebP image")
    try:
        with warnings.catch_warnings():
            # Pillow only warns about very large images; treat those as errors too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[kind]) as opened:
                width, height = opened.size  # from the header: nothing is decoded yet
                if width * height > MAX_IMAGE_PIXELS:
                    raise _too_large(name, f"it is {width}x{height} pixels")
                opened.load()
                image = ImageOps.exif_transpose(opened)
                if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                    rgba = image.convert("RGBA")
                    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    image = Image.alpha_composite(white, rgba)
                rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except RendererError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own limit (raised while reading the header) is above ours: far too big.
        raise _too_large(name, "it claims far more pixels than that") from None
    except Image.UnidentifiedImageError as exc:  # its str() shows a Python object's repr
        raise RendererError(
            "corrupt_image", f"{name} looks like {kind} but its header is damaged"
        ) from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ... here
        raise RendererError(
            "corrupt_image", f"{name} looks like {kind} but cannot be decoded: {exc}"
        ) from exc
    return rgb


def _too_large(name: str, size: str) -> RendererError:
    return RendererError(
        "image_too_large",
        f"{name} is too large: at most {MAX_IMAGE_PIXELS} pixels are taken, and {size}",
    )


def analyse_portrait(rgb: np.ndarray, *, min_size: int = 128, min_face: int = 64) -> FaceMesh:
    """The face mesh of a portrait that must show exactly one face.

    RendererError codes (stable): 'image_too_small' when the image's shorter side is under
    `min_size` pixels; 'no_face'; 'face_too_small' when no face is `min_face` pixels or
    larger (a face's size is the longer side of its detection box, which spans roughly
    brows to chin); 'multiple_faces' when more than one is. Faces smaller than `min_face`
    next to one large enough (people far in the background) are ignored.
    """
    rgb = as_rgb(rgb)
    h, w = rgb.shape[:2]
    if min(h, w) < min_size:
        raise RendererError(
            "image_too_small",
            f"Image is {w}x{h} pixels; at least {min_size} pixels on each side required",
        )
    faces = detect_faces(rgb)
    if not faces:
        raise RendererError("no_face", "No face detected in image")
    large = [face for face in faces if face.size >= min_face]
    if not large:
        biggest = max(face.size for face in faces)
        raise RendererError(
            "face_too_small",
            f"Face is {biggest:.0f} pixels; at least {min_face} pixels required",
        )
    if len(large) > 1:
        raise RendererError("multiple_faces", "Multiple faces detected, single face required")
    mesh = face_mesh(rgb, large[0])
    if mesh.presence < 0.5:
        raise RendererError("no_face", "No face detected in image")
    return mesh
