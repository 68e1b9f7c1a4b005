"""meshwarp's idle loop for an avatar made from a video: the clip's own frames play forward and
back under the animated face, the face drawn where it is in each frame, no synthetic sway.

The clip: the astronaut drifting a few pixels sideways over 24 frames (a sitter settling)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import renderers
from renderers import FrameRequest, VideoFormat
from renderers.bundled import DEFAULT_PORTRAIT
from renderers.meshwarp import MeshwarpRenderer
from renderers.meshwarp.loop import IdleLoop
from renderers.meshwarp.rig import INDEX, face_scale
from renderers.vision import analyse_portrait, load_image
from tests.test_meshwarp import write_video
from tests.test_mouth_features import requests, vowel

pytestmark = pytest.mark.usefixtures("private_cache")

FPS = 30
FRAMES = 24
DRIFT_PX = 6.0  # in the source video's pixels, at the end of the clip


def drift(k: int) -> float:
    return DRIFT_PX * k / (FRAMES - 1)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    portrait = load_image(DEFAULT_PORTRAIT)
    h, w = portrait.shape[:2]
    frames = []
    for k in range(FRAMES):
        matrix = np.float32([[1, 0, drift(k)], [0, 1, 0]])
        frames.append(cv2.warpAffine(portrait, matrix, (w, h), borderMode=cv2.BORDER_REFLECT))
    path = tmp_path_factory.mktemp("clip") / "settling.mp4"
    write_video(path, frames)
    return path


@pytest.fixture(scope="module")
def renderer(clip, private_cache) -> MeshwarpRenderer:
    made = renderers.create("meshwarp", VideoFormat(512, 512, FPS))
    assert isinstance(made, MeshwarpRenderer)
    made.load(clip)
    return made


def idle(index: int) -> FrameRequest:
    return FrameRequest(index, None, 0, 0, 0)


def test_ping_pong_order() -> None:
    loop = IdleLoop(np.zeros((4, 1, 1, 3), np.uint8), np.zeros((4, 2), np.float32))
    assert [loop.index(i) for i in range(10)] == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    single = IdleLoop(np.zeros((1, 1, 1, 3), np.uint8), np.zeros((1, 2), np.float32))
    assert single.index(5) == 0


def test_a_video_avatar_keeps_the_clips_frames_and_the_faces_drift(renderer) -> None:
    avatar = renderer._avatar
    assert avatar is not None and avatar.loop is not None
    assert len(avatar.loop) == FRAMES
    # The drift is measured in output pixels: the source's, scaled by the framing.
    scale = avatar.scale / face_scale(analyse_portrait(load_image(DEFAULT_PORTRAIT)).points)
    dx = avatar.loop.offsets[:, 0]
    print(f"\nmeasured drift (px): {np.round(dx[[0, FRAMES // 2, -1]], 2).tolist()}")
    assert abs(dx[0]) < 0.5
    assert dx[-1] == pytest.approx(DRIFT_PX * scale, abs=1.0)
    assert np.all(np.diff(dx) > -0.5)  # it only drifts one way
    assert np.abs(avatar.loop.offsets[:, 1]).max() < 1.0


def test_idle_frames_play_the_clip_forward_and_back(renderer) -> None:
    first, last, back = (renderer.render([idle(i)])[0] for i in (0, FRAMES - 1, 2 * FRAMES - 2))
    corner = (slice(0, 40), slice(0, 40))  # background, far from the face
    assert np.abs(first[corner].astype(int) - last[corner].astype(int)).mean() > 1.0
    assert np.abs(first[corner].astype(int) - back[corner].astype(int)).mean() < 0.5


def test_no_synthetic_sway_over_the_clip(renderer) -> None:
    for index in range(0, 300, 7):
        renderer.render([idle(index)])
        for control in ("head_x", "head_y", "head_roll"):
            assert renderer.last_weights[INDEX[control]] == 0.0, control


def test_the_mouth_is_drawn_where_the_face_is_in_each_loop_frame(renderer) -> None:
    avatar = renderer._avatar
    assert avatar is not None and avatar.loop is not None
    speech = requests(vowel((730, 1090, 2440), seconds=1.0), start=1000)
    pictures = renderer.render(speech)
    mx, my = np.round(avatar.points[13, :2]).astype(int)

    def cavity_x(picture: np.ndarray) -> float:
        """Where the open mouth's dark inside is, across."""
        box = picture[my - 10 : my + 30, mx - 50 : mx + 50, :3].astype(np.float32)
        dark = (box @ np.float32([0.299, 0.587, 0.114])) < 80
        assert dark.sum() > 50, "the mouth is open"
        return float(np.nonzero(dark)[1].mean())

    # A sustained vowel: the same mouth on loop frames 2 and 17 (the face 1 and 9 px across).
    early, late = speech[10].index, speech[25].index
    moved = avatar.loop.offset(late)[0] - avatar.loop.offset(early)[0]
    assert moved >= 5
    shift = cavity_x(pictures[25]) - cavity_x(pictures[10])
    print(f"\nthe face moved {moved} px, the drawn mouth {shift:.1f} px")
    assert shift == pytest.approx(moved, abs=1.5)


# -- a package prepared from a video ----------------------------------------------------------


def test_a_package_prepared_from_a_video_plays_its_own_frames_with_the_mouth_animated(
    clip, tmp_path
) -> None:
    """The preparation job's meshwarp package carries the idle clip (idle.mp4): extracted and
    loaded, it plays the video's frames forward and back, and speech opens the mouth on them."""
    import json
    import tarfile

    from renderers.meshwarp import landmarks as lm
    from renderers.preparation import PreparationLimits, prepare_avatar_package

    result = prepare_avatar_package(
        clip, avatar_id="settling", model="meshwarp", out_dir=tmp_path / "out",
        limits=PreparationLimits(min_duration_s=0.5),
    )  # fmt: skip
    package = tmp_path / "avatars" / "settling"
    with tarfile.open(result.package) as tar:
        tar.extractall(package, filter="data")
    manifest = json.loads((package / "avatar.json").read_text())
    assert (package / "idle.mp4").is_file()
    assert (manifest["idle_first_frame"], manifest["idle_frames"]) == (0, FRAMES)

    made = renderers.create("meshwarp", VideoFormat(256, 256, FPS))
    assert isinstance(made, MeshwarpRenderer)
    made.load(package)
    avatar = made._avatar
    assert avatar is not None and avatar.loop is not None and len(avatar.loop) == FRAMES

    # Ping-pong: frame n-1 is the far end of the clip, frame 2n-2 is back at its start.
    n = FRAMES
    first, far, back = (
        made.render([idle(i)])[0][..., :3].astype(int) for i in (0, n - 1, 2 * n - 2)
    )
    corner = (slice(0, 20), slice(0, 20))  # background, far from the face
    assert np.abs(first[corner] - far[corner]).mean() > 0.5  # the clip's frames, not a still
    assert np.abs(first - back).mean() < 0.5

    # Speech on the loop: the jaw drops and the lips part on the moving frames.
    made.render(requests(vowel((730, 1090, 2440), seconds=0.6), start=3 * n))
    assert made.last_weights[INDEX["jaw_open"]] > 0.3
    row = {index: k for k, index in enumerate(lm.CONTROL_POINTS)}
    marks = made.landmarks_for(made.last_weights)
    assert marks[row[lm.LIP_BOTTOM], 1] - marks[row[lm.LIP_TOP], 1] > 0.08 * avatar.scale
