"""`meshwarp` end to end on the bundled astronaut portrait: preparing an avatar and its cache,
the errors a bad source gets, and what the rendered frames do (the lips follow speech, the eyes
blink, the head moves a little, emotions move brows and mouth corners and change smoothly).

Motion is measured on the control landmarks where the renderer puts them
(`landmarks_for(last_weights)`), the mouth's look also on the pixels. Speech comes from the
offline piper voice through tests/test_mouth_features.py's `say` fixture. Image y grows
downward: "up" is a negative y change.

Every test prepares avatars in a cache directory of its own, never the user's.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import renderers
from renderers import Expression, FrameRequest, RendererError, VideoFormat
from renderers.bundled import DEFAULT_PORTRAIT
from renderers.meshwarp import MeshwarpRenderer
from renderers.meshwarp import avatar as avatar_module
from renderers.meshwarp import landmarks as lm
from renderers.meshwarp.avatar import cache_dir, prepare_avatar
from renderers.meshwarp.rig import CONTROLS, INDEX
from renderers.vision import load_image
from tests.test_mouth_features import SENTENCE, frame_rms, requests, say  # noqa: F401
from tests.test_vision import _shrunk_onto_canvas as shrunk_onto_canvas

pytestmark = pytest.mark.usefixtures("private_cache")  # never the user's avatar cache

FPS = 30
ROW = {index: row for row, index in enumerate(lm.CONTROL_POINTS)}
NOSE_TIP = 1
CORNERS = (61, 291)
INNER_BROWS = (107, 336)
BROWS = (105, 334)
MOUTH_BOX_POINTS = (61, 291, 13, 14, 17, 0)


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sentence(say) -> np.ndarray:  # noqa: F811 - the imported fixture
    """One spoken sentence (about 6 s), 16 kHz float32, synthesised once for the module."""
    return say(SENTENCE)


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return load_image(DEFAULT_PORTRAIT)


@pytest.fixture(scope="module")
def scale() -> float:
    """The astronaut's face scale at 512x512 (distance between the eye centres, ~84 px)."""
    return prepare_avatar(None, 512, 512).scale


def make_renderer(
    width: int = 512, height: int = 512, source: Path | None = None
) -> MeshwarpRenderer:
    renderer = renderers.create("meshwarp", VideoFormat(width, height, FPS))
    assert isinstance(renderer, MeshwarpRenderer)
    renderer.load(source)
    return renderer


def idle(index: int, emotion: str = "neutral", intensity: float = 0.0) -> FrameRequest:
    return FrameRequest(
        index=index,
        audio=None,
        window_offset=0,
        window_length=0,
        speech_position=0,
        expression=Expression(emotion, intensity),
    )


def idle_run(start: int, count: int, emotion: str = "neutral", intensity: float = 0.0):
    return [idle(i, emotion, intensity) for i in range(start, start + count)]


def play(
    renderer: MeshwarpRenderer, frames: Sequence[FrameRequest], keep_pixels: bool = True
) -> tuple[list[np.ndarray], np.ndarray]:
    """Render in order: the pictures (empty unless kept) and the landmarks of every frame,
    shape (frames, control points, 2)."""
    pictures, marks = [], []
    for request in frames:
        (picture,) = renderer.render([request])
        assert picture.shape == (renderer.video.height, renderer.video.width, 4)
        assert picture.dtype == np.uint8
        if keep_pixels:
            pictures.append(picture)
        marks.append(renderer.landmarks_for(renderer.last_weights))
    return pictures, np.array(marks)


def ys(marks: np.ndarray, *indices: int) -> np.ndarray:
    """Mean y of the given landmarks, per frame (or for one frame's landmarks)."""
    return marks[..., [ROW[i] for i in indices], 1].mean(axis=-1)


def lip_gap(marks: np.ndarray) -> np.ndarray:
    return ys(marks, lm.LIP_BOTTOM) - ys(marks, lm.LIP_TOP)


def height_above_nose(marks: np.ndarray, *indices: int) -> np.ndarray:
    """y of the landmarks relative to the nose tip: free of the head's rigid motion."""
    return ys(marks, *indices) - ys(marks, NOSE_TIP)


def png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def write_video(path: Path, frames: Sequence[np.ndarray], fps: int = FPS) -> str:
    """An MP4 of RGB frames, H.264 when this PyAV has libx264 (else MPEG-4 part 2)."""
    import av

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return codec


