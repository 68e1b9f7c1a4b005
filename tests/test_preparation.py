"""Avatar preparation (renderers/preparation.py) on real H.264 videos made by tests/media.py,
with the real MediaPipe face models: every refusal and its exact message (seed 000), the
wav2lip package's layout and contents checked against the decoded video, the meshwarp package
rendered by the meshwarp renderer, and the `python -m control_api prepare` command."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import renderers
from avatar_runtime.avatars import AvatarCatalog
from renderers import VideoFormat
from renderers.preparation import (
    SUPPORTED_MODELS,
    PreparationError,
    PreparationLimits,
    check_faces,
    prepare_avatar_package,
    smooth_boxes,
)
from renderers.vision import FaceDetection, detect_faces
from renderers.vision.face_track import FaceTrack, Sample, track_faces
from renderers.vision.png import encode_png
from renderers.vision.video import iter_frames, probe_video, read_frames
from renderers.wav2lip.prepare import face_coords
from tests.media import (
    astronaut_head,
    no_face_video,
    not_a_video,
    speech_like_audio,
    talking_head_video,
    write_video,
)

pytestmark = pytest.mark.usefixtures("private_cache")  # meshwarp's prepared avatars

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def head(media: Path):
    return talking_head_video(media / "head.mp4", seconds=3.5, fps=25)


@pytest.fixture(scope="module")
def wav2lip(head, tmp_path_factory: pytest.TempPathFactory):
    """The head video prepared once for wav2lip at 96 px: (result, members, progress calls)."""
    out = tmp_path_factory.mktemp("packages")
    calls: list[tuple[float, str]] = []
    result = prepare_avatar_package(
        head.path,
        avatar_id="Astro_1.v2-x",
        out_dir=out,
        progress=lambda fraction, message: calls.append((fraction, message)),
    )
    return result, _members(result.package), calls


def _members(tar_path: Path) -> dict[str, bytes | None]:
    """name -> bytes (None for a directory)."""
    with tarfile.open(tar_path) as tar:
        return {
            m.name: (None if m.isdir() else tar.extractfile(m).read())  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def _png(data: bytes) -> np.ndarray:
    """A PNG as RGB."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return bgr[..., ::-1]


def _error(video: Path, tmp_path: Path, **kwargs) -> PreparationError:
    kwargs.setdefault("avatar_id", "a1")
    with pytest.raises(PreparationError) as excinfo:
        prepare_avatar_package(video, out_dir=tmp_path / "out", **kwargs)
    out = tmp_path / "out"
    assert not out.exists() or not list(out.iterdir()), "a refused video left files behind"
    return excinfo.value


# -- refusals ------------------------------------------------------------------------------


def test_too_short(media, tmp_path) -> None:
    video = no_face_video(media / "one-second.mp4", seconds=1.0)
    error = _error(video, tmp_path)
    assert (error.code, error.message) == (
        "video_too_short",
        "Video too short, minimum 3 seconds required",
    )
    error = _error(video, tmp_path, limits=PreparationLimits(min_duration_s=2.5))
    assert error.message == "Video too short, minimum 2.5 seconds required"
    # At the limit it is long enough (and then has no face).
    assert _error(video, tmp_path, limits=PreparationLimits(min_duration_s=1.0)).code == "no_face"


def test_too_long(head, tmp_path) -> None:
    error = _error(head.path, tmp_path, limits=PreparationLimits(max_duration_s=3))
    assert (error.code, error.message) == (
        "video_too_long",
        "Video too long, maximum 3 seconds allowed",
    )
    error = _error(head.path, tmp_path, limits=PreparationLimits(max_duration_s=2.5))
    assert error.message == "Video too long, maximum 2.5 seconds allowed"


def test_too_large(head, tmp_path) -> None:
    error = _error(head.path, tmp_path, limits=PreparationLimits(max_width=320, max_height=240))
    assert (error.code, error.message) == (
        "video_too_large",
        "Video too large: 640x360, maximum 320x240 allowed",
    )


def test_two_faces(media, tmp_path) -> None:
    video = talking_head_video(media / "two.mp4", seconds=3.2, faces=2).path
    assert len(detect_faces(next(read_frames(video)))) == 2
    error = _error(video, tmp_path)
    assert (error.code, error.message) == (
        "multiple_faces",
        "Multiple faces detected, single face required",
    )


