"""Background replacement: the image library, background specs, the Compositor on a real
portrait (scikit-image's astronaut at 256x256) and background switches through the real
AvatarVideoGenerator.

The portrait renderer comes in two kinds: one whose alpha channel is the person mask
(`alpha_is_person_mask`), and one with an opaque alpha, which the compositor segments itself
with MediaPipe's selfie segmentation.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Sequence

import cv2
import numpy as np
import pytest
from livekit import rtc
from PIL import Image
from skimage import data

from avatar_runtime import (
    AvatarState,
    BackgroundLibrary,
    BackgroundStage,
    Compositor,
    FramePacer,
    default_backgrounds_dir,
    parse_background,
)
from renderers import FrameRequest, Renderer, RendererCapabilities, RendererError, VideoFormat
from renderers.vision import face_mesh, person_mask
from tests.test_runtime import FPS

SIZE = 256
GREEN = (0, 255, 0)


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return cv2.resize(data.astronaut(), (SIZE, SIZE), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def mask(portrait) -> np.ndarray:
    return person_mask(portrait)


@pytest.fixture(scope="module")
def face(portrait) -> tuple[slice, slice]:
    """A 9x9 patch around the nose tip: well inside the person."""
    x, y = face_mesh(data.astronaut()).points[1][:2] * SIZE / 512
    x, y = round(float(x)), round(float(y))
    return slice(y - 4, y + 5), slice(x - 4, x + 5)


CORNERS = ((slice(0, 24), slice(0, 24)), (slice(0, 24), slice(SIZE - 24, SIZE)))
"""The portrait's top corners: well outside the person (the bottom ones show the suit)."""


