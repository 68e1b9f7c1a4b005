"""renderers.vision against the real MediaPipe models (installed by scripts/setup.sh), on
scikit-image's astronaut portrait (Eileen Collins, 512x512, face about 95 px)."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from renderers.base import RendererError
from renderers.vision import (
    LEFT_EYE_CONTOUR,
    LEFT_IRIS,
    RIGHT_EYE_CONTOUR,
    RIGHT_IRIS,
    analyse_portrait,
    detect_faces,
    face_mesh,
    load_image,
    person_mask,
)
from renderers.vision.face_detector import anchors
from renderers.vision.models import MODEL_NAMES, model


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


def _shrunk_onto_canvas(rgb: np.ndarray, side: int, canvas: int) -> np.ndarray:
    small = np.asarray(Image.fromarray(rgb).resize((side, side), Image.LANCZOS))
    out = np.full((canvas, canvas, 3), 128, dtype=np.uint8)
    at = (canvas - side) // 2
    out[at : at + side, at : at + side] = small
    return out


def _inside(point: np.ndarray, polygon: np.ndarray) -> bool:
    """Even-odd rule: does the horizontal ray from `point` cross the polygon an odd number
    of times?"""
    x, y = float(point[0]), float(point[1])
    inside = False
    for (x0, y0), (x1, y1) in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
            inside = not inside
    return inside


def _code(excinfo: pytest.ExceptionInfo[RendererError]) -> str:
    return excinfo.value.code


# ----------------------------------------------------------------------------- the models


def test_anchor_layout_matches_the_models() -> None:
    assert anchors(128, (8, 16, 16, 16), 2).shape == (16 * 16 * 2 + 8 * 8 * 6, 2)
    assert anchors(192, (4,), 1).shape == (48 * 48, 2)
    short = anchors(128, (8, 16, 16, 16), 2)
    # First cell of each grid, two anchors per cell on the 16x16 grid, six on the 8x8 one.
    assert short[0].tolist() == short[1].tolist() == [0.5 / 16, 0.5 / 16]
    assert short[2].tolist() == [1.5 / 16, 0.5 / 16]
    assert short[512].tolist() == short[517].tolist() == [0.5 / 8, 0.5 / 8]
    assert model("face_detection_short_range").output_shapes == [(1, 896, 16), (1, 896, 1)]
    assert model("face_detection_full_range_sparse").output_shapes == [
        (1, 2304, 16),
        (1, 2304, 1),
    ]


def test_missing_models_say_how_to_get_them(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AVATAR_MODELS_DIR", str(tmp_path))
    with pytest.raises(RendererError) as excinfo:
        detect_faces(np.zeros((256, 256, 3), dtype=np.uint8))
    assert _code(excinfo) == "models_missing"
    assert "python -m avatar_runtime download-files" in excinfo.value.message
    assert "make setup" in excinfo.value.message


def test_loading_models_prints_nothing_but_keeps_other_stderr() -> None:
    # LiteRT announces its XNNPACK delegate on fd 2 the first time a process allocates an
    # interpreter; that must not reach a command's output (e.g. the agent's one error line).
    # A fresh process, because the announcement comes once per process.
    script = (
        "import os, sys\n"
        "from renderers.vision.models import MODEL_NAMES, _litert_info_silenced, model\n"
        "for name in MODEL_NAMES:\n"
        "    model(name)\n"
        "with _litert_info_silenced():\n"
        "    os.write(2, b'INFO: from LiteRT\\nERROR: kept\\n')\n"
        "    print('python kept', file=sys.stderr)\n"
        "print('stderr still works', file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["ERROR: kept", "python kept", "stderr still works"]


# ------------------------------------------------------------------------------- the mesh


def test_astronaut_has_one_face_and_a_plausible_mesh(astronaut) -> None:
    faces = detect_faces(astronaut)
    assert len(faces) == 1
    face = faces[0]
    x0, y0, x1, y1 = face.box
    assert 170 < x0 < 190 and 260 < x1 < 285 and 70 < y0 < 95 and 165 < y1 < 190
    assert face.score > 0.8
    # Keypoints: the person's right eye (index 0) is on the image's left.
    right_eye, left_eye, nose, mouth = face.keypoints[:4]
    assert right_eye[0] < nose[0] < left_eye[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]

    mesh = analyse_portrait(astronaut)
    points = mesh.points
    assert points.shape == (478, 3) and points.dtype == np.float32
    assert mesh.presence > 0.9
    # BlazeFace's box spans brows to chin; the mesh reaches up the forehead, so allow a
    # margin of a quarter of the box.
    margin = 0.25 * face.size
    assert (points[:, 0] > x0 - margin).all() and (points[:, 0] < x1 + margin).all()
    assert (points[:, 1] > y0 - margin).all() and (points[:, 1] < y1 + margin).all()
    # Eyes (outer corners 33 and 263) above the nose tip (1) above the lips (13 upper, 14
    # lower); the person's right eye (33) on the image's left.
    eyes_y = max(points[33, 1], points[263, 1])
    assert eyes_y < points[1, 1] < points[13, 1] < points[14, 1]
    assert points[33, 0] < points[1, 0] < points[263, 0]
    # Iris 468-472 belongs to the eye of corners 33/133, iris 473-477 to 362/263; the
    # centre comes first and sits in the middle of the four edge points.
    assert _inside(points[468], points[list(RIGHT_EYE_CONTOUR), :2])
    assert _inside(points[473], points[list(LEFT_EYE_CONTOUR), :2])
    for iris in (points[RIGHT_IRIS], points[LEFT_IRIS]):
        assert np.linalg.norm(iris[0, :2] - iris[1:, :2].mean(axis=0)) < 1.0
        radius = np.linalg.norm(iris[1:, :2] - iris[0, :2], axis=1)
        assert 2.0 < radius.min() <= radius.max() < 6.0


def test_mesh_follows_a_turned_and_a_cropped_face(astronaut) -> None:
    reference = face_mesh(astronaut).points[:, :2]
    # Turned 40 degrees counter-clockwise around (224, 128): the mesh turns with it.
    degrees = 40
    turned = Image.fromarray(astronaut).rotate(
        degrees, resample=Image.BICUBIC, center=(224, 128), fillcolor=(128, 128, 128)
    )
    a = math.radians(degrees)
    dx, dy = reference[:, 0] - 224, reference[:, 1] - 128
    expected = np.stack(
        [224 + math.cos(a) * dx + math.sin(a) * dy, 128 - math.sin(a) * dx + math.cos(a) * dy],
        axis=1,
    )
    got = face_mesh(np.asarray(turned)).points[:, :2]
    assert np.linalg.norm(got - expected, axis=1).mean() < 2.0
    # A non-square crop (letterboxed differently): same points, shifted.
    cropped = np.ascontiguousarray(astronaut[100:, 40:])
    got = face_mesh(cropped).points[:, :2] + [40, 100]
    assert np.linalg.norm(got - reference, axis=1).mean() < 2.0


def test_threads_get_their_own_interpreters(astronaut) -> None:
    expected = face_mesh(astronaut).points
    results: list[np.ndarray] = []
    thread = threading.Thread(target=lambda: results.append(face_mesh(astronaut).points))
    thread.start()
    thread.join()
    np.testing.assert_allclose(results[0], expected, atol=1e-3)


# ------------------------------------------------------------------------- portrait checks


def test_blank_image_has_no_face() -> None:
    with pytest.raises(RendererError) as excinfo:
        analyse_portrait(np.full((512, 512, 3), 200, dtype=np.uint8))
    assert _code(excinfo) == "no_face"
    assert excinfo.value.message == "No face detected in image"


def test_two_portraits_are_multiple_faces(astronaut) -> None:
    pair = np.concatenate([astronaut, astronaut], axis=1)
    assert len(detect_faces(pair)) == 2
    with pytest.raises(RendererError) as excinfo:
        analyse_portrait(pair)
    assert _code(excinfo) == "multiple_faces"
    assert excinfo.value.message == "Multiple faces detected, single face required"


def test_small_faces(astronaut) -> None:
    # Portrait at half size in a 512 canvas: a face of about 48 px is found (by the
    # full-range model) and refused as too small.
    with pytest.raises(RendererError) as excinfo:
        analyse_portrait(_shrunk_onto_canvas(astronaut, 256, 512))
    assert _code(excinfo) == "face_too_small"
    assert "64" in excinfo.value.message
    # Accepted once the minimum allows it.
    assert analyse_portrait(_shrunk_onto_canvas(astronaut, 256, 512), min_face=40).presence > 0.5
    # At 96 px the face is about 18 px: below what either detector finds.
    with pytest.raises(RendererError) as excinfo:
        analyse_portrait(_shrunk_onto_canvas(astronaut, 96, 512))
    assert _code(excinfo) == "no_face"


def test_image_too_small(astronaut) -> None:
    tiny = np.asarray(Image.fromarray(astronaut).resize((64, 64)))
    with pytest.raises(RendererError) as excinfo:
        analyse_portrait(tiny)
    assert _code(excinfo) == "image_too_small"
    assert "128" in excinfo.value.message


# ------------------------------------------------------------------------------- loading


def _encoded(rgb: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_load_image_formats(astronaut, tmp_path) -> None:
    for fmt in ("PNG", "JPEG", "WEBP"):
        path = tmp_path / f"astronaut.{fmt.lower()}"
        path.write_bytes(_encoded(astronaut, fmt, quality=95))
        loaded = load_image(path)
        assert loaded.shape == astronaut.shape and loaded.dtype == np.uint8
        assert np.abs(loaded.astype(int) - astronaut).mean() < 4
    assert np.array_equal(load_image(_encoded(astronaut, "PNG")), astronaut)
    # Transparency is composited over white.
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    assert (load_image(_encoded(rgba, "PNG")) == 255).all()


def test_load_image_rejects_other_files(astronaut, tmp_path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture\n")
    with pytest.raises(RendererError) as excinfo:
        load_image(text)
    assert _code(excinfo) == "unsupported_format"
    gif = tmp_path / "anim.gif"
    gif.write_bytes(_encoded(astronaut, "GIF"))
    with pytest.raises(RendererError) as excinfo:
        load_image(gif)
    assert _code(excinfo) == "unsupported_format"
    # Right magic bytes, broken or cut-off contents.
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    with pytest.raises(RendererError) as excinfo:
        load_image(broken)
    assert _code(excinfo) == "corrupt_image"
    jpeg = _encoded(astronaut, "JPEG")
    with pytest.raises(RendererError) as excinfo:
        load_image(jpeg[: len(jpeg) // 2])
    assert _code(excinfo) == "corrupt_image"


# ---------------------------------------------------------------------------- segmentation


def test_person_mask(astronaut) -> None:
    mask = person_mask(astronaut)
    assert mask.shape == astronaut.shape[:2] and mask.dtype == np.float32
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    nose = face_mesh(astronaut).points[1]
    assert mask[int(nose[1]), int(nose[0])] > 0.9
    # The top corners are background (the bottom ones show the suit and the helmet).
    assert mask[:40, :40].mean() < 0.1 and mask[:40, -40:].mean() < 0.1


# ---------------------------------------------------------------------------------- timing


def test_timings(astronaut, capsys) -> None:
    """Prints milliseconds per call on this machine (informative, nothing asserted)."""

    def ms(fn, repeat: int = 10) -> float:
        fn()
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        return (time.perf_counter() - start) / repeat * 1000

    lines = []
    for name in MODEL_NAMES:
        m = model(name)
        tensor = np.zeros(m.input_shape, dtype=np.float32)
        lines.append(f"{name} {ms(lambda m=m, t=tensor: m(t)):.1f}")
    face = detect_faces(astronaut)[0]
    lines += [
        f"detect_faces {ms(lambda: detect_faces(astronaut)):.1f}",
        f"face_mesh(detection) {ms(lambda: face_mesh(astronaut, face)):.1f}",
        f"analyse_portrait {ms(lambda: analyse_portrait(astronaut)):.1f}",
        f"person_mask {ms(lambda: person_mask(astronaut)):.1f}",
    ]
    with capsys.disabled():
        print("\nvision ms per call (512x512):", ", ".join(lines))