# -- the prepared avatar -----------------------------------------------------------------------


def test_astronaut_avatar_has_landmarks_a_sane_region_and_warp_fields() -> None:
    size = 512
    avatar = prepare_avatar(None, size, size)
    assert avatar.image.shape == (size, size, 4) and avatar.image.dtype == np.uint8
    assert avatar.points.shape == (478, 3)
    controls = avatar.points[list(lm.CONTROL_POINTS), :2]
    assert np.isfinite(controls).all()
    assert (controls >= 0).all() and (controls < size).all()

    # The face is framed the same way for every avatar: 40 % of the height, centred.
    points = avatar.points
    face_height = points[lm.CHIN, 1] - points[10, 1]
    assert face_height == pytest.approx(0.40 * size, abs=2)
    assert abs(points[:, 0].mean() - size / 2) < 2
    # A plausible face: the person's right eye on the image's left, eyes over nose over mouth.
    right_eye = points[list(lm.RIGHT_EYE_CORNERS), :2].mean(axis=0)
    left_eye = points[list(lm.LEFT_EYE_CORNERS), :2].mean(axis=0)
    assert right_eye[0] < points[NOSE_TIP, 0] < left_eye[0]
    assert max(right_eye[1], left_eye[1]) < points[NOSE_TIP, 1] < points[lm.LIP_TOP, 1]
    assert points[lm.LIP_BOTTOM, 1] < points[lm.CHIN, 1]
    assert 0.1 * size < avatar.scale < 0.25 * size  # between the eye centres

    # The warp region holds the face with room for motion, and is not the whole frame.
    region = avatar.region
    assert 0 <= region.x0 < region.x1 <= size and 0 <= region.y0 < region.y1 <= size
    (x0, y0), (x1, y1) = controls.min(axis=0), controls.max(axis=0)
    margin = 0.1 * avatar.scale
    assert region.x0 <= x0 - margin and region.x1 >= x1 + margin
    assert region.y0 <= y0 - margin and region.y1 >= y1 + margin
    assert region.width * region.height < 0.8 * size * size

    fields = avatar.fields
    assert fields.shape == (len(CONTROLS), region.height, region.width, 2)
    assert fields.dtype == np.float32 and np.isfinite(fields).all()
    # The warp fades out before the region's edge, so no seam shows there.
    edges = np.concatenate([fields[:, 0], fields[:, -1], fields[:, :, 0], fields[:, :, -1]], axis=1)
    assert np.abs(edges).max() < 1.0
    # Rigid head motion moves every control point by the rig's own displacement.
    at = np.round(controls - [region.x0, region.y0]).astype(int)
    for control in ("head_x", "head_y"):
        i = INDEX[control]
        sampled = fields[i, at[:, 1], at[:, 0]]
        assert np.abs(sampled - avatar.displacements[i]).max() < 0.1, control

    # Alpha is the person mask: the face is person, the top corners are background.
    alpha = avatar.image[..., 3]
    nose = np.round(points[NOSE_TIP, :2]).astype(int)
    assert alpha[nose[1], nose[0]] == 255
    assert alpha[:8, :8].max() < 32 and alpha[:8, -8:].max() < 32


