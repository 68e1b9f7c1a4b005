"""A MuseTalk avatar package, loaded for rendering.

A package is a directory (as the job system installs it) or a `.tar` of one, laid out as
MuseTalk's (and LiveTalking's) avatar preparation writes it (seed 000):

    full_imgs/%08d.png   the video's frames
    coords.pkl           per frame, the face box [x1, y1, x2, y2] (MuseTalk's order)
    latents.pt           torch.save'd list of (1, 8, 32, 32) tensors: masked + reference latents
    mask/%08d.png        per frame, the blending mask over its crop box (grayscale)
    mask_coords.pkl      per frame, that crop box [x1, y1, x2, y2] (may reach past the frame)
    avator_info.json     {avatar_id, video_path, bbox_shift, version} (optional here)

As for wav2lip's packages, the frames are framed once to the output size ("cover", centred
on the mean face box) and kept decoded, at most `max_frames` of them; the boxes are mapped
into the framed pixels. A LiveTalking package (no reversed copy, whatever count) loads too.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..face_package import (
    PackageReader,
    decode_image,
    frame_video,
    invalid_package,
    numbered_images,
    open_package,
    ping_pong,
    unpickle_boxes,
)

REQUIRED = ("coords.pkl", "mask_coords.pkl", "latents.pt")
_FOLDERS = ("full_imgs", "mask")
_UNREAD = ("avator_info.json", "avatar.json")  # optional, not read


@dataclass(frozen=True)
class MuseTalkAvatar:
    frames: np.ndarray
    """(N, H, W, 3) uint8 RGB, framed to the output size."""
    latents: np.ndarray
    """(N, 8, h, w) float32: the UNet's latent input per frame."""
    boxes: np.ndarray
    """(N, 4) float64 x0, y0, x1, y1: the face box in framed pixels."""
    masks: tuple[np.ndarray, ...]
    """Per frame, (h, w) uint8: the blending mask cut to the face box, in the video's pixels
    (its only part that changes pixels: outside the box MuseTalk pastes the frame's own
    pixels back)."""

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def frame_for(self, index: int) -> int:
        """The avatar frame shown as output frame `index` (ping-pong)."""
        return ping_pong(index, self.num_frames)


def is_package(source: Path) -> bool:
    source = Path(source)
    if source.is_dir():
        return all((source / name).is_file() for name in REQUIRED)
    return source.is_file() and tarfile.is_tarfile(source)


def load_package(source: Path, width: int, height: int, *, max_frames: int) -> MuseTalkAvatar:
    source = Path(source)
    not_a_package = f"{source.name} is not a musetalk avatar package: give a directory or .tar"
    with open_package(
        source, files=REQUIRED, folders=_FOLDERS, unread=_UNREAD, not_a_package=not_a_package
    ) as reader:
        return _load(reader, width, height, max_frames, source.name)


def _read_boxes(data: bytes, name: str, label: str) -> list[tuple[int, int, int, int]]:
    try:
        boxes = unpickle_boxes(data, name)
        if any(len(box) != 4 for box in boxes):
            raise ValueError("a box without 4 numbers")
    except Exception as error:  # noqa: BLE001 - any malformed pickle: a bad package
        raise invalid_package(
            f"{label}: {name} is not a list of [x1, y1, x2, y2]: {error}"
        ) from None
    for box in boxes:
        if box[2] <= box[0] or box[3] <= box[1]:
            raise invalid_package(f"{label}: {name} has an empty box {list(box)}")
    return boxes  # type: ignore[return-value]


def _read_latents(data: bytes, label: str) -> np.ndarray:
    import torch  # here: package checks need not load it

    try:
        raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        items = raw if isinstance(raw, (list, tuple)) else [raw]
        latents = torch.cat([t.reshape(-1, *t.shape[-3:]) for t in items]).float().numpy()
    except Exception as error:  # noqa: BLE001 - a damaged or foreign file
        raise invalid_package(
            f"{label}: latents.pt is not a list of (1, 8, h, w) tensors ({type(error).__name__})"
        ) from None
    if latents.ndim != 4 or latents.shape[1] != 8:
        raise invalid_package(
            f"{label}: latents.pt holds {latents.shape[1:]} latents, not (8, h, w)"
        )
    return latents


def _load(
    reader: PackageReader, width: int, height: int, max_frames: int, label: str
) -> MuseTalkAvatar:
    for name in REQUIRED:
        if name not in reader.names:
            raise invalid_package(f"{label} is not a musetalk avatar package: no {name}")
    coords = _read_boxes(reader.read("coords.pkl"), "coords.pkl", label)
    crops = _read_boxes(reader.read("mask_coords.pkl"), "mask_coords.pkl", label)
    latents = _read_latents(reader.read("latents.pt"), label)
    full = numbered_images(reader.names, "full_imgs")
    masks = numbered_images(reader.names, "mask")
    count = min(len(coords), len(crops), len(latents), len(full), len(masks))
    if count == 0:
        raise invalid_package(
            f"{label} is not a usable musetalk avatar package: {len(full)} full_imgs, "
            f"{len(masks)} masks, {len(coords)} coords, {len(crops)} mask_coords, "
            f"{len(latents)} latents"
        )
    count = min(count, max_frames)
    box = np.asarray(coords[:count], dtype=np.float64)  # x1, y1, x2, y2
    framed, boxes = frame_video(reader, full[:count], width, height, box, label)
    cut = [
        _face_part(decode_image(reader.read(name), name, label)[..., 0], face, crop, label, name)
        for name, face, crop in zip(masks[:count], coords, crops, strict=False)
    ]
    return MuseTalkAvatar(frames=framed, latents=latents[:count], boxes=boxes, masks=tuple(cut))


def _face_part(
    mask: np.ndarray,
    face: tuple[int, int, int, int],
    crop: tuple[int, int, int, int],
    label: str,
    name: str,
) -> np.ndarray:
    """The mask's pixels over the face box (in the video's pixels), uint8."""
    import cv2

    x1, y1, x2, y2 = face
    cx1, cy1, cx2, cy2 = crop
    if mask.shape[:2] != (cy2 - cy1, cx2 - cx1):  # a package written at another size
        mask = cv2.resize(mask, (cx2 - cx1, cy2 - cy1), interpolation=cv2.INTER_LINEAR)
    part = np.zeros((y2 - y1, x2 - x1), dtype=np.uint8)
    # The face box inside the crop box (MuseTalk's crop box contains it by construction).
    sx1, sy1 = max(x1, cx1), max(y1, cy1)
    sx2, sy2 = min(x2, cx2), min(y2, cy2)
    if sx2 <= sx1 or sy2 <= sy1:
        raise invalid_package(f"{label}: {name}'s crop box does not overlap the face box")
    part[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = mask[
        sy1 - cy1 : sy2 - cy1, sx1 - cx1 : sx2 - cx1
    ]
    return part