def test_no_face(media, tmp_path) -> None:
    error = _error(no_face_video(media / "empty.mp4", seconds=3.2), tmp_path)
    assert (error.code, error.message) == ("no_face", "No face detected in video")


def test_files_that_are_no_video(media, tmp_path) -> None:
    cases = {
        not_a_video(media / "notes.mp4"): "mp4",
        not_a_video(media / "notes"): "unknown",
        media / "empty.mov": "mov",
    }
    (media / "empty.mov").write_bytes(b"")
    for suffix in (".wav", ".mp3", ".m4a"):
        path = media / f"speech{suffix}"
        speech_like_audio(path, 3.5)
        cases[path] = suffix[1:]
    image = media / "still.png"
    image.write_bytes(encode_png(astronaut_head()))
    cases[image] = "png"
    for path, label in cases.items():
        error = _error(path, tmp_path)
        assert (error.code, error.message) == (
            "unsupported_video_format",
            f"Unsupported video format: {label}",
        ), path.name
    error = _error(media / "missing.mp4", tmp_path)
    assert (error.code, error.message) == ("video_not_found", "Video not found: missing.mp4")


def test_unsupported_models_and_bad_ids(head, tmp_path) -> None:
    for model in ("sadtalker", "", "WAV2LIP"):
        error = _error(head.path, tmp_path, model=model)
        assert (error.code, error.message) == (
            "unsupported_model",
            f"Unsupported model: {model} (supported: wav2lip, meshwarp, liveportrait, musetalk)",
        )
    assert SUPPORTED_MODELS == ("wav2lip", "meshwarp", "liveportrait", "musetalk")
    for bad in ("", ".hidden", "a/b", "../x", "a b", "x" * 129, "ü"):
        assert _error(head.path, tmp_path, avatar_id=bad).code == "invalid_avatar_id", bad
    error = _error(head.path, tmp_path, limits=PreparationLimits(face_size=0))
    assert error.code == "invalid_face_size"


def test_a_cancelled_preparation_leaves_nothing(head, tmp_path) -> None:
    class Cancelled(Exception):
        pass

    def progress(fraction: float, message: str) -> None:
        if fraction > 0.5:
            raise Cancelled

    with pytest.raises(Cancelled):
        prepare_avatar_package(head.path, avatar_id="c", out_dir=tmp_path, progress=progress)
    assert list(tmp_path.iterdir()) == []


# -- the wav2lip package ----------------------------------------------------------------------


def test_wav2lip_package_layout(wav2lip, head) -> None:
    result, members, _ = wav2lip
    n = head.num_frames
    assert (result.avatar_id, result.model, result.num_frames) == ("Astro_1.v2-x", "wav2lip", n)
    assert result.package.name == "Astro_1.v2-x.tar"
    assert [p.name for p in result.package.parent.iterdir()] == ["Astro_1.v2-x.tar"]
    expected = {"coords.pkl", "avatar.json", "full_imgs", "face_imgs"}
    expected |= {f"{folder}/{i:08d}.png" for folder in ("full_imgs", "face_imgs") for i in range(n)}
    assert set(members) == expected
    manifest = json.loads(members["avatar.json"])
    assert manifest == {
        "avatar_id": "Astro_1.v2-x",
        "model": "wav2lip",
        "fps": 25.0,
        "width": 640,
        "height": 360,
        "num_frames": n,
        "face_size": 96,
        "pads": [0, 10, 0, 0],
        "smoothing_window": 5,
        "version": 1,
    }


def test_wav2lip_frames_and_crops_are_the_decoded_video(wav2lip, head) -> None:
    _, members, _ = wav2lip
    coords = pickle.loads(members["coords.pkl"])
    assert isinstance(coords, list) and len(coords) == head.num_frames
    for box in coords:
        assert isinstance(box, tuple) and len(box) == 4
        assert all(type(v) is int for v in box)
        y1, y2, x1, x2 = box
        assert 0 <= y1 < y2 <= 360 and 0 <= x1 < x2 <= 640
    for i, rgb in enumerate(read_frames(head.path)):
        if i % 20:
            continue
        full = _png(members[f"full_imgs/{i:08d}.png"])
        assert np.array_equal(full, rgb), i
        y1, y2, x1, x2 = coords[i]
        face = _png(members[f"face_imgs/{i:08d}.png"])
        assert face.shape == (96, 96, 3)
        assert np.array_equal(face, cv2.resize(rgb[y1:y2, x1:x2], (96, 96))), i


