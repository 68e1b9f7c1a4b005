"""Ditto's motion space (renderers/ditto/motion): the 265 vector, the 1103 condition, motion
stitching, window fusion / smoothing / cond_frame, and 25 -> 30 fps resampling."""

from __future__ import annotations

import numpy as np
import pytest

from renderers.ditto.motion import condition as cond
from renderers.ditto.motion import motion as mo
from renderers.ditto.motion import stitch as st
from renderers.ditto.motion import windows as win
from renderers.liveportrait import keypoint_math
from renderers.liveportrait.engine import MotionInfo, motion_info
from renderers.liveportrait.expression import EYE_KEYPOINTS, LIP_KEYPOINTS

RNG = np.random.default_rng(7)


def random_vectors(n: int, rng: np.random.Generator = RNG) -> np.ndarray:
    v = rng.normal(0.0, 1.0, (n, mo.MOTION_DIM)).astype(np.float32)
    v[:, 0] *= 0.05
    v[:, mo.T] *= 0.05
    v[:, mo.EXP] *= 0.02
    return v


def random_info(rng: np.random.Generator = RNG) -> MotionInfo:
    logits = rng.normal(0.0, 2.0, (1, 3, 66)).astype(np.float32)
    pitch, yaw, roll = (keypoint_math.bins_to_degrees(logits[:, i]) for i in range(3))
    return MotionInfo(
        pitch=pitch,
        yaw=yaw,
        roll=roll,
        t=rng.normal(0, 0.02, (1, 3)).astype(np.float32),
        exp=rng.normal(0, 0.02, (1, 21, 3)).astype(np.float32),
        scale=np.array([[1.4]], np.float32),
        kp=rng.normal(0, 0.3, (1, 21, 3)).astype(np.float32),
        pose_logits=logits,
    )


# --- motion.py ---------------------------------------------------------------------------


