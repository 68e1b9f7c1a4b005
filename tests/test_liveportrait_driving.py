"""The LivePortrait renderer's geometry and driving, without the networks: the crop from
MediaPipe's points, the expression edits on the documented keypoints, and how speech,
emotion and blinks become edits and target ratios."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from renderers.base import Expression, FrameRequest
from renderers.bundled import DEFAULT_PORTRAIT
from renderers.liveportrait import expression as edit
from renderers.liveportrait.crop import (
    CROP_SIZE,
    FRAMING_POINTS,
    openness_ratios,
    paste_mask,
    source_crop,
)
from renderers.liveportrait.driving import MAX_LIP_RATIO, Driver, plan
from renderers.meshwarp.rig import CONTROLS, INDEX
from renderers.vision import analyse_portrait, load_image

RATE = 16000
FPS = 30.0


@pytest.fixture(scope="module")
def portrait() -> tuple[np.ndarray, np.ndarray]:
    rgb = load_image(DEFAULT_PORTRAIT.read_bytes())
    return rgb, analyse_portrait(rgb).points


def _rotated(rgb: np.ndarray, degrees: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(rgb, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)


# -- the crop ------------------------------------------------------------------------------


def test_crop_frames_the_face_as_liveportrait_does(portrait) -> None:
    rgb, points = portrait
    crop = source_crop(points)
    inside = crop.points_in_crop(points)
    eyes = inside[[468, 473]].mean(axis=0)
    chin = inside[152]
    # LivePortrait's 2.3 / -0.125 framing: the face in the middle third across, the eyes a
    # little below the middle (forehead and hair in), the chin in the lower fifth.
    assert abs(eyes[0] - CROP_SIZE / 2) < 0.05 * CROP_SIZE
    assert 0.40 * CROP_SIZE < eyes[1] < 0.55 * CROP_SIZE
    assert 0.75 * CROP_SIZE < chin[1] < 0.92 * CROP_SIZE
    cloud = inside[list(FRAMING_POINTS)]
    width = cloud[:, 0].max() - cloud[:, 0].min()
    assert 0.35 * CROP_SIZE < width < 0.5 * CROP_SIZE


def test_crop_is_upright_for_a_tilted_head(portrait) -> None:
    rgb, _ = portrait
    for degrees in (-20.0, 15.0):
        tilted = _rotated(rgb, degrees)
        points = analyse_portrait(tilted).points
        crop = source_crop(points)
        inside = crop.points_in_crop(points)
        left, right = inside[468], inside[473]
        roll = math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))
        assert abs(roll) < 4.0, (degrees, roll)
        # cv2 rotates counter-clockwise for positive angles: the crop undoes it.
        assert math.degrees(crop.angle) == pytest.approx(-degrees, abs=5.0)


def test_crop_maps_back_to_the_image(portrait) -> None:
    _, points = portrait
    crop = source_crop(points)
    inside = crop.points_in_crop(points)
    back = inside @ crop.to_image[:, :2].T + crop.to_image[:, 2]
    assert np.allclose(back, points[:, :2], atol=1e-3)


def test_cut_crop_shows_the_face_where_the_points_say(portrait) -> None:
    rgb, points = portrait
    crop = source_crop(points)
    cut = crop.cut(rgb)
    assert cut.shape == (CROP_SIZE, CROP_SIZE, 3)
    nose = crop.points_in_crop(points)[1].round().astype(int)
    expected = rgb[int(round(points[1, 1])), int(round(points[1, 0]))].astype(int)
    assert np.abs(cut[nose[1], nose[0]].astype(int) - expected).max() < 40


def test_paste_mask_is_solid_inside_and_zero_at_the_border() -> None:
    mask = paste_mask(256)
    assert mask[128, 128] == pytest.approx(1.0)
    assert mask[0].max() == 0.0 and mask[:, -1].max() == 0.0
    assert np.all(np.diff(mask[128, :128]) >= 0)  # rises smoothly from the edge


def test_openness_ratios_of_the_portrait(portrait) -> None:
    _, points = portrait
    ratios = openness_ratios(points)
    assert 0.25 < ratios.eye_left < 0.5 and 0.25 < ratios.eye_right < 0.5
    assert 0.05 < ratios.lip < 0.3  # a smile with the teeth apart


# -- expression edits ----------------------------------------------------------------------


def _zeros(n: int = 1) -> np.ndarray:
    return np.zeros((n, 21, 3), dtype=np.float32)


@pytest.mark.parametrize(
    ("function", "value", "expected"),
    [
        (edit.smile, 1.0, {(20, 1): -0.01, (14, 1): -0.02, (17, 1): 0.0065, (17, 2): 0.003,
                           (13, 1): -0.00275, (16, 1): -0.00275, (3, 1): -0.0035, (7, 1): -0.0035}),
        (edit.eyebrow, 10.0, {(1, 1): 0.01, (2, 1): -0.01}),
        (edit.eyebrow, -10.0, {(1, 0): 0.01, (2, 0): -0.01, (1, 1): -0.003, (2, 1): 0.003}),
        (edit.purse, 10.0, {(14, 1): 0.01, (3, 1): -0.005, (7, 1): -0.005, (17, 2): -0.005}),
        (edit.grin, 10.0, {(20, 2): -0.01, (20, 1): -0.01, (14, 1): -0.01}),
        (edit.lip_open, 100.0, {(19, 1): 0.1, (19, 2): 0.01, (17, 1): -0.01}),
        (edit.pout, 0.05, {(19, 0): 0.05}),
    ],
)  # fmt: skip
def test_edits_move_the_documented_keypoints_by_the_documented_amounts(
    function, value, expected
) -> None:
    out = function(_zeros(), np.array([value]))
    moved = {(int(k), int(a)) for k, a in zip(*np.nonzero(out[0]), strict=True)}
    assert moved == set(expected)
    for (keypoint, axis), amount in expected.items():
        assert out[0, keypoint, axis] == pytest.approx(amount, rel=1e-5)


def test_gaze_moves_the_eyeballs_and_lids_as_upstream() -> None:
    out = edit.gaze(_zeros(), np.array([10.0]), np.array([0.0]))
    assert out[0, 11, 0] == pytest.approx(0.007) and out[0, 15, 0] == pytest.approx(0.01)
    out = edit.gaze(_zeros(), np.array([-10.0]), np.array([0.0]))
    assert out[0, 11, 0] == pytest.approx(-0.01) and out[0, 15, 0] == pytest.approx(-0.007)
    up = edit.gaze(_zeros(), np.array([0.0]), np.array([10.0]))
    # y: -0.001 per unit, plus the lid term at -y/2 (-0.001 per unit on 11 and 15).
    assert up[0, 11, 1] == pytest.approx(-0.01 + 0.005)
    assert up[0, 13, 1] == pytest.approx(-5 * 0.0003)


def test_edits_work_on_a_batch_frame_by_frame() -> None:
    out = edit.smile(_zeros(3), np.array([0.0, 0.5, 1.0]))
    assert np.allclose(out[0], 0.0)
    assert np.allclose(out[2], 2 * out[1])


# -- driving -------------------------------------------------------------------------------


def _weights(**controls: float) -> np.ndarray:
    w = np.zeros((1, len(CONTROLS)), dtype=np.float32)
    for name, value in controls.items():
        w[0, INDEX[name]] = value
    return w


def test_rest_plan_edits_nothing_and_closes_the_lips() -> None:
    face = plan(_weights())
    delta = np.random.default_rng(1).normal(0, 0.01, size=(1, 21, 3)).astype(np.float32)
    assert np.array_equal(face.edited(delta), delta)
    assert face.lip_ratio[0] == 0.0 and face.eye_scale[0] == pytest.approx(1.0)
    assert (face.pitch[0], face.yaw[0], face.roll[0]) == (0.0, 0.0, 0.0)


def _settled_plan(emotion: str, intensity: float):
    driver = Driver(FPS, RATE)
    driver.snap(Expression(emotion, intensity))
    request = FrameRequest(0, None, 0, 0, 0, expression=Expression(emotion, intensity))
    # Frame 0 of the idle clock: no blink, the sway at its start.
    return plan(driver.weights([request]))


def test_intensity_zero_is_neutral_for_every_emotion() -> None:
    neutral = _settled_plan("neutral", 0.0)
    for emotion in ("happy", "sad", "concerned", "surprised", "angry", "reassuring"):
        face = _settled_plan(emotion, 0.0)
        for field in ("smile", "eyebrow", "grin", "purse", "lip_ratio", "eye_scale", "roll"):
            assert getattr(face, field) == pytest.approx(getattr(neutral, field)), (emotion, field)


def test_emotions_move_the_face_the_way_they_should() -> None:
    neutral = _settled_plan("neutral", 0.0)
    happy = _settled_plan("happy", 1.0)
    sad = _settled_plan("sad", 1.0)
    surprised = _settled_plan("surprised", 1.0)
    angry = _settled_plan("angry", 1.0)
    assert happy.smile[0] > neutral.smile[0] + 0.5
    assert sad.smile[0] < neutral.smile[0] and sad.eyebrow[0] < 0
    assert surprised.eyebrow[0] > 10 and surprised.lip_ratio[0] > 0.1
    assert surprised.eye_scale[0] > 1.2
    assert angry.eyebrow[0] < -15 and angry.eye_scale[0] < 1.0
    half = _settled_plan("happy", 0.5)
    assert half.smile[0] == pytest.approx((happy.smile[0] + neutral.smile[0]) / 2, rel=0.05)


def test_an_emotion_change_eases_in_over_about_300_ms() -> None:
    driver = Driver(FPS, RATE)
    happy = Expression("happy", 1.0)
    smiles = [
        plan(driver.weights([FrameRequest(i, None, 0, 0, 0, expression=happy)])).smile[0]
        for i in range(15)
    ]
    assert smiles[0] < 0.3 * smiles[-1]
    assert smiles[9] > 0.9 * smiles[-1]  # 300 ms at 30 fps
    assert all(b >= a for a, b in zip(smiles, smiles[1:], strict=False))


def _vowel(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    voice = sum(np.sin(2 * np.pi * f * t) / (k + 1) for k, f in enumerate((140, 700, 1200)))
    return (0.3 * voice).astype(np.float32)


def test_speech_opens_the_lips_and_reads_ahead_of_its_frame() -> None:
    window = RATE // 30
    audio = np.zeros(RATE, dtype=np.float32)
    onset = 10 * window
    audio[onset:] = _vowel(1.0)[: RATE - onset]
    ahead = int(0.05 * RATE)

    def lip_ratios(driver: Driver) -> list[float]:
        ratios = []
        for k in range(16):
            start = k * window
            chunk = audio[start : start + window + ahead]
            request = FrameRequest(k, chunk, 0, window, start)
            ratios.append(float(plan(driver.weights([request])).lip_ratio[0]))
        return ratios

    ratios = lip_ratios(Driver(FPS, RATE))
    assert max(ratios[:8]) == 0.0
    assert max(ratios[10:]) > 0.15 and max(ratios) <= MAX_LIP_RATIO
    # The frame just before the sound starts already opens: its look-ahead hears it.
    assert ratios[9] > 0.0


def test_a_blink_closes_the_eyes_target() -> None:
    driver = Driver(FPS, RATE)
    scales = [
        float(plan(driver.weights([FrameRequest(i, None, 0, 0, 0)])).eye_scale[0])
        for i in range(int(8 * FPS))
    ]
    assert min(scales) < 0.1  # a blink within the first 8 seconds (IdleMotion's schedule)
    assert np.median(scales) == pytest.approx(1.0, abs=0.05)