def test_wav2lip_boxes_follow_the_moving_face(wav2lip, head) -> None:
    _, members, _ = wav2lip
    coords = np.array(pickle.loads(members["coords.pkl"]), dtype=float)
    # Where the astronaut's face box is in each frame, from where the portrait was drawn.
    (face,) = detect_faces(astronaut_head())
    corners = np.array(face.box).reshape(2, 2)
    truth = np.array([head.to_frame(k, corners).ravel() for k in range(head.num_frames)])
    # The package's boxes are smoothed over the next five frames and padded 10 px down.
    truth = smooth_boxes(truth, 5)
    centre_x = (coords[:, 2] + coords[:, 3]) / 2
    centre_y = (coords[:, 0] + coords[:, 1] - 10) / 2
    true_x = (truth[:, 0] + truth[:, 2]) / 2
    true_y = (truth[:, 1] + truth[:, 3]) / 2
    size = truth[:, 2] - truth[:, 0]
    print(
        f"\nface moves {np.ptp(true_x):.1f} px across, {np.ptp(true_y):.1f} px up and down; "
        f"box centre error max {np.abs(centre_x - true_x).max():.1f} / "
        f"{np.abs(centre_y - true_y).max():.1f} px"
    )
    assert np.ptp(true_x) > 40  # the test is only worth something if the face moves
    # BlazeFace sees a 640-px frame at 192 px: a pixel of its input is 3.3 frame pixels.
    for error in (centre_x - true_x, centre_y - true_y):
        assert np.abs(error).max() < 0.1 * size.mean()
        assert np.abs(error).mean() < 0.05 * size.mean()
    assert np.corrcoef(centre_x, true_x)[0, 1] > 0.98
    width = coords[:, 3] - coords[:, 2]
    assert np.abs(width - size).max() < 0.1 * size.mean()


def test_progress_is_reported_in_order(wav2lip) -> None:
    _, _, calls = wav2lip
    fractions = [fraction for fraction, _ in calls]
    assert len(calls) >= 20
    assert fractions == sorted(fractions) and 0 <= fractions[0] and calls[-1] == (1.0, "done")
    messages = [message for _, message in calls]
    assert {"detecting faces", "writing frames"} <= set(messages)


def test_face_size_256_of_a_phone_video(media, tmp_path) -> None:
    # Stored as a portrait picture turned by its display matrix, as phones record.
    turned = talking_head_video(media / "phone.mp4", seconds=3.2, rotation=90)
    info = probe_video(turned.path)
    assert (info.width, info.height, info.rotation) == (640, 360, 90)
    result = prepare_avatar_package(
        turned.path,
        avatar_id="phone",
        out_dir=tmp_path,
        limits=PreparationLimits(face_size=256, max_width=640, max_height=360),
    )
    members = _members(result.package)
    assert result.num_frames == turned.num_frames
    assert _png(members["face_imgs/00000000.png"]).shape == (256, 256, 3)
    assert _png(members["full_imgs/00000000.png"]).shape == (360, 640, 3)
    (y1, y2, x1, x2) = pickle.loads(members["coords.pkl"])[0]
    (face,) = detect_faces(astronaut_head())
    true = turned.to_frame(0, np.array(face.box).reshape(2, 2)).ravel()
    assert abs((x1 + x2) / 2 - (true[0] + true[2]) / 2) < 6
    assert json.loads(members["avatar.json"])["face_size"] == 256


# -- the meshwarp package -------------------------------------------------------------------


