"""The liveportrait renderer end to end on random weights (SMALL sizes, both published
layouts): loading a portrait, the keypoints each stage produces, the paste-back, emotions and
speech. Random weights paint a blur, not a face, so these tests pin the pipeline's geometry
and what drives what, not how the face looks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from renderers import VideoFormat, registry
from renderers.base import Expression, FrameRequest, RendererError
from renderers.liveportrait import expression as edit
from renderers.liveportrait.renderer import LivePortraitRenderer
from tests.liveportrait_fixtures import (  # noqa: F401 - fixtures
    liveportrait_cache,
    liveportrait_dir,
    liveportrait_ditto_dir,
    liveportrait_settings,
)

pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("private_cache")

SIZE = 256
RATE = 16000
SMILE_KEYPOINTS = {3, 7, 13, 14, 16, 17, 20}


@pytest.fixture(scope="module")
def renderer(liveportrait_dir: Path, liveportrait_cache: Path) -> LivePortraitRenderer:  # noqa: F811
    settings = liveportrait_settings(liveportrait_dir, liveportrait_cache, "torch")
    renderer = LivePortraitRenderer(VideoFormat(SIZE, SIZE, 30), settings=settings)
    renderer.load(None)
    return renderer


def idle(index: int, emotion: str = "neutral", intensity: float = 0.0) -> FrameRequest:
    return FrameRequest(index, None, 0, 0, 0, expression=Expression(emotion, intensity))


def test_it_is_registered_and_reports_its_configuration(monkeypatch, liveportrait_dir) -> None:  # noqa: F811
    monkeypatch.delenv("AVATAR_LIVEPORTRAIT_DIR", raising=False)
    assert "liveportrait" in registry.available()
    assert "AVATAR_LIVEPORTRAIT_DIR" in (registry.unavailable_reason("liveportrait") or "")
    monkeypatch.setenv("AVATAR_LIVEPORTRAIT_DIR", str(liveportrait_dir))
    assert registry.unavailable_reason("liveportrait") is None
    described = registry.renderer_class("liveportrait").describe()
    assert described["layout"] == "liveportrait" and described["device"] == "cpu"


def test_frames_are_the_portrait_with_the_crop_pasted_back(renderer) -> None:
    frame = renderer.render([idle(0)])[0]
    assert frame.shape == (SIZE, SIZE, 4) and frame.dtype == np.uint8
    assert (frame[..., 3] == 255).all()
    source = renderer._source
    outside = source.portrait.mask[..., 0] == 0.0
    inside = source.portrait.mask[..., 0] > 0.99
    assert outside.any() and inside.any()
    # Where the mask is zero the portrait shows untouched; where it is one, the decoder's.
    assert np.array_equal(frame[outside][:, :3], source.portrait.framed[outside])
    assert not np.array_equal(frame[inside][:, :3], source.portrait.framed[inside])


def test_emotion_edits_move_only_the_documented_keypoints(renderer) -> None:
    renderer.snap_expression(Expression("neutral", 0.0))
    neutral = renderer.driving_keypoints([idle(0)])
    renderer.snap_expression(Expression("happy", 1.0))
    happy = renderer.driving_keypoints([idle(0, "happy", 1.0)])
    moved = np.abs(happy.posed - neutral.posed).max(axis=2)[0] > 1e-7
    changed = set(np.flatnonzero(moved).tolist())
    # happy = smile + a little brow raise (kp 1, 2) + squint (eye retargeting, not an edit) and
    # a little lip part (lip retargeting): the edits touch only their keypoints.
    assert SMILE_KEYPOINTS <= changed <= SMILE_KEYPOINTS | {1, 2}
    assert not np.allclose(happy.driving, neutral.driving)


def test_intensity_zero_draws_the_neutral_face(renderer) -> None:
    renderer.snap_expression(Expression("neutral", 0.0))
    neutral = renderer.render_still(Expression("neutral", 0.0))
    for emotion in ("happy", "angry", "surprised"):
        assert np.array_equal(renderer.render_still(Expression(emotion, 0.0)), neutral), emotion
    assert not np.array_equal(renderer.render_still(Expression("surprised", 1.0)), neutral)


def test_speech_drives_the_lips_through_the_lip_retargeting(renderer) -> None:
    window = RATE // 30
    t = np.arange(window + RATE // 20) / RATE
    vowel = (0.3 * (np.sin(2 * np.pi * 140 * t) + 0.5 * np.sin(2 * np.pi * 700 * t))).astype(
        np.float32
    )
    renderer.reset()
    renderer.snap_expression(Expression("neutral", 0.0))
    quiet = renderer.driving_keypoints([idle(100)])
    spoken = [
        renderer.driving_keypoints([FrameRequest(101 + k, vowel, 0, window, k * window)])
        for k in range(4)
    ][-1]
    assert spoken.plan.lip_ratio[0] > 0.1 and quiet.plan.lip_ratio[0] == 0.0
    # What retargeting and stitching add on top of the posed keypoints changes with the lips
    # (the eyes are open in both: no blink at these frames).
    assert spoken.plan.eye_scale[0] == quiet.plan.eye_scale[0]
    added_spoken = spoken.driving - spoken.posed
    added_quiet = quiet.driving - quiet.posed
    assert np.abs(added_spoken - added_quiet).max() > 1e-3


def test_a_batch_renders_as_its_frames_one_by_one(
    liveportrait_dir,  # noqa: F811
    liveportrait_cache,  # noqa: F811
) -> None:
    def fresh() -> LivePortraitRenderer:
        settings = liveportrait_settings(liveportrait_dir, liveportrait_cache, "torch")
        r = LivePortraitRenderer(VideoFormat(SIZE, SIZE, 30), settings=settings)
        r.load(None)
        return r

    batch = fresh().render([idle(i, "sad", 0.7) for i in range(3)])
    single = fresh()
    one_by_one = [single.render([idle(i, "sad", 0.7)])[0] for i in range(3)]
    for a, b in zip(batch, one_by_one, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_dittos_files_drive_the_same_renderer(liveportrait_ditto_dir, liveportrait_cache) -> None:  # noqa: F811
    settings = liveportrait_settings(liveportrait_ditto_dir, liveportrait_cache, "torch")
    renderer = LivePortraitRenderer(VideoFormat(SIZE, SIZE, 30), settings=settings)
    renderer.load(None)
    assert renderer.render([idle(0)])[0].shape == (SIZE, SIZE, 4)


def test_onnx_back_end_draws_what_torch_draws(
    renderer,
    liveportrait_dir,  # noqa: F811
    liveportrait_cache,  # noqa: F811
) -> None:
    settings = liveportrait_settings(liveportrait_dir, liveportrait_cache, "onnx")
    onnx = LivePortraitRenderer(VideoFormat(SIZE, SIZE, 30), settings=settings)
    onnx.load(None)
    assert onnx.backend_description == "onnx on cpu"
    renderer.snap_expression(Expression("happy", 0.6))
    onnx.snap_expression(Expression("happy", 0.6))
    ours = renderer.render([idle(5, "happy", 0.6)])[0].astype(int)
    theirs = onnx.render([idle(5, "happy", 0.6)])[0].astype(int)
    assert np.abs(ours - theirs).max() <= 2


def test_a_portrait_without_a_face_is_refused(renderer, tmp_path) -> None:
    import cv2

    rng = np.random.default_rng(0)
    noise = (rng.random((256, 256, 3)) * 255).astype(np.uint8)
    path = tmp_path / "noise.png"
    cv2.imwrite(str(path), noise)
    fresh = LivePortraitRenderer(VideoFormat(SIZE, SIZE, 30), settings=renderer.settings)
    with pytest.raises(RendererError) as error:
        fresh.load(path)
    assert error.value.code == "no_face"


def test_without_lip_retargeting_the_lip_open_edit_moves_the_lower_lip() -> None:
    closed = np.zeros((1, 21, 3), np.float32)
    opened = edit.lip_open(closed, np.array([0.4 * 110.0]))
    assert opened[0, 19, 1] > 0.04  # kp19 down (+y), as upstream's lip-open slider


def test_the_render_service_draws_with_liveportrait_once_its_weights_are_configured(
    liveportrait_dir,  # noqa: F811
    liveportrait_cache,  # noqa: F811
) -> None:
    import base64
    import io

    import requests
    from PIL import Image

    from tests.render_service_fixtures import PORTRAIT, b64, render_service

    env = {
        "AVATAR_LIVEPORTRAIT_DIR": str(liveportrait_dir),
        "AVATAR_LIVEPORTRAIT_BACKEND": "torch",
        "AVATAR_LIVEPORTRAIT_CACHE": str(liveportrait_cache),
    }
    with render_service(env) as api:
        health = requests.get(f"{api.base_url}/health", timeout=10).json()
        assert health["ready"] is True
        body = {"image": b64(PORTRAIT.read_bytes()), "emotions": ["neutral", "happy"]}
        answer = requests.post(
            f"{api.base_url}/api/v1/render/batch", json=body, headers=api.headers(), timeout=120
        )
        assert answer.status_code == 200, answer.text[:300]
        results = answer.json()["results"]
        assert [r["metadata"]["renderer"] for r in results] == ["liveportrait"] * 2
        assert results[0]["metadata"]["backend"] == "torch on cpu"  # what actually ran
        pictures = [
            np.asarray(Image.open(io.BytesIO(base64.b64decode(r["image"]))).convert("RGB"))
            for r in results
        ]
        assert pictures[0].shape == (512, 512, 3)
        assert not np.array_equal(pictures[0], pictures[1])