def test_second_load_is_served_from_the_cache(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AVATAR_CACHE", str(tmp_path))
    started = time.perf_counter()
    built = prepare_avatar(None, 512, 512)
    build_s = time.perf_counter() - started
    cached_files = list(cache_dir().glob("*.npz"))
    assert len(cached_files) == 1 and tmp_path in cached_files[0].parents

    def no_detection(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached avatar was prepared again")

    monkeypatch.setattr(avatar_module, "analyse_portrait", no_detection)
    started = time.perf_counter()
    cached = prepare_avatar(None, 512, 512)
    cached_s = time.perf_counter() - started
    renderer = make_renderer()  # the renderer's own load goes through the same cache
    print(
        f"\nmeshwarp avatar 512x512: prepared in {build_s * 1000:.0f} ms, "
        f"from the cache in {cached_s * 1000:.0f} ms"
    )
    assert cached_s < build_s
    assert np.array_equal(cached.image, built.image)
    assert np.array_equal(cached.points, built.points)
    assert cached.region == built.region
    assert np.array_equal(cached.rest, built.rest)
    assert np.allclose(cached.fields, built.fields, atol=0.02)  # stored as float16
    assert renderer.render([idle(0)])[0].shape == (512, 512, 4)
    assert len(list(cache_dir().glob("*.npz"))) == 1


def test_sessions_preparing_one_portrait_at_once_all_get_it(monkeypatch, tmp_path) -> None:
    # Two sessions of one worker starting together prepare the same portrait: each writes the
    # cache through a temporary file of its own (one shared name made one of them fail).
    monkeypatch.setenv("AVATAR_CACHE", str(tmp_path))
    built = prepare_avatar(None, 512, 512)
    cached = next(cache_dir().glob("*.npz"))
    cached.unlink()
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(avatar_module._save, built, cached) for _ in range(8)]
        for future in futures:
            future.result()
    assert [p.name for p in cache_dir().iterdir()] == [cached.name]  # no temporary file left
    assert np.array_equal(avatar_module._load(cached).points, built.points)


# -- bad sources -------------------------------------------------------------------------------


def load_error(path: Path) -> RendererError:
    with pytest.raises(RendererError) as excinfo:
        make_renderer(source=path)
    return excinfo.value


def test_blank_image_has_no_face(tmp_path) -> None:
    path = tmp_path / "blank.png"
    path.write_bytes(png(np.full((512, 512, 3), 200, dtype=np.uint8)))
    error = load_error(path)
    assert (error.code, error.message) == ("no_face", "No face detected in image")


def test_two_portraits_side_by_side_are_multiple_faces(tmp_path, portrait) -> None:
    path = tmp_path / "pair.png"
    path.write_bytes(png(np.concatenate([portrait, portrait], axis=1)))
    error = load_error(path)
    assert error.code == "multiple_faces"
    assert error.message == "Multiple faces detected, single face required"


@pytest.mark.parametrize(("side", "codes"), [(256, {"face_too_small"}), (96, {"no_face"})])
def test_tiny_face_is_refused_the_same_way_every_time(tmp_path, portrait, side, codes) -> None:
    path = tmp_path / f"tiny-{side}.png"
    path.write_bytes(png(shrunk_onto_canvas(portrait, side, 512)))
    first, second = load_error(path), load_error(path)
    assert first.code in codes
    assert (second.code, second.message) == (first.code, first.message)


def test_too_small_image(tmp_path, portrait) -> None:
    path = tmp_path / "small.png"
    path.write_bytes(png(np.asarray(Image.fromarray(portrait).resize((100, 100)))))
    error = load_error(path)
    assert error.code == "image_too_small" and "128" in error.message


def test_files_that_are_no_image(tmp_path, portrait) -> None:
    for name in ("notes.txt", "notes.png"):
        path = tmp_path / name
        path.write_text("this is not a picture\n")
        assert load_error(path).code == "unsupported_format", name
    jpeg = io.BytesIO()
    Image.fromarray(portrait).save(jpeg, format="JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpeg.getvalue()[: jpeg.tell() // 2])
    assert load_error(cut).code == "corrupt_image"
    assert load_error(tmp_path / "missing.png").code == "source_unreadable"
    garbage = tmp_path / "garbage.mp4"
    garbage.write_text("this is not a video either\n")
    assert load_error(garbage).code == "corrupt_video"


# -- video sources -----------------------------------------------------------------------------


def test_short_video_of_the_portrait_loads(tmp_path, portrait) -> None:
    size = portrait.shape[0]
    frames = []
    for k in range(15):  # half a second of a slight sway and zoom
        t = k / FPS
        matrix = cv2.getRotationMatrix2D((size / 2, size / 2), 1.5 * np.sin(4 * t), 1.0 + 0.02 * t)
        matrix[:, 2] += (4 * np.sin(6 * t), 2 * np.cos(6 * t))
        frames.append(cv2.warpAffine(portrait, matrix, (size, size), borderMode=cv2.BORDER_REFLECT))
    path = tmp_path / "sway.mp4"
    codec = write_video(path, frames)
    renderer = make_renderer(source=path)
    (picture,) = renderer.render([idle(0)])
    assert picture.shape == (512, 512, 4)
    # The face of the video's first frame is framed where the still portrait's face is.
    from_video = renderer.landmarks_for(renderer.last_weights)
    still = make_renderer()
    still.render([idle(0)])
    from_image = still.landmarks_for(still.last_weights)
    offset = np.abs(from_video - from_image)
    print(f"\nvideo source ({codec}): landmarks {np.median(offset):.2f} px from the still's")
    assert np.median(offset) < 3.0, (codec, float(np.median(offset)))


def test_video_without_a_face_fails_with_no_face(tmp_path) -> None:
    rng = np.random.default_rng(3)
    ramp = np.linspace(40, 220, 256, dtype=np.float32)
    frames = []
    for k in range(10):
        shade = np.add.outer(ramp, ramp[::-1]) / 2 + 8 * np.sin(k / 3)
        noisy = shade[..., None] + rng.normal(0, 6, (256, 256, 3))
        frames.append(np.clip(noisy, 0, 255).astype(np.uint8))
    path = tmp_path / "empty-room.mp4"
    write_video(path, frames)
    error = load_error(path)
    assert (error.code, error.message) == ("no_face", "No face detected in image")


# -- the mouth ---------------------------------------------------------------------------------


def test_speech_frames_change_the_mouth_and_silence_does_not(sentence, scale) -> None:
    lead = 15
    silent, silent_marks = play(make_renderer(), idle_run(0, lead + 200))
    speaking, _ = play(make_renderer(), idle_run(0, lead) + requests(sentence, start=lead))
    speech_frames = range(lead, len(speaking))

    rest = silent_marks[0][[ROW[i] for i in MOUTH_BOX_POINTS]]
    pad = 0.05 * scale
    (x0, y0), (x1, y1) = np.floor(rest.min(axis=0) - pad), np.ceil(rest.max(axis=0) + pad)
    box = np.s_[int(y0) : int(y1), int(x0) : int(x1), :3]

    def diff(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a[box].astype(np.int16) - b[box].astype(np.int16)).mean())

    # The same frame index with and without speech: the idle motion is the same in both.
    speech_change = np.mean([diff(speaking[k], silent[k]) for k in speech_frames])
    # Two silent frames half a second apart: idle sway and breathing only.
    silence_change = np.mean([diff(silent[k], silent[k + 15]) for k in speech_frames])
    print(
        f"\nmouth box {int(x1 - x0)}x{int(y1 - y0)} px: speech vs silence {speech_change:.1f}, "
        f"silence vs silence {silence_change:.1f} (mean abs level)"
    )
    assert speech_change > 4 * silence_change


def test_lip_opening_follows_the_loudness_of_speech(sentence, scale) -> None:
    _, marks = play(make_renderer(), requests(sentence), keep_pixels=False)
    gap = lip_gap(marks)
    rms = frame_rms(sentence)
    assert gap.size == rms.size
    correlation = float(np.corrcoef(gap, rms)[0, 1])
    late = float(np.corrcoef(gap[1:], rms[:-1])[0, 1])
    print(f"\nlip gap vs frame RMS: r = {correlation:.2f} (lips one frame later: {late:.2f})")
    assert correlation > 0.6
    assert gap.max() > 0.1 * scale  # visibly open


def test_silence_closes_the_lips(sentence) -> None:
    lead, tail = 15, 30
    frames = idle_run(0, lead) + requests(sentence, start=lead, idle=tail)
    _, marks = play(make_renderer(), frames, keep_pixels=False)
    gap = lip_gap(marks)
    rest_gap = float(np.median(gap[:lead]))
    assert np.abs(gap[:lead] - rest_gap).max() < 0.2  # closed and still before speaking
    assert gap[lead:-tail].max() > rest_gap + 5.0  # it did open
    settled = gap[-tail + 9 :]  # from 300 ms after the speech on
    assert np.abs(settled - rest_gap).max() < 1.0, settled.round(2)


# -- idle life ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def twenty_idle_seconds() -> dict[str, np.ndarray]:
    """20 s of idle frames: the landmarks of each, and how much the pixels of consecutive
    frames differ (mean absolute level over the whole frame)."""
    renderer = make_renderer()
    marks, changes = [], []
    previous = None
    for request in idle_run(0, 20 * FPS):
        (picture,) = renderer.render([request])
        marks.append(renderer.landmarks_for(renderer.last_weights))
        if previous is not None:
            changes.append(np.abs(picture.astype(np.int16) - previous).mean())
        previous = picture.astype(np.int16)
    return {"marks": np.array(marks), "changes": np.array(changes)}


def test_blinks_happen_and_are_short(twenty_idle_seconds) -> None:
    marks = twenty_idle_seconds["marks"]
    lid = ys(marks, 145) - ys(marks, 159)  # the person's right eye
    open_gap = float(np.median(lid))
    assert open_gap > 5.0
    shut = lid < 0.3 * open_gap
    edges = np.diff(np.concatenate([[0], shut.astype(int), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    durations = (ends - starts) / FPS
    print(f"\nblinks in 20 s: {starts.size}, at {np.round(starts / FPS, 1).tolist()} s")
    assert starts.size >= 3
    assert durations.max() <= 0.3, durations
    # The lid does close (to within 10 % of its open gap) at the bottom of a blink.
    assert lid.min() < 0.1 * open_gap


def test_blinks_and_glances_go_on_in_long_sessions() -> None:
    renderer = make_renderer()
    start = 3 * 3600 * FPS  # three hours into a session
    marks, gaze = [], []
    for request in idle_run(start, 20 * FPS):
        weights, _ = renderer.weights_for(request)
        marks.append(renderer.landmarks_for(weights))
        gaze.append(weights[[INDEX["gaze_x"], INDEX["gaze_y"]]])
    lid = ys(np.array(marks), 145) - ys(np.array(marks), 159)
    shut = lid < 0.3 * np.median(lid)
    assert np.count_nonzero(np.diff(shut.astype(int)) == 1) >= 3
    assert len({tuple(g) for g in np.round(gaze, 4)}) > 5  # the eyes still glance about


def test_a_blink_shuts_the_eye_in_the_picture() -> None:
    renderer = make_renderer()
    pictures, blink = [], []
    for request in idle_run(0, 2 * FPS):  # the first blink comes after 1.2 s
        pictures.append(renderer.render([request])[0])
        blink.append(float(renderer.last_weights[INDEX["blink_right"]]))
        if request.index == 0:
            marks = renderer.landmarks_for(renderer.last_weights)  # the eye open
    peak = int(np.argmax(blink))
    assert blink[peak] == pytest.approx(1.0)
    eye = marks[[ROW[i] for i in lm.RIGHT_EYE_UPPER + lm.RIGHT_EYE_LOWER]]
    iris = marks[[ROW[i] for i in lm.RIGHT_IRIS]]
    top, bottom = int(eye[:, 1].min()) - 2, int(np.ceil(eye[:, 1].max())) + 3
    left, right = int(iris[:, 0].min()), int(np.ceil(iris[:, 0].max()))

    def dark_height(picture: np.ndarray) -> float:
        """Rows of dark pixels (iris, pupil, lashes) per column across the iris."""
        luma = picture[top:bottom, left:right, :3].astype(np.float32) @ [0.299, 0.587, 0.114]
        return float(np.median((luma < 90).sum(axis=0)))

    open_height, shut_height = dark_height(pictures[0]), dark_height(pictures[peak])
    print(f"\nright eye, dark rows across the iris: {open_height} open, {shut_height} at the blink")
    assert shut_height <= 0.35 * open_height  # what is left: the lash line


def test_the_head_moves_a_little_in_idle(twenty_idle_seconds, scale) -> None:
    marks, changes = twenty_idle_seconds["marks"], twenty_idle_seconds["changes"]
    # Not a frozen still: consecutive frames differ...
    assert (changes > 0).mean() > 0.95
    # ...but only a little: the head wanders a few pixels and drifts slowly.
    nose = marks[:, ROW[NOSE_TIP]]
    wander = nose.max(axis=0) - nose.min(axis=0)
    speed = np.linalg.norm(np.diff(nose, axis=0), axis=1)
    print(
        f"\nidle: nose tip wanders {wander[0]:.1f} x {wander[1]:.1f} px, at most "
        f"{speed.max():.2f} px/frame; frame change median {np.median(changes):.3f}, "
        f"max {changes.max():.2f}"
    )
    assert wander.max() > 1.0
    assert wander.max() < 0.15 * scale
    assert speed.max() < 0.5
    assert np.median(changes) < 0.5


# -- speech start --------------------------------------------------------------------------------


def test_no_jump_when_speech_starts(sentence) -> None:
    lead = 20
    _, marks = play(
        make_renderer(), idle_run(0, lead) + requests(sentence, start=lead), keep_pixels=False
    )
    step = np.abs(np.diff(marks, axis=0)).max(axis=(1, 2))  # step[k]: frame k -> k + 1
    at_start = float(step[lead - 1])  # last idle frame -> first speech frame
    within = float(step[lead:].max())
    print(f"\nlargest landmark step: {at_start:.2f} px into speech, {within:.2f} px within it")
    assert at_start <= within


# -- emotions ------------------------------------------------------------------------------------

EXPECTED_EMOTIONS = {
    # feature -> direction of its y change relative to neutral (-1: up, +1: down)
    "happy": {CORNERS: -1},
    "sad": {CORNERS: +1, INNER_BROWS: -1},
    "concerned": {INNER_BROWS: -1},
    "surprised": {BROWS: -1},
    "angry": {BROWS: +1},
    "reassuring": {CORNERS: -1},
}
HALF_SECOND = FPS // 2


def final_marks(emotion: str, intensity: float, frames: int = HALF_SECOND) -> np.ndarray:
    _, marks = play(make_renderer(), idle_run(0, frames, emotion, intensity), keep_pixels=False)
    return marks[-1]


def test_every_emotion_is_covered() -> None:
    assert set(MeshwarpRenderer.capabilities.emotions) == {"neutral", *EXPECTED_EMOTIONS}


@pytest.mark.parametrize("emotion", list(EXPECTED_EMOTIONS))
def test_emotion_moves_brows_and_mouth_corners(emotion, scale) -> None:
    neutral = final_marks("neutral", 0.0)
    shown = final_marks(emotion, 1.0)
    min_move = 0.012 * scale  # about 1 px at 512
    moves = {}
    for feature, direction in EXPECTED_EMOTIONS[emotion].items():
        change = float(height_above_nose(shown, *feature) - height_above_nose(neutral, *feature))
        moves[feature] = round(change, 2)
        assert change * direction > min_move, (emotion, feature, change)
    print(f"\n{emotion}: y change vs neutral {moves}")


@pytest.mark.parametrize("emotion", list(EXPECTED_EMOTIONS))
def test_intensity_zero_is_neutral(emotion) -> None:
    neutral, _ = play(make_renderer(), idle_run(0, 10))
    shown, _ = play(make_renderer(), idle_run(0, 10, emotion, 0.0))
    for a, b in zip(neutral, shown, strict=True):
        assert np.array_equal(a, b)


def test_emotion_transition_is_smooth() -> None:
    before, after = 10, 20
    switched = idle_run(0, before) + idle_run(before, after, "happy", 1.0)
    _, marks = play(make_renderer(), switched, keep_pixels=False)
    _, baseline = play(make_renderer(), idle_run(0, before + after), keep_pixels=False)
    # The corners' height with the idle motion (the same in both runs) taken out.
    corner = height_above_nose(marks, *CORNERS) - height_above_nose(baseline, *CORNERS)
    assert np.abs(corner[:before]).max() < 1e-4
    change = corner[before:]
    total = float(change[-1])  # 0.67 s after the switch: settled
    assert total < -1.0  # up
    progress = change / total
    steps = np.diff(np.concatenate([[0.0], progress]))
    assert (steps >= -1e-4).all(), "the corners move one way only"
    reached = int(np.argmax(progress >= 0.9))  # frames after the switch
    print(
        f"\nneutral -> happy: 90 % after {reached / FPS * 1000:.0f} ms, "
        f"largest step {steps.max() * 100:.0f} % of the change"
    )
    assert reached / FPS <= 0.4
    assert steps.max() <= 0.3


# -- speed ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(512, 512), (1280, 720)])
def test_render_speed(sentence, width, height) -> None:
    renderer = make_renderer(width, height)
    frames = idle_run(0, 15) + requests(sentence[: 16000 * 2], start=15, idle=15)
    renderer.render(frames[:3])  # warm up
    started = time.perf_counter()
    pictures = renderer.render(frames[3:])
    ms = (time.perf_counter() - started) * 1000 / len(pictures)
    print(f"\nmeshwarp {width}x{height}: {ms:.1f} ms/frame")
    assert pictures[0].shape == (height, width, 4)
    assert ms < 50