def test_meshwarp_package_picks_a_sharp_frame_and_renders(media, tmp_path, wav2lip) -> None:
    # The first 60 % of the video is out of focus: the portrait must come from the rest.
    video = talking_head_video(
        media / "focus.mp4", seconds=3.2, blur=lambda k: 3.0 if k < 48 else 0.0
    )
    result = prepare_avatar_package(
        video.path, avatar_id="astro-mesh", model="meshwarp", out_dir=tmp_path / "out"
    )
    members = _members(result.package)
    assert set(members) == {"portrait.png", "idle.mp4", "avatar.json"}
    manifest = json.loads(members["avatar.json"])
    assert manifest["model"] == "meshwarp" and manifest["num_frames"] == video.num_frames
    # The idle loop: the video's own frames from the portrait on (at most 3 s), small.
    assert manifest["idle_clip"] == "idle.mp4"
    length = round(3.0 * manifest["fps"])
    assert manifest["idle_first_frame"] == min(manifest["source_frame"], video.num_frames - length)
    assert manifest["idle_frames"] == length and len(members["idle.mp4"] or b"") < 4_000_000
    assert result.num_frames == video.num_frames
    chosen = manifest["source_frame"]
    assert chosen >= 48, chosen
    frames = list(read_frames(video.path))
    assert np.array_equal(_png(members["portrait.png"]), frames[chosen])

    # Extracted into an avatars directory, the catalog finds it and meshwarp renders it.
    avatars = tmp_path / "avatars"
    with tarfile.open(result.package) as tar:
        tar.extractall(avatars / "astro-mesh", filter="data")
    source = AvatarCatalog(avatars, bundled_dir=tmp_path / "none").resolve("astro-mesh")
    assert source == (avatars / "astro-mesh").resolve()
    picture = _render_one(source)
    assert picture.shape == (256, 256, 4) and picture[..., 3].mean() > 40  # a person is there

    # A wav2lip package works as a meshwarp source too (its first frame is the portrait).
    wav2lip_dir = tmp_path / "w2l"
    with tarfile.open(wav2lip[0].package) as tar:
        tar.extractall(wav2lip_dir, filter="data")
    assert _render_one(wav2lip_dir).shape == (256, 256, 4)


def test_meshwarp_refuses_a_directory_that_is_no_package(tmp_path) -> None:
    with pytest.raises(renderers.RendererError) as excinfo:
        _render_one(tmp_path)
    assert excinfo.value.code == "invalid_package"


def _render_one(source: Path) -> np.ndarray:
    from renderers.base import FrameRequest

    renderer = renderers.create("meshwarp", VideoFormat(256, 256, 30))
    renderer.load(source)
    (picture,) = renderer.render(
        [FrameRequest(index=0, audio=None, window_offset=0, window_length=0, speech_position=0)]
    )
    return picture


# -- the pieces -------------------------------------------------------------------------------


def test_smoothing_is_wav2lips() -> None:
    boxes = np.arange(7, dtype=float)[:, None] * np.ones((1, 4))
    smooth = smooth_boxes(boxes, 5)[:, 0]
    # Box i: the mean of boxes i..i+4; the last ones (whose window would run out): of 2..6.
    assert smooth.tolist() == [2.0, 3.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert smooth_boxes(boxes[:3], 5)[:, 0].tolist() == [1.0, 1.0, 1.0]


def test_face_coords_pad_clamp_and_round_down() -> None:
    # x0, y0, x1, y1: one box inside, one over the top-left edge, one over the bottom-right.
    boxes = np.array([[10.7, 20.2, 50.9, 60.5], [-5.0, -3.0, 30.0, 40.0], [90, 80, 130, 125.0]])
    # With smoothing off (one box at a time) the rules show plainly.
    assert face_coords(boxes[:1], 100, 100) == [(20, 70, 10, 50)]
    assert face_coords(boxes[1:2], 100, 100) == [(0, 50, 0, 30)]
    assert face_coords(boxes[2:3], 100, 100) == [(80, 100, 90, 100)]


def test_face_track_detects_between_samples_only_where_the_face_moves(media) -> None:
    # Half a second still, then a quick slide to the right: 15 px a frame.
    portrait = cv2.resize(astronaut_head(), (240, 240))
    shifts = [0] * 13 + [15 * k for k in range(1, 13)]
    frames = []
    for shift in shifts:
        canvas = np.full((270, 480, 3), 110, np.uint8)
        canvas[15:255, 20 + shift : 260 + shift] = portrait
        frames.append(canvas)
    path = write_video(media / "slide.mp4", frames, 25)
    info = probe_video(path)
    track = track_faces(iter_frames(path, info), stride=5)
    assert [s.index for s in track.samples] == [0, 5, 10, 15, 20, 24]
    assert track.found.all() and track.frame_count == len(shifts)
    # Still (0-10): samples only. Moving (10-24): every frame between samples detected too.
    assert track.detections == len(track.samples) + (24 - 10 - 3)
    (face,) = detect_faces(portrait)
    for index, shift in enumerate(shifts):
        true_x = (face.box[0] + face.box[2]) / 2 + 20 + shift
        assert abs((track.boxes[index, 0] + track.boxes[index, 2]) / 2 - true_x) < 6, index


def _track(faces_per_sample: list[int]) -> FaceTrack:
    """A face track whose samples saw these numbers of (equal) faces."""
    face = FaceDetection((10.0, 10.0, 50.0, 50.0), 0.9, np.zeros((6, 2), np.float32))
    samples = tuple(
        Sample(5 * i, (face,) * count, face if count else None)
        for i, count in enumerate(faces_per_sample)
    )
    n = 5 * len(samples)
    return FaceTrack(np.zeros((n, 4)), np.ones(n, bool), samples, 5, len(samples))


def test_face_rules() -> None:
    check_faces(_track([1] * 5 + [0] * 5))  # half the samples without a face: accepted
    with pytest.raises(PreparationError, match="No face detected in video"):
        check_faces(_track([1] * 4 + [0] * 5))  # more than half without
    check_faces(_track([1] * 9 + [2]))  # one sample in ten with two faces: accepted
    with pytest.raises(PreparationError, match="Multiple faces detected"):
        check_faces(_track([1] * 4 + [2]))  # one in five with a face
    # A small face beside the main one (someone far behind) does not count.
    big = FaceDetection((0.0, 0.0, 100.0, 100.0), 0.9, np.zeros((6, 2), np.float32))
    small = FaceDetection((200.0, 0.0, 240.0, 40.0), 0.9, np.zeros((6, 2), np.float32))
    assert Sample(0, (big, small), big).comparable_faces == 1


def test_png_encoder_round_trips(head) -> None:
    frame = next(read_frames(head.path))
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (37, 51, 3), dtype=np.uint8)
    for image in (frame, noise, frame[:1, :1]):
        for compress in (None, lambda data: zlib.compress(data, 6)):
            data = encode_png(image, compress=compress)
            assert np.array_equal(_png(data), image)
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), image)
    with pytest.raises(ValueError):
        encode_png(frame[..., 0])


