"""The background images bundled with the runtime (`avatar_runtime/assets/backgrounds`, drawn
by scripts/make_backgrounds.py): there out of the box, shown by the Compositor, replaced by an
upload with the same id (and back when the upload goes), and listed by the control API."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from PIL import Image

from avatar_runtime import BackgroundLibrary, Compositor, parse_background, valid_backgrounds
from avatar_runtime.backgrounds import BUNDLED_BACKGROUNDS_DIR
from renderers.vision import load_image
from tests.control_api_client import AUTH, assert_error, make_settings, start_client

SEED_IDS = ["clinic_room", "consultation_room", "hospital_room", "medical_office"]
"""The ids of seed 002's "Available Backgrounds", sorted."""
SIZE = 256


def png(rgb: tuple[int, int, int], size: tuple[int, int] = (160, 90)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def person_frame() -> np.ndarray:
    """An RGBA frame whose alpha is the person mask: a grey 'person' (an upright ellipse) on a
    magenta background that no room has."""
    frame = np.zeros((SIZE, SIZE, 4), np.uint8)
    frame[..., :3] = (255, 0, 255)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    person = ((xs - SIZE / 2) / (SIZE * 0.22)) ** 2 + ((ys - SIZE * 0.7) / (SIZE * 0.45)) ** 2 < 1
    frame[person, :3] = (128, 110, 100)
    frame[..., 3] = np.where(person, 255, 0)
    return frame


BACKGROUND = (slice(0, SIZE * 3 // 16), slice(None))  # the top: beside and above the head
PERSON = (slice(SIZE * 3 // 4, SIZE), slice(SIZE * 7 // 16, SIZE * 9 // 16))


def test_the_seed_ids_are_valid_with_an_empty_backgrounds_dir(tmp_path: Path) -> None:
    library = BackgroundLibrary(tmp_path / "backgrounds")  # does not even exist
    assert library.ids() == SEED_IDS
    assert library.bundled_ids() == SEED_IDS
    assert library.registered_ids() == []
    assert valid_backgrounds(library)[3:] == SEED_IDS
    for background_id in SEED_IDS:
        assert background_id in library
        assert library.is_bundled(background_id)
        assert library.path(background_id).parent == BUNDLED_BACKGROUNDS_DIR
        assert parse_background(background_id, library).image_id == background_id
        fitted = library.image(background_id, 512, 512)
        assert fitted.shape == (512, 512, 3) and fitted.std() > 10  # a picture, not a fill
    assert not (tmp_path / "backgrounds").exists()  # offered without writing anything
    assert "blur" not in library and "original" not in library and "../x" not in library


def test_the_bundled_files_are_small_1280x720_pictures() -> None:
    files = sorted(BUNDLED_BACKGROUNDS_DIR.iterdir())
    assert [f.stem for f in files] == SEED_IDS
    for path in files:
        assert path.suffix == ".jpg"
        assert path.stat().st_size < 300 * 1024, path
        rgb = load_image(path)
        assert rgb.shape == (720, 1280, 3), path
        # Natural, not garish: moderate saturation on average.
        hsv = np.asarray(Image.fromarray(rgb).convert("HSV"))
        assert 10 < hsv[..., 1].mean() < 110, path


def test_the_compositor_shows_each_room(tmp_path: Path) -> None:
    library = BackgroundLibrary(tmp_path / "backgrounds")
    frame = person_frame()
    original = Compositor(SIZE, SIZE, library, mask_from_alpha=True).apply(
        frame, parse_background("original", library)
    )
    seen = []
    for background_id in SEED_IDS:
        compositor = Compositor(SIZE, SIZE, library, mask_from_alpha=True)
        out = compositor.apply(frame, compositor.resolve(background_id))
        difference = np.abs(out[..., :3].astype(int) - original[..., :3])
        assert difference[BACKGROUND].mean() > 60, background_id  # the room, not magenta
        assert difference[PERSON].max() <= 2, background_id  # the person as drawn
        assert np.array_equal(
            out[BACKGROUND][..., :3], library.image(background_id, SIZE, SIZE)[BACKGROUND]
        )
        seen.append(out[BACKGROUND][..., :3].astype(int))
    for i in range(len(seen)):  # four different rooms
        for j in range(i + 1, len(seen)):
            assert np.abs(seen[i] - seen[j]).mean() > 8, (SEED_IDS[i], SEED_IDS[j])


def test_an_upload_with_a_bundled_id_replaces_it_until_removed(tmp_path: Path) -> None:
    library = BackgroundLibrary(tmp_path / "backgrounds")
    bundled = library.image("clinic_room", SIZE, SIZE).copy()
    library.register("clinic_room", png((200, 30, 40)))
    assert library.ids() == SEED_IDS  # still once
    assert library.registered_ids() == ["clinic_room"]
    assert not library.is_bundled("clinic_room")
    assert library.path("clinic_room") == tmp_path / "backgrounds" / "clinic_room.png"
    assert library.image("clinic_room", SIZE, SIZE)[0, 0].tolist() == [200, 30, 40]
    compositor = Compositor(SIZE, SIZE, library, mask_from_alpha=True)
    out = compositor.apply(person_frame(), compositor.resolve("clinic_room"))
    assert out[4, 4, :3].tolist() == [200, 30, 40]
    # Another library on the directory (another process) shows the upload too.
    other = BackgroundLibrary(tmp_path / "backgrounds")
    assert other.image("clinic_room", 8, 8)[0, 0].tolist() == [200, 30, 40]

    library.remove("clinic_room")  # the bundled picture is back, not a stale cached copy
    assert library.is_bundled("clinic_room")
    assert np.array_equal(library.image("clinic_room", SIZE, SIZE), bundled)
    with pytest.raises(KeyError):
        library.remove("clinic_room")  # bundled images cannot be removed
    assert library.ids() == SEED_IDS

    # A library can be given other bundled images, or none.
    empty = BackgroundLibrary(tmp_path / "backgrounds", bundled_dir=tmp_path / "none")
    assert empty.ids() == [] and "clinic_room" not in empty
    with pytest.raises(ValueError):
        parse_background("clinic_room", empty)


# --- the control API -----------------------------------------------------------------------


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    c = await start_client(make_settings(tmp_path))
    try:
        yield c
    finally:
        await c.close()


def _upload(background_id: str, data: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("id", background_id)
    form.add_field("file", data, filename="bg.png", content_type="image/png")
    return form


async def _images(client: TestClient) -> list[dict]:
    listed = await (await client.get("/backgrounds", headers=AUTH)).json()
    return [b for b in listed["backgrounds"] if b["kind"] == "image"]


async def test_the_listing_includes_the_bundled_backgrounds(client: TestClient) -> None:
    images = await _images(client)
    assert [b["id"] for b in images] == SEED_IDS
    for entry in images:
        assert entry["source"] == "bundled"
        assert entry["url"] == f"/backgrounds/{entry['id']}.png"
        assert entry["description"] and entry["description"] != "An uploaded image"
    office = next(b for b in images if b["id"] == "medical_office")
    assert office["description"] == "Professional medical setting"

    image = await client.get("/backgrounds/medical_office.png", headers=AUTH)
    assert image.status == 200 and image.content_type == "image/jpeg"
    assert load_image(await image.read()).shape == (720, 1280, 3)
    assert (await client.get("/backgrounds/medical_office.png")).status == 401


async def test_an_upload_replaces_a_bundled_background_in_the_api(client: TestClient) -> None:
    resp = await client.post(
        "/backgrounds", data=_upload("medical_office", png((9, 99, 199))), headers=AUTH
    )
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["source"] == "uploaded"
    images = await _images(client)
    assert [b["id"] for b in images] == SEED_IDS  # listed once, as the upload
    office = next(b for b in images if b["id"] == "medical_office")
    assert office["source"] == "uploaded" and office["description"] == "An uploaded image"
    image = await client.get("/backgrounds/medical_office.png", headers=AUTH)
    assert image.content_type == "image/png"
    assert load_image(await image.read())[0, 0].tolist() == [9, 99, 199]

    deleted = await client.delete("/backgrounds/medical_office", headers=AUTH)
    assert (await deleted.json()) == {"id": "medical_office", "deleted": True}
    image = await client.get("/backgrounds/medical_office.png", headers=AUTH)
    assert image.status == 200 and image.content_type == "image/jpeg"  # the bundled one again
    again = await client.delete("/backgrounds/medical_office", headers=AUTH)
    assert again.status == 409
    assert "upload" in assert_error(await again.json(), "background_bundled")["message"]
    assert [b["source"] for b in await _images(client)] == ["bundled"] * 4
    missing = await client.delete("/backgrounds/beach", headers=AUTH)
    assert missing.status == 404
    assert_error(await missing.json(), "background_not_found")