def test_pack_unpack_round_trip() -> None:
    v = random_vectors(5)
    m = mo.Motion.unpack(v)
    assert len(m) == 5
    np.testing.assert_allclose(m.scale, v[:, 0] + 1.0, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(m.pitch, v[:, 1:67])
    np.testing.assert_array_equal(m.roll, v[:, 133:199])
    np.testing.assert_array_equal(m.exp.reshape(5, 63), v[:, 202:265])
    np.testing.assert_allclose(m.pack(), v, rtol=0, atol=1e-6)
    assert mo.Motion.unpack(v[0]).pack().shape == (1, 265)
    with pytest.raises(ValueError):
        mo.Motion.unpack(np.zeros((2, 264)))


def test_bins_to_degrees_is_liveportraits() -> None:
    v = random_vectors(4)
    m = mo.Motion.unpack(v)
    pitch, yaw, roll = m.degrees()
    np.testing.assert_array_equal(pitch, keypoint_math.bins_to_degrees(v[:, mo.PITCH]))
    np.testing.assert_array_equal(yaw, keypoint_math.bins_to_degrees(v[:, mo.YAW]))
    np.testing.assert_array_equal(roll, keypoint_math.bins_to_degrees(v[:, mo.ROLL]))
    # and the torch head's reading, where torch is installed
    torch = pytest.importorskip("torch")
    from renderers.liveportrait.networks.motion import bins_to_degrees as torch_degrees

    expected = torch_degrees(torch.from_numpy(v[:, mo.YAW])).numpy()
    np.testing.assert_allclose(yaw, expected, atol=1e-4)


def test_source_from_info_uses_logits_and_falls_back() -> None:
    info = random_info()
    src = mo.source_from_info(info)
    vec = src.vector
    assert vec.shape == (265,)
    np.testing.assert_allclose(vec[0], 0.4, atol=1e-6)
    np.testing.assert_array_equal(vec[mo.YAW], info.pose_logits[0, 1])  # type: ignore[index]
    np.testing.assert_array_equal(vec[mo.EXP], info.exp.reshape(63))
    np.testing.assert_array_equal(src.sc, info.kp.reshape(63))

    plain = MotionInfo(**{**info.__dict__, "pose_logits": None})
    fallback = mo.source_from_info(plain).motion
    pitch, yaw, roll = fallback.degrees()
    np.testing.assert_allclose(pitch, info.pitch, atol=1e-3)
    np.testing.assert_allclose(yaw, info.yaw, atol=1e-3)
    np.testing.assert_allclose(roll, info.roll, atol=1e-3)


def test_motion_info_reads_optional_logits() -> None:
    outputs = [np.zeros((2,)), np.zeros((2,)), np.zeros((2,)), np.zeros((2, 3))]
    outputs += [np.zeros((2, 21, 3)), np.ones((2, 1)), np.zeros((2, 21, 3))]
    assert motion_info(outputs).pose_logits is None
    logits = [np.full((2, 66), float(i)) for i in range(3)]
    info = motion_info(outputs + logits)
    assert info.pose_logits is not None and info.pose_logits.shape == (2, 3, 66)
    assert info.pose_logits[1, 2, 0] == 2.0


# --- condition.py ------------------------------------------------------------------------


def test_condition_shape_and_layout() -> None:
    sc = RNG.normal(size=63).astype(np.float32)
    builder = cond.ConditionBuilder(sc, np.array([[0.3, 0.31]]), np.arange(6.0), emo=3)
    audio = RNG.normal(size=(80, 1024)).astype(np.float32)
    c = builder(audio, start=-5)
    assert cond.CONDITION_DIM == 1103 and c.shape == (80, 1103)
    np.testing.assert_array_equal(c[:, :1024], audio)
    assert np.argmax(c[0, 1024:1032]) == 3
    np.testing.assert_allclose(c[:, 1032:1034], [[0.3, 0.31]] * 80, atol=1e-7)
    np.testing.assert_array_equal(c[7, 1034:1040], np.arange(6.0))
    np.testing.assert_array_equal(c[9, 1040:], sc)


def test_emo_forms() -> None:
    one = cond.emotion_sequence(4)
    assert one.shape == (1, 8)
    assert one[0, 4] == pytest.approx(0.99765, abs=1e-4)
    assert one.sum() == pytest.approx(1.0, abs=1e-6)
    mixed = cond.emotion_sequence([3, 4])
    assert mixed[0, 3] == pytest.approx(mixed[0, 4]) and mixed[0, 3] > 0.49
    per_frame = cond.emotion_sequence([[4], [3, 4], [3]])
    assert per_frame.shape == (3, 8) and np.argmax(per_frame[2]) == 3
    array = np.eye(8, dtype=np.float32)[:2]
    np.testing.assert_array_equal(cond.emotion_sequence(array), array)
    assert cond.emotion_sequence(4, frames=10).shape == (10, 8)
    assert cond.emotion_sequence([[4]] * 20, frames=10).shape == (10, 8)
    with pytest.raises(ValueError):
        cond.emotion_sequence([[4]] * 3, frames=10)
    with pytest.raises(ValueError):
        cond.emotion_sequence("happy")  # type: ignore[arg-type]
    # a per-frame override in the call, and the builder cycling a sequence by frame index
    builder = cond.ConditionBuilder(np.zeros(63), np.zeros(2), np.zeros(6), emo=[[0], [6]])
    c = builder(np.zeros((4, 1024), np.float32), start=0)
    assert [int(np.argmax(r)) for r in c[:, 1024:1032]] == [0, 6, 0, 6]
    c = builder(np.zeros((4, 1024), np.float32), start=0, emo=5)
    assert all(np.argmax(r) == 5 for r in c[:, 1024:1032])


def test_project_emotions_map_onto_ditto() -> None:
    from avatar_runtime.state import EMOTIONS

    assert set(cond.EMOTION_LABELS) == set(EMOTIONS)
    assert np.argmax(cond.project_emotion("happy")) == cond.DITTO_EMOTIONS.index("happy")
    assert np.argmax(cond.project_emotion("angry")) == cond.DITTO_EMOTIONS.index("angry")
    assert np.argmax(cond.project_emotion("surprised")) == cond.DITTO_EMOTIONS.index("surprise")
    np.testing.assert_allclose(cond.project_emotion("sad", 0.0), cond.emotion_vector(4))
    half = cond.project_emotion("sad", 0.5)
    assert half[5] == pytest.approx(half[4], abs=1e-6) and half.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        cond.project_emotion("bored")


def _eye_landmarks(open_gap: float, iris_dx: float) -> np.ndarray:
    lm = np.zeros((478, 3), np.float32)
    for (outer, inner), cx, iris in (((33, 133), 100.0, 468), ((263, 362), 200.0, 473)):
        sign = -1.0 if outer == 33 else 1.0
        lm[outer] = [cx + sign * 20.0, 100.0, 0.0]
        lm[inner] = [cx - sign * 20.0, 100.0, 0.0]
        lm[iris] = [cx + iris_dx, 100.0, 0.0]
    for low, high in cond._L_HEIGHTS + cond._R_HEIGHTS:
        lm[low] = [0.0, 100.0 + open_gap / 2, 0.0]
        lm[high] = [0.0, 100.0 - open_gap / 2, 0.0]
    return lm


def test_eye_features() -> None:
    eye_open, eye_ball = cond.eye_features(_eye_landmarks(8.0, 0.0), 512, 512)
    assert eye_open.shape == (1, 2) and eye_ball.shape == (1, 6)
    np.testing.assert_allclose(eye_open, [[24.0 / 40.0] * 2], rtol=1e-5)
    np.testing.assert_allclose(eye_ball, 0.0, atol=1e-6)
    closed, _ = cond.eye_features(_eye_landmarks(1.0, 0.0), 512, 512)
    assert (closed < eye_open).all()
    _, moved = cond.eye_features(np.stack([_eye_landmarks(8.0, 5.0)] * 2), 512, 512)
    assert moved.shape == (2, 6)
    assert np.abs(moved).max() > 0  # layout (x_L, x_R, y_L, y_R, z_L, z_R)
    np.testing.assert_allclose(moved[:, 2:], 0.0, atol=1e-6)


# --- stitch.py ---------------------------------------------------------------------------


def test_stitch_mixes_lips_and_eyes_from_generated() -> None:
    info = random_info()
    src = mo.source_from_info(info)
    d0 = random_vectors(1)[0]
    stitcher = st.MotionStitcher(src, d0=d0, drive_eye=True)
    gen = random_vectors(6)
    frames = stitcher.motion(gen)
    driven = list(LIP_KEYPOINTS) + list(EYE_KEYPOINTS)
    others = [k for k in range(21) if k not in driven]
    src_exp = src.motion.exp[0]
    # non-lip/eye keypoints stay at the source
    np.testing.assert_array_equal(
        frames.exp[:, others], np.broadcast_to(src_exp[others], (6, len(others), 3))
    )
    # lips are source + (generated - d0) exactly
    rel = src_exp + (gen[:, mo.EXP].reshape(6, 21, 3) - d0[mo.EXP].reshape(21, 3))
    np.testing.assert_allclose(
        frames.exp[:, list(LIP_KEYPOINTS)], rel[:, list(LIP_KEYPOINTS)], atol=1e-6
    )
    # eyes too, apart from the gaze fix on keypoints 11 and 15 (x, y)
    untouched_eyes = [k for k in EYE_KEYPOINTS if k not in (11, 15)]
    np.testing.assert_allclose(frames.exp[:, untouched_eyes], rel[:, untouched_eyes], atol=1e-6)
    # pose: relative on logits, then degrees; scale from the source (image source)
    logits = src.motion.yaw + (gen[:, mo.YAW] - d0[mo.YAW])
    np.testing.assert_allclose(frames.yaw, keypoint_math.bins_to_degrees(logits), atol=1e-5)
    np.testing.assert_allclose(frames.scale, np.full(6, 1.4), atol=1e-6)
    # the keypoints are LivePortrait's transform of the source's canonical keypoints
    kp = stitcher(gen)
    rotation = keypoint_math.rotation_matrix(frames.pitch, frames.yaw, frames.roll)
    expected = keypoint_math.transform_keypoints(
        np.repeat(info.kp, 6, axis=0), rotation, frames.exp, frames.scale, frames.t
    )
    np.testing.assert_allclose(kp, expected, atol=1e-6)


def test_stitch_without_eyes_and_video_keys() -> None:
    src = mo.source_from_info(random_info())
    gen = random_vectors(3)
    stitcher = st.MotionStitcher(src, drive_eye=False, use_d_keys=st.VIDEO_D_KEYS)
    frames = stitcher.motion(gen)
    assert stitcher.d0 is not None  # the first frame became d0
    src_exp = src.motion.exp[0]
    np.testing.assert_array_equal(
        frames.exp[:, list(EYE_KEYPOINTS)], np.broadcast_to(src_exp[list(EYE_KEYPOINTS)], (3, 5, 3))
    )
    src_pitch, src_yaw, _ = src.motion.degrees()
    np.testing.assert_allclose(frames.yaw, np.full(3, src_yaw[0]), atol=1e-6)
    np.testing.assert_allclose(frames.t, np.repeat(src.motion.t, 3, axis=0))
    # frame 0 is d0: the driving motion of the first frame is the source's own
    np.testing.assert_allclose(frames.exp[0], src_exp, atol=1e-6)


def test_gaze_fix_direction() -> None:
    exp = np.zeros((3, 21, 3), np.float32)
    out = st.gaze_fix(exp, np.array([10.0, -10.0, 0.0]), np.array([0.0, 0.0, 10.0]))
    flat = out.reshape(3, 63)
    # head turned to +yaw: both eyeballs' x move +, 0.26 x 10 x (0.0007, 0.001)
    assert flat[0, 33] == pytest.approx(2.6 * 0.0007) and flat[0, 45] == pytest.approx(2.6 * 0.001)
    assert flat[1, 33] == pytest.approx(-2.6 * 0.001) and flat[1, 45] == pytest.approx(
        -2.6 * 0.0007
    )
    # head pitched +: both eyeballs' y move -, 0.28 x 10 x 0.001
    assert flat[2, 34] == pytest.approx(-2.8 * 0.001) and flat[2, 46] == pytest.approx(-2.8 * 0.001)
    assert np.count_nonzero(flat[:2, [34, 46]]) == 0 and np.count_nonzero(flat[2, [33, 45]]) == 0
    # in the stitcher, against the source's pose, with delta_yaw control
    src = mo.source_from_info(random_info())
    d = np.tile(src.vector, (1, 1))
    base = st.MotionStitcher(src, d0=src.vector).motion(d)
    turned = st.MotionStitcher(src, d0=src.vector).motion(d, st.Controls(delta_yaw=5.0))
    assert turned.yaw[0] == pytest.approx(base.yaw[0] + 5.0, abs=1e-4)
    assert turned.exp[0, 11, 0] > base.exp[0, 11, 0] and turned.exp[0, 15, 0] > base.exp[0, 15, 0]


def test_vad_alpha_pulls_exp_to_source() -> None:
    src = mo.source_from_info(random_info())
    gen = random_vectors(2)
    stitcher = st.MotionStitcher(src, d0=random_vectors(1)[0], drive_eye=False)
    quiet = stitcher.motion(gen, st.Controls(vad_alpha=0.0))
    np.testing.assert_allclose(quiet.exp, np.repeat(src.motion.exp, 2, axis=0), atol=1e-6)


# --- windows.py --------------------------------------------------------------------------


def test_fusion_weights_and_fuse() -> None:
    np.testing.assert_allclose(win.fuse_weights(4), [0.0, 0.25, 0.5, 0.75])
    history = np.zeros((20, 2), np.float32)
    window = np.ones((10, 2), np.float32)
    out = win.fuse(history, window, overlap=6, fuse_length=4)
    assert out.shape == (24, 2)
    np.testing.assert_allclose(out[16:20, 0], [0.0, 0.25, 0.5, 0.75])
    np.testing.assert_array_equal(out[:16], 0.0)
    np.testing.assert_array_equal(out[20:], 1.0)


def test_smoothing_only_touches_pose_dims() -> None:
    seq = random_vectors(12)
    out = win.smooth(seq)
    np.testing.assert_array_equal(out[:, 202:], seq[:, 202:])
    np.testing.assert_allclose(out[5, :202], seq[4:7, :202].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(out[0, :202], seq[0:2, :202].mean(axis=0), atol=1e-6)
    part = win.smooth(seq, 3, 5)
    np.testing.assert_array_equal(part[:3], seq[:3])
    np.testing.assert_array_equal(part[5:], seq[5:])


def test_windows_online_emission_cond_and_trim() -> None:
    source = random_vectors(1)[0]
    w = win.MotionWindows(source, overlap=10, online=True)
    np.testing.assert_array_equal(w.cond_frame, source)
    assert w.fuse_length == 10 and w.valid_clip_len == 70
    first = random_vectors(80)
    assert w.push(first).shape == (0, 265)  # the first window only seeds d0
    assert w.d0 is not None
    np.testing.assert_allclose(w.d0, win.smooth(first)[0])
    assert w.history is not None
    np.testing.assert_array_equal(w.cond_frame, w.history[80 - 10 - 1])
    second = random_vectors(80)
    out = w.push(second)
    assert out.shape == (70, 265)
    # emitted from 80 - fuse_length: the fused region first
    expected = win.fuse(win.smooth(first), second, 10, 10)
    expected = win.smooth(expected, 150 - 70 - 10, 150 - 70 + 1)
    np.testing.assert_allclose(out, expected[70:140], atol=1e-6)
    np.testing.assert_array_equal(w.cond_frame, expected[150 - 10 - 1])
    for _ in range(3):
        assert w.push(random_vectors(80)).shape == (70, 265)
        assert len(w.history) <= 160
    assert w.emitted == 280
    # a large online overlap (ditto#14: 70-75) fuses over valid_clip_len frames only
    big = win.MotionWindows(source, overlap=75)
    assert big.fuse_length == 5
    big.push(random_vectors(80))
    assert big.push(random_vectors(80)).shape == (5, 265)


def test_windows_offline_and_fix_kp_cond() -> None:
    source = random_vectors(1)[0]
    w = win.MotionWindows(source, overlap=10, online=False, fix_kp_cond=2)
    assert w.push(random_vectors(80)).shape == (70, 265)
    assert not np.array_equal(w.cond_frame, source)
    w.push(random_vectors(80))
    np.testing.assert_array_equal(w.cond_frame, source)  # reset every second window
    assert w.push(random_vectors(80), valid=30).shape == (30, 265)


def _frames(n: int) -> mo.MotionFrames:
    return mo.Motion.unpack(random_vectors(n)).frames()


def test_resample_equals_source_at_shared_instants() -> None:
    frames = _frames(26)  # 0 .. 1.0 s at 25 fps
    out = win.resample(frames, 25, 30)
    assert len(out) == 31  # 0 .. 1.0 s at 30 fps, no frame past the end, none repeated
    for j30, j25 in ((0, 0), (6, 5), (12, 10), (18, 15), (24, 20), (30, 25)):
        np.testing.assert_array_equal(out.exp[j30], frames.exp[j25])
        np.testing.assert_array_equal(out.yaw[j30], frames.yaw[j25])
        np.testing.assert_array_equal(out.scale[j30], frames.scale[j25])
    at = win.motion_at(frames, np.array([0.0, 0.2, 0.4]))
    np.testing.assert_array_equal(at.t, frames.t[[0, 5, 10]])
    # elsewhere: between the neighbours, in degrees (not logits)
    j = 1  # t = 1/30 s -> position 0.8333
    for name in ("scale", "pitch", "yaw", "roll"):
        a, b = getattr(frames, name)[0], getattr(frames, name)[1]
        v = getattr(out, name)[j]
        assert min(a, b) - 1e-6 <= v <= max(a, b) + 1e-6
    np.testing.assert_allclose(out.yaw[j], frames.yaw[0] / 6 + frames.yaw[1] * 5 / 6, atol=1e-4)
    lo = np.minimum(frames.exp[0], frames.exp[1]) - 1e-6
    hi = np.maximum(frames.exp[0], frames.exp[1]) + 1e-6
    assert ((out.exp[j] >= lo) & (out.exp[j] <= hi)).all()
    times = np.arange(31) / 30.0
    assert len(np.unique(times)) == 31


def test_streaming_resampler_matches_whole_sequence() -> None:
    frames = _frames(70)
    whole = win.resample(frames, 25, 30)
    r = win.FrameResampler()
    parts = []
    for lo, hi in ((0, 7), (7, 8), (8, 33), (33, 70)):
        got = r.push(frames.take(slice(lo, hi)))
        if got is not None:
            parts.append(got)
    stream = mo.MotionFrames.concat(parts)
    assert len(stream) == len(whole) == r.next_frame
    np.testing.assert_allclose(stream.exp, whole.exp, atol=1e-6)
    np.testing.assert_allclose(stream.yaw, whole.yaw, atol=1e-5)