def test_probe_counts_frames_when_the_header_does_not(media) -> None:
    # Matroska keeps no frame count in its header; the probe counts packets instead.
    frames = [np.full((64, 96, 3), 8 * k, np.uint8) for k in range(30)]
    path = write_video(media / "count.mkv", frames, 15)
    info = probe_video(path)
    assert (info.format, info.codec, info.frame_count) == ("matroska", "h264", 30)
    assert (info.width, info.height, info.fps) == (96, 64, 15.0)
    assert abs(info.duration_s - 2.0) < 0.1
    assert sum(1 for _ in read_frames(path)) == 30
    # WebM (VP9), as browsers record: named by its suffix among FFmpeg's "matroska,webm".
    info = probe_video(write_video(media / "count.webm", frames, 15, codec="libvpx-vp9"))
    assert (info.format, info.codec, info.frame_count, info.fps) == ("webm", "vp9", 30, 15.0)


# -- the command line -----------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [PYTHON, "-m", "control_api", "prepare", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_prepares_a_package(head, tmp_path) -> None:
    run = _cli(str(head.path), "--model", "wav2lip", "--avatar-id", "cli-1", "--out", str(tmp_path))
    assert run.returncode == 0, run.stderr
    package = tmp_path / "cli-1.tar"
    assert run.stdout.splitlines() == [str(package), f"{head.num_frames} frames (wav2lip)"]
    assert "100%" in run.stderr  # the progress bar
    assert len(pickle.loads(_members(package)["coords.pkl"])) == head.num_frames


def test_cli_reports_refusals_with_exit_code_2(media, tmp_path) -> None:
    short = no_face_video(media / "short.mp4", seconds=1.0)
    run = _cli(str(short), "--avatar-id", "x", "--out", str(tmp_path))
    assert run.returncode == 2
    assert run.stderr.strip().endswith(
        "python -m control_api prepare: error: Video too short, minimum 3 seconds required"
    )
    run = _cli(str(short), "--avatar-id", "x", "--model", "sadtalker", "--out", str(tmp_path))
    assert run.returncode == 2
    assert (
        "Unsupported model: sadtalker (supported: wav2lip, meshwarp, liveportrait, musetalk)"
        in run.stderr
    )
    assert list(tmp_path.iterdir()) == []