def rgba(rgb: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    alpha = np.full(rgb.shape[:2], 255, np.uint8) if mask is None else np.round(mask * 255)
    return np.dstack([rgb, alpha.astype(np.uint8)])


def png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


class PortraitRenderer(Renderer):
    """Draws the same picture for every frame; remembers which frames it drew."""

    name = "portrait"

    def __init__(self, video: VideoFormat, picture: np.ndarray, *, alpha_is_mask: bool) -> None:
        super().__init__(video)
        self.capabilities = RendererCapabilities(
            sample_rate=16000, batch_size=1, alpha_is_person_mask=alpha_is_mask
        )
        self.picture = picture
        self.rendered: list[int] = []

    def render(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
        self.rendered.extend(r.index for r in requests)
        return [self.picture.copy() for _ in requests]


def frame_of(portrait: np.ndarray, mask: np.ndarray, from_alpha: bool) -> np.ndarray:
    return rgba(portrait, mask if from_alpha else None)


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


# --------------------------------------------------------------------------- the compositor

FROM = pytest.mark.parametrize("from_alpha", [True, False], ids=["alpha-mask", "segmented"])


@FROM
def test_solid_colour_fills_the_background_and_keeps_the_face(
    portrait, mask, face, from_alpha
) -> None:
    frame = frame_of(portrait, mask, from_alpha)
    before = frame.copy()
    compositor = Compositor(SIZE, SIZE, None, mask_from_alpha=from_alpha)
    out = compositor.apply(frame, parse_background("color:#00ff00"))

    assert out.shape == frame.shape and out.dtype == np.uint8
    assert (out[..., 3] == 255).all()
    for corner in CORNERS:
        assert max_diff(out[corner][..., :3], np.array(GREEN, np.uint8)) <= 2
    assert max_diff(out[face][..., :3], portrait[face]) <= 2
    assert np.array_equal(frame, before), "the renderer's frame was modified"


@FROM
def test_blur_softens_the_background_but_not_the_face(portrait, mask, face, from_alpha) -> None:
    compositor = Compositor(SIZE, SIZE, None, mask_from_alpha=from_alpha)
    out = compositor.apply(frame_of(portrait, mask, from_alpha), parse_background("blur"))

    assert max_diff(out[face][..., :3], portrait[face]) <= 2
    background = mask < 0.02
    gray_in = cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gray_out = cv2.cvtColor(np.ascontiguousarray(out[..., :3]), cv2.COLOR_RGB2GRAY)
    detail_in = np.abs(cv2.Laplacian(gray_in, cv2.CV_32F))[background].mean()
    detail_out = np.abs(cv2.Laplacian(gray_out.astype(np.float32), cv2.CV_32F))[background].mean()
    assert detail_out < detail_in / 4, (detail_in, detail_out)
    changed = np.abs(out[..., :3].astype(np.int16) - portrait.astype(np.int16)).mean(axis=2)
    assert changed[background].mean() > 10


@FROM
def test_an_image_from_the_library_fills_the_background(
    portrait, mask, face, from_alpha, tmp_path
) -> None:
    library = BackgroundLibrary(tmp_path)
    # A wide image: cover-fitting scales it to 512x256 and keeps the middle 256 columns.
    x = np.arange(400, dtype=np.float32)
    wide = np.zeros((200, 400, 3), np.uint8)
    wide[..., 0] = np.round(x * 255 / 399).astype(np.uint8)
    wide[..., 2] = 90
    library.register("clinic_room", png(wide))

    fitted = library.image("clinic_room", SIZE, SIZE)
    assert fitted.shape == (SIZE, SIZE, 3)
    assert abs(int(fitted[100, 0, 0]) - round(100 * 255 / 399)) <= 3
    assert abs(int(fitted[100, -1, 0]) - round(299.5 * 255 / 399)) <= 3

    compositor = Compositor(SIZE, SIZE, library, mask_from_alpha=from_alpha)
    out = compositor.apply(
        frame_of(portrait, mask, from_alpha), parse_background("clinic_room", library)
    )
    for corner in CORNERS:
        assert max_diff(out[corner][..., :3], fitted[corner]) <= 2
    assert max_diff(out[face][..., :3], portrait[face]) <= 2


def test_original_only_makes_the_alpha_opaque(portrait, mask) -> None:
    compositor = Compositor(SIZE, SIZE, None, mask_from_alpha=True)
    frame = rgba(portrait, mask)
    out = compositor.apply(frame, parse_background("original"))
    assert np.array_equal(out[..., :3], portrait) and (out[..., 3] == 255).all()
    assert not np.array_equal(frame[..., 3], out[..., 3])  # the input kept its mask
    opaque = rgba(portrait)
    plain = Compositor(SIZE, SIZE, None, mask_from_alpha=False)
    assert plain.apply(opaque, parse_background("original")) is opaque  # nothing to change


def test_the_edge_moves_gradually_when_the_mask_jumps() -> None:
    """An exponential moving average with weight 1/2: halfway after one frame."""
    compositor = Compositor(SIZE, SIZE, None, mask_from_alpha=True)
    black = parse_background("#000000")
    frame = np.full((SIZE, SIZE, 4), 200, np.uint8)

    def edge_at(x: int) -> np.ndarray:
        moved = frame.copy()
        moved[..., 3] = 0
        moved[:, :x, 3] = 255  # the person fills the columns left of x
        return moved

    for _ in range(6):
        out = compositor.apply(edge_at(100), black)
    assert out[128, 90, 0] == 200 and out[128, 104, 0] == 0

    seen = []
    for _ in range(4):  # the person jumps 8 pixels to the right and stays there
        seen.append(int(compositor.apply(edge_at(108), black)[128, 104, 0]))
    assert abs(seen[0] - 100) <= 3, seen  # halfway after one frame
    assert abs(seen[1] - 150) <= 3, seen
    assert seen == sorted(seen) and seen[-1] >= 185, seen

    # A new background starts from the mask as it is, without the old one's history, and so
    # does the same background after a spell of `original`.
    out = compositor.apply(edge_at(100), parse_background("#ffffff"))
    assert out[128, 104, 0] == 255
    compositor.apply(edge_at(108), parse_background("original"))
    out = compositor.apply(edge_at(108), parse_background("#ffffff"))
    assert out[128, 104, 0] == 200


# -------------------------------------------------------------------- specs and the library


def test_specs_parse_and_unknown_ids_list_the_valid_ones(tmp_path) -> None:
    library = BackgroundLibrary(tmp_path, bundled_dir=tmp_path / "none")  # uploads only
    assert parse_background("original").is_original
    assert parse_background("blur").kind == "blur"
    assert parse_background("#FF8000").spec == "color:#ff8000"
    assert parse_background("color:#00aa11").color == (0, 0xAA, 0x11)

    library.register("clinic_room", png(np.full((64, 64, 3), 30, np.uint8)))
    with pytest.raises(ValueError) as excinfo:
        parse_background("medical_office", library)
    message = str(excinfo.value)
    for valid in ("original", "blur", "color:#RRGGBB", "clinic_room"):
        assert valid in message
    for bad in ("color:#12345", "color:red", "#GGGGGG", ""):
        with pytest.raises(ValueError):
            parse_background(bad, library)

    # Without the bundled images a seed id is just an id: it resolves once registered.
    library.register("medical_office", png(np.full((64, 64, 3), 60, np.uint8)))
    assert parse_background("medical_office", library).image_id == "medical_office"

    state = AvatarState()
    assert state.set_background("#00FF00", library) == "color:#00ff00"
    with pytest.raises(ValueError):
        state.set_background("hospital_room", library)
    assert state.background == "color:#00ff00"


def test_library_persists_and_rejects_bad_uploads(tmp_path, monkeypatch) -> None:
    no_bundled = tmp_path / "none"  # (tests/test_backgrounds_bundled.py has those)
    first = BackgroundLibrary(tmp_path / "backgrounds", bundled_dir=no_bundled)
    assert first.ids() == []
    first.register("consultation_room", png(np.full((40, 80, 3), (10, 20, 30), np.uint8)))
    assert first.image("consultation_room", 32, 32)[0, 0].tolist() == [10, 20, 30]

    # Another library on the same directory (a restart, or another process) sees it.
    second = BackgroundLibrary(tmp_path / "backgrounds", bundled_dir=no_bundled)
    assert second.ids() == ["consultation_room"]
    assert second.image("consultation_room", 32, 32)[0, 0].tolist() == [10, 20, 30]
    # A re-registration there reaches the first library's cache too.
    second.register("consultation_room", png(np.full((40, 80, 3), (99, 88, 77), np.uint8)))
    assert first.image("consultation_room", 32, 32)[0, 0].tolist() == [99, 88, 77]
    second.remove("consultation_room")
    with pytest.raises(KeyError):
        first.image("consultation_room", 32, 32)
    with pytest.raises(KeyError):
        first.remove("consultation_room")

    with pytest.raises(RendererError) as excinfo:
        first.register("notes", b"just some text, not an image")
    assert excinfo.value.code == "unsupported_format"
    with pytest.raises(RendererError) as excinfo:
        first.register("broken", b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    assert excinfo.value.code == "corrupt_image"
    for bad_id in ("Clinic", "../up", "-dash", "a" * 65, "blur", "original", "a.png"):
        with pytest.raises(ValueError):
            first.register(bad_id, png(np.zeros((8, 8, 3), np.uint8)))
    assert first.ids() == []

    monkeypatch.setenv("AVATAR_BACKGROUNDS_DIR", str(tmp_path / "explicit"))
    assert default_backgrounds_dir() == tmp_path / "explicit"
    monkeypatch.delenv("AVATAR_BACKGROUNDS_DIR")
    monkeypatch.setenv("AVATAR_CACHE", str(tmp_path / "cache"))
    assert BackgroundLibrary().directory == tmp_path / "cache" / "backgrounds"


# ------------------------------------------------------------- as the publisher sends frames


class SentFrames:
    """Stands in for rtc.VideoSource: keeps what the pacer sends, as arrays."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.times: list[float] = []

    def capture_frame(self, frame: rtc.VideoFrame) -> None:
        pixels = np.frombuffer(frame.data, dtype=np.uint8).reshape(frame.height, frame.width, 4)
        self.frames.append(pixels.copy())
        self.times.append(time.perf_counter())


def corner_rgb(pixels: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in pixels[4, 4, :3])


def video_frame(pixels: np.ndarray) -> rtc.VideoFrame:
    height, width = pixels.shape[:2]
    return rtc.VideoFrame(
        width, height, rtc.VideoBufferType.RGBA, np.ascontiguousarray(pixels).tobytes()
    )


async def test_a_background_switch_shows_on_the_next_frame_sent_even_when_frames_are_queued(
    portrait, mask, tmp_path, caplog
) -> None:
    library = BackgroundLibrary(tmp_path, bundled_dir=tmp_path / "none")  # uploads only
    library.register("hospital_room", png(np.full((300, 300, 3), (40, 50, 60), np.uint8)))
    compositor = Compositor(SIZE, SIZE, library, mask_from_alpha=True)
    state = AvatarState()
    state.set_background("color:#ff0000", library)
    stage = BackgroundStage(compositor, lambda: state.background)
    sent = SentFrames()
    pacer = FramePacer(
        audio_source=rtc.AudioSource(24000, 1),
        video_source=sent,  # type: ignore[arg-type]
        fps=FPS,
        finish=stage.finish_frame,
    )
    picture = rgba(portrait, mask)

    async def produce() -> None:
        while True:  # as fast as the queue takes them, as the generator does
            await pacer.push(video_frame(picture))

    producer = asyncio.create_task(produce())

    async def next_sent() -> np.ndarray:
        count = len(sent.frames)
        deadline = time.perf_counter() + 2.0
        while len(sent.frames) == count:
            assert time.perf_counter() < deadline, "no frame was sent"
            await asyncio.sleep(0.002)
        return sent.frames[count]

    try:
        for _ in range(5):
            assert corner_rgb(await next_sent()) == (255, 0, 0)
        assert pacer.queued_frames >= 2  # frames made before the switch are waiting

        state.set_background("#0000ff", library)
        assert corner_rgb(await next_sent()) == (0, 0, 255)
        state.set_background("hospital_room", library)
        assert corner_rgb(await next_sent()) == (40, 50, 60)
        state.set_background("original", library)
        original = await next_sent()
        assert np.array_equal(original[..., :3], portrait) and (original[..., 3] == 255).all()

        # A broken background (its image deleted) is logged once; frames go out unchanged.
        state.set_background("hospital_room", library)
        library.remove("hospital_room")
        with caplog.at_level(logging.ERROR, logger="avatar_runtime"):
            for _ in range(3):
                assert np.array_equal((await next_sent())[..., :3], portrait)
        assert len([r for r in caplog.records if "compositing failed" in r.message]) == 1
        state.set_background("blur", library)
        blurred = await next_sent()
        assert not np.array_equal(blurred[..., :3], portrait)

        # Paced: one frame per 1/fps, finishing included.
        times = []
        for _ in range(10):
            await next_sent()
            times.append(time.perf_counter())
        assert np.mean(np.diff(times)) == pytest.approx(1 / FPS, abs=0.004)
        assert pacer.actual_fps == pytest.approx(FPS, abs=1.5)
    finally:
        producer.cancel()
        await pacer.aclose()


# --------------------------------------------------------------------------------- timings


def test_composite_costs(capsys, tmp_path) -> None:
    """Prints milliseconds per frame at 512x512 (informative, nothing asserted)."""
    astronaut = data.astronaut()
    library = BackgroundLibrary(tmp_path)
    library.register("office", png(cv2.resize(astronaut[:, ::-1], (640, 360))))
    frames = {
        "mask from alpha": (True, rgba(astronaut, person_mask(astronaut))),
        "segmented": (False, rgba(astronaut)),
    }
    lines = []
    for label, (from_alpha, frame) in frames.items():
        compositor = Compositor(512, 512, library, mask_from_alpha=from_alpha)
        costs = []
        for spec in ("original", "blur", "color:#336699", "office"):
            background = parse_background(spec, library)
            compositor.apply(frame, background)
            repeat = 20
            start = time.perf_counter()
            for _ in range(repeat):
                compositor.apply(frame, background)
            costs.append(f"{spec} {(time.perf_counter() - start) / repeat * 1000:.2f}")
        lines.append(f"{label}: {', '.join(costs)}")
    with capsys.disabled():
        print("\ncomposite ms per 512x512 frame:", "; ".join(lines))


@pytest.mark.parametrize("on_arrival", [True, False])
async def test_pictures_sent_on_arrival_never_wait_behind_a_clock_after_a_burst(
    on_arrival: bool,
) -> None:
    sent = SentFrames()
    pacer = FramePacer(
        audio_source=rtc.AudioSource(24000, 1),
        video_source=sent,  # type: ignore[arg-type]
        fps=FPS,
        on_arrival=on_arrival,
    )
    picture = np.zeros((16, 16, 4), np.uint8)
    try:
        pushed: list[float] = []

        async def push() -> None:
            await pacer.push(video_frame(picture))
            pushed.append(time.perf_counter())

        for _ in range(3):  # on time, one per frame
            await push()
            await asyncio.sleep(1 / FPS)
        for _ in range(3):  # three due at once: an interruption emptied the audio buffer
            await push()
        for _ in range(4):  # and on time again
            await asyncio.sleep(1 / FPS)
            await push()
        await asyncio.sleep(4 / FPS)
    finally:
        await pacer.aclose()
    assert len(sent.times) == 10
    # How long after it was handed over each of the last pictures left.
    held = [sent - pushed for sent, pushed in zip(sent.times[6:], pushed[6:], strict=True)]
    if on_arrival:
        assert sent.times[5] - sent.times[3] < 0.5 / FPS  # the burst goes out at once
        assert max(held) < 0.5 / FPS, f"held {[round(h * 1000) for h in held]} ms"
    else:
        # AVSynchronizer's way: a slot each, so every later picture waits behind the clock.
        assert min(held) > 1.0 / FPS
