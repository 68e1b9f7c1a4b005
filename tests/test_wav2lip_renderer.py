"""The wav2lip renderer: avatar packages, the idle loop, silence, mel windows, batching and
paste-back, driven by small generators of the tests' own where the network is not the point;
and the real network with a generated checkpoint where it is."""

from __future__ import annotations

import importlib.util
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from livekit import rtc

import renderers
from avatar_runtime.speech import SpeechQueue
from renderers import FrameRequest, RendererError, VideoFormat
from renderers.wav2lip import mel as melspec
from renderers.wav2lip.blend import lower_face_mask, paste_face
from renderers.wav2lip.package import load_package
from renderers.wav2lip.renderer import Wav2LipRenderer, network_faces
from renderers.wav2lip.settings import Wav2LipSettings

REPO = Path(__file__).resolve().parents[1]
FRAMES = 6
FRAME_W, FRAME_H = 160, 120
FACE = 96
BOX = (30, 100, 50, 110)  # y1, y2, x1, x2 in the package's frames
VIDEO = VideoFormat(160, 120, 30.0)  # same size: boxes stay where coords.pkl puts them
HAS_TORCH = importlib.util.find_spec("torch") is not None


# -- a small package and small generators ---------------------------------------------------


def _frame(index: int) -> np.ndarray:
    """A textured frame whose green channel says its index."""
    yy, xx = np.mgrid[0:FRAME_H, 0:FRAME_W]
    rgb = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
    rgb[..., 0] = (xx * 255 // FRAME_W).astype(np.uint8)
    rgb[..., 1] = 20 + 30 * index
    rgb[..., 2] = (yy * 255 // FRAME_H).astype(np.uint8)
    return rgb


def write_package(root: Path, frames: int = FRAMES, box: tuple[int, ...] = BOX) -> Path:
    (root / "full_imgs").mkdir(parents=True)
    (root / "face_imgs").mkdir()
    y1, y2, x1, x2 = box
    for i in range(frames):
        rgb = _frame(i)
        cv2.imwrite(str(root / "full_imgs" / f"{i:08d}.png"), rgb[..., ::-1])
        face = cv2.resize(rgb[y1:y2, x1:x2], (FACE, FACE))
        cv2.imwrite(str(root / "face_imgs" / f"{i:08d}.png"), face[..., ::-1])
    (root / "coords.pkl").write_bytes(pickle.dumps([box] * frames))
    return root


def tar_of(package: Path, target: Path) -> Path:
    with tarfile.open(target, "w") as tar:
        for path in sorted(package.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(package)), recursive=False)
    return target


class RecordingGenerator:
    """Remembers every call; answers a face of one colour (RGB, as back ends do)."""

    def __init__(self, colour: tuple[int, int, int] = (255, 255, 255)) -> None:
        self.colour = np.array(colour, np.uint8)
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def predict(self, mels: np.ndarray, faces: np.ndarray) -> np.ndarray:
        assert mels.shape[1:] == (1, 80, 16) and faces.shape[1:] == (6, FACE, FACE)
        self.calls.append((mels.copy(), faces.copy()))
        out = np.empty((len(mels), FACE, FACE, 3), np.uint8)
        out[:] = self.colour
        return out

    @property
    def windows(self) -> list[np.ndarray]:
        return [m[0] for mels, _ in self.calls for m in mels]


def make_renderer(
    package: Path,
    generator: RecordingGenerator,
    video: VideoFormat = VIDEO,
    **settings: object,
) -> Wav2LipRenderer:
    options = {"checkpoint": None, "batch_size": 4, **settings}
    renderer = Wav2LipRenderer(
        video, settings=Wav2LipSettings(**options), generator=generator, face_size=FACE
    )
    renderer.load(package)
    return renderer


@pytest.fixture
def package(tmp_path: Path) -> Path:
    return write_package(tmp_path / "avatar")


def idle(index: int) -> FrameRequest:
    return FrameRequest(
        index=index, audio=None, window_offset=0, window_length=0, speech_position=0
    )


def speech_requests(audio: np.ndarray, fps: float = 30.0, first_index: int = 0) -> list:
    """The renderer's requests for one utterance, cut by the runtime's own SpeechQueue."""
    caps = Wav2LipRenderer(VideoFormat(fps=fps), settings=Wav2LipSettings()).capabilities
    queue = SpeechQueue(
        out_rate=16000,
        render_rate=16000,
        fps=fps,
        lookbehind_s=caps.lookbehind_s,
        lookahead_s=caps.lookahead_s,
    )
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    queue.push(rtc.AudioFrame(pcm.tobytes(), 16000, 1, pcm.size))
    queue.end_segment()
    requests = []
    while (window := queue.next_window()) is not None:
        index = first_index + len(requests)
        requests.append(window.frame_request(index=index, speech_position=window.segment_position))
    return requests


def voice(seconds: float, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    rng = np.random.default_rng(seed)
    tone = 0.3 * np.sin(2 * np.pi * 140 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return (tone + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


# -- packages -----------------------------------------------------------------------------------


def test_loads_a_package_directory_and_its_tar_alike(package: Path, tmp_path: Path) -> None:
    from_dir = load_package(package, 160, 120, max_frames=100)
    from_tar = load_package(tar_of(package, tmp_path / "avatar.tar"), 160, 120, max_frames=100)
    assert from_dir.num_frames == from_tar.num_frames == FRAMES
    assert np.array_equal(from_dir.frames, from_tar.frames)
    assert np.array_equal(from_dir.faces, from_tar.faces)
    assert from_dir.frames[3, 0, 0, 1] == 20 + 30 * 3  # frames in numeric order
    y1, y2, x1, x2 = BOX
    assert from_dir.boxes[0].tolist() == [x1, y1, x2, y2]


def test_framing_scales_to_cover_and_moves_the_boxes_along(package: Path) -> None:
    avatar = load_package(package, 320, 320, max_frames=2)  # 160x120 -> scale 320/120
    scale = 320 / 120
    assert avatar.frames.shape == (2, 320, 320, 3) and avatar.num_frames == 2
    x0, y0, x1, y1 = avatar.boxes[0]
    assert (x1 - x0, y1 - y0) == pytest.approx((60 * scale, 70 * scale))
    # The face box's centre is kept in the picture and the crop does not leave the frame.
    assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 320


def test_bad_packages_are_refused_with_a_clear_message(package: Path, tmp_path: Path) -> None:
    (package / "coords.pkl").unlink()
    with pytest.raises(RendererError, match="no coords.pkl"):
        load_package(package, 160, 120, max_frames=10)
    # A coords.pkl that would run code when unpickled is refused, not run.
    (package / "coords.pkl").write_bytes(pickle.dumps([subprocess.Popen]))
    with pytest.raises(RendererError, match="coords.pkl may hold only numbers"):
        load_package(package, 160, 120, max_frames=10)
    image = tmp_path / "portrait.png"
    cv2.imwrite(str(image), _frame(0))
    renderer = Wav2LipRenderer(VIDEO, settings=Wav2LipSettings(), generator=RecordingGenerator())
    with pytest.raises(RendererError, match="wav2lip needs an avatar package") as error:
        renderer.load(image)
    assert error.value.code == "invalid_package"
    with pytest.raises(RendererError, match="needs an avatar source"):
        renderer.load(None)


# -- idle and silence ---------------------------------------------------------------------------


def test_idle_plays_the_frames_forward_then_backward(package: Path) -> None:
    generator = RecordingGenerator()
    renderer = make_renderer(package, generator)
    frames = renderer.render([idle(i) for i in range(2 * FRAMES + 2)])
    shown = [(int(f[0, 0, 1]) - 20) // 30 for f in frames]
    assert shown == [0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0, 1, 2, 3]
    assert all(f.shape == (120, 160, 4) and (f[..., 3] == 255).all() for f in frames)
    assert generator.calls == []


def test_silence_skips_inference_and_shows_the_original_mouth(package: Path) -> None:
    generator = RecordingGenerator()
    renderer = make_renderer(package, generator)
    audio = np.concatenate([np.zeros(8000, np.float32), voice(0.5), np.zeros(16000, np.float32)])
    requests = speech_requests(audio)
    frames = renderer.render(requests)
    originals = renderer.render([idle(r.index) for r in requests])
    same = [np.array_equal(a, b) for a, b in zip(frames, originals, strict=True)]
    inferred = len(generator.windows)
    assert inferred == renderer.inferred_frames == same.count(False)
    # Quiet frames at both ends kept their picture; the voiced middle went through the network.
    assert same[:3] == [True] * 3 and same[-10:] == [True] * 10
    assert 10 <= inferred <= 30
    silent = make_renderer(package, RecordingGenerator())
    silent.render(speech_requests(np.zeros(16000, np.float32)))
    assert silent.inferred_frames == 0


# -- mel windows and batches ---------------------------------------------------------------------


@pytest.mark.parametrize("fps", [30.0, 25.0])
def test_frame_k_gets_the_window_at_column_k_times_80_over_fps(package: Path, fps: float) -> None:
    generator = RecordingGenerator()
    renderer = make_renderer(package, generator, VideoFormat(160, 120, fps))
    audio = voice(1.6, seed=1)
    requests = speech_requests(audio, fps=fps, first_index=7)  # session frame != utterance frame
    for start in range(0, len(requests), 5):  # in batches, as the runtime hands them over
        renderer.render(requests[start : start + 5])
    # The runtime's audio is int16, so compare with the whole utterance's mel of the same.
    whole = melspec.melspectrogram((np.clip(audio, -1, 1) * 32767).astype(np.int16) / 32768.0)
    windows = generator.windows
    assert len(windows) == len(requests)
    complete = [k for k in range(len(requests)) if melspec.samples_needed(k, fps) <= audio.size]
    assert len(complete) > 0.8 * len(requests)
    for k in complete:
        start = int(k * 80 / fps)
        np.testing.assert_allclose(windows[k], whole[:, start : start + 16], atol=1e-4)


def test_frames_go_through_the_network_in_batches(package: Path) -> None:
    generator = RecordingGenerator()
    renderer = make_renderer(package, generator, batch_size=4)
    requests = speech_requests(voice(1.0))[:10]
    frames = renderer.render(requests)
    assert len(frames) == 10
    assert [len(mels) for mels, _ in generator.calls] == [4, 4, 2]
    # The faces are those of the frames shown: masked lower half, then the reference.
    _, faces = generator.calls[0]
    expected = network_faces(renderer._avatar.faces[[0, 1, 2, 3]])  # frames 0-3, ping-pong
    assert np.array_equal(faces, expected)
    assert (faces[:, :3, FACE // 2 :] == 0).all() and faces[:, 3:, FACE // 2 :].any()


def test_a_new_utterance_starts_a_new_mel_stream(package: Path) -> None:
    generator = RecordingGenerator()
    renderer = make_renderer(package, generator)
    first = speech_requests(voice(0.5, seed=2))
    second = [
        FrameRequest(**{**r.__dict__, "segment": 2, "index": r.index + 100})
        for r in speech_requests(voice(0.5, seed=3))
    ]
    renderer.render(first)
    renderer.render(second)
    again = RecordingGenerator()
    make_renderer(package, again).render(second)  # the second alone, from a fresh renderer
    n = len(second)
    for a, b in zip(generator.windows[-n:], again.windows, strict=True):
        np.testing.assert_array_equal(a, b)


# -- paste-back ----------------------------------------------------------------------------------


def _hard_paste(frame: np.ndarray, face: np.ndarray, box: np.ndarray) -> np.ndarray:
    out = frame.copy()
    x0, y0, x1, y1 = (int(v) for v in box)
    out[y0:y1, x0:x1, :3] = cv2.resize(face, (x1 - x0, y1 - y0))
    return out


def _edge_step(image: np.ndarray, original: np.ndarray) -> float:
    """The largest jump, between neighbouring pixels, of what the paste changed."""
    change = image[..., :3].astype(np.float32) - original[..., :3].astype(np.float32)
    return float(max(np.abs(np.diff(change, axis=0)).max(), np.abs(np.diff(change, axis=1)).max()))


def test_paste_back_has_no_hard_edge_and_leaves_the_outside_alone(package: Path) -> None:
    generator = RecordingGenerator((255, 255, 255))
    renderer = make_renderer(package, generator, color_match=False)
    request = speech_requests(voice(0.6))[3]
    pasted = renderer.render([request])[0]
    original = renderer.render([idle(request.index)])[0]
    box = renderer._avatar.boxes[0]
    x0, y0, x1, y1 = (int(v) for v in box)
    outside = np.ones(original.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(pasted[outside], original[outside])
    # The box's own border rows and columns are untouched too: the blend fades in inside.
    border = np.zeros_like(outside)
    border[[y0, y1 - 1], x0:x1] = border[y0:y1, [x0, x1 - 1]] = True
    assert np.array_equal(pasted[border], original[border])
    # Something did change (the white mouth), smoothly compared with pasting the box whole.
    assert np.abs(pasted.astype(int) - original.astype(int)).max() > 100
    hard = _hard_paste(original, np.full((FACE, FACE, 3), 255, np.uint8), box)
    soft_step, hard_step = _edge_step(pasted, original), _edge_step(hard, original)
    assert soft_step < 0.25 * hard_step, (soft_step, hard_step)


def test_colour_matching_pulls_the_mouth_towards_the_frame_colours() -> None:
    rng = np.random.default_rng(0)
    frame = np.full((200, 200, 3), (170, 120, 100), np.uint8)
    frame = np.clip(frame + rng.normal(0, 6, frame.shape), 0, 255).astype(np.uint8)
    tinted = np.full((FACE, FACE, 3), (90, 110, 210), np.uint8)  # a blue cast
    box = np.array([50.0, 40.0, 150.0, 160.0])
    mask = lower_face_mask(0.12)
    plain, matched = frame.copy(), frame.copy()
    paste_face(plain, tinted, box, mask, color_match=False)
    paste_face(matched, tinted, box, mask, color_match=True)
    region = (slice(110, 140), slice(80, 120))  # the middle of the mouth area

    def distance(image: np.ndarray) -> float:
        return float(np.abs(image[region].astype(float) - frame[region].astype(float)).mean())

    assert distance(matched) < 0.25 * distance(plain)


def test_mask_is_soft_and_zero_on_the_border() -> None:
    mask = lower_face_mask(0.12)
    assert mask[0].max() == mask[-1].max() == mask[:, 0].max() == mask[:, -1].max() == 0.0
    assert mask.max() == pytest.approx(1.0)
    assert mask[:40].max() < 0.05  # the eyes and above keep their pixels
    assert 0.05 < mask.mean() < 0.35
    assert np.abs(np.diff(mask, axis=0)).max() < 0.1  # no step


# -- configuration, availability and the registry ------------------------------------------------


def test_unavailable_reason_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AVATAR_WAV2LIP_CHECKPOINT", raising=False)
    monkeypatch.delenv("AVATAR_WAV2LIP_BACKEND", raising=False)
    assert "set AVATAR_WAV2LIP_CHECKPOINT" in renderers.unavailable_reason("wav2lip")
    missing = tmp_path / "nope.pth"
    monkeypatch.setenv("AVATAR_WAV2LIP_CHECKPOINT", str(missing))
    assert renderers.unavailable_reason("wav2lip") == (
        f"AVATAR_WAV2LIP_CHECKPOINT={str(missing)!r} does not exist"
    )
    checkpoint = tmp_path / "wav2lip.pth"
    checkpoint.write_bytes(b"weights")
    monkeypatch.setenv("AVATAR_WAV2LIP_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("AVATAR_WAV2LIP_BACKEND", "cuda-magic")
    assert renderers.unavailable_reason("wav2lip") == (
        "AVATAR_WAV2LIP_BACKEND='cuda-magic' is not valid; use one of auto, torch, onnx, tensorrt"
    )
    monkeypatch.setenv("AVATAR_WAV2LIP_BACKEND", "tensorrt")
    reason = renderers.unavailable_reason("wav2lip")
    if importlib.util.find_spec("tensorrt") is None:
        assert "the wav2lip 'tensorrt' back end needs" in reason and "tensorrt" in reason
    monkeypatch.setenv("AVATAR_WAV2LIP_BACKEND", "torch")
    if HAS_TORCH:
        assert renderers.unavailable_reason("wav2lip") is None
    else:
        assert renderers.unavailable_reason("wav2lip") == (
            "the wav2lip 'torch' back end needs torch, which is not installed"
        )


def test_settings_reject_bad_values_by_name() -> None:
    with pytest.raises(RendererError, match=r"AVATAR_WAV2LIP_BATCH='0' is not valid"):
        Wav2LipSettings.from_env({"AVATAR_WAV2LIP_BATCH": "0"})
    with pytest.raises(RendererError, match=r"AVATAR_WAV2LIP_DEVICE='gpu' is not valid"):
        Wav2LipSettings.from_env({"AVATAR_WAV2LIP_DEVICE": "gpu"})
    settings = Wav2LipSettings.from_env(
        {"AVATAR_WAV2LIP_DEVICE": "cpu", "AVATAR_WAV2LIP_COLOR_MATCH": "0"}
    )
    assert settings.resolved_batch_size() == 4 and not settings.color_match
    assert not settings.resolved_fp16()


def test_registered_without_importing_torch_and_declares_no_emotions() -> None:
    code = (
        "import sys, renderers\n"
        "cls = renderers.renderer_class('wav2lip')\n"
        "renderers.unavailable_reason('wav2lip')\n"
        "assert cls.capabilities.emotions == (), cls.capabilities.emotions\n"
        "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules\n"
        "print(cls.name)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "wav2lip"


# -- the real network ----------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_a_generated_checkpoint_renders_through_the_configured_backend(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from renderers.wav2lip.checkpoint import write_random_checkpoint

    checkpoint = write_random_checkpoint(tmp_path / "wav2lip.pth", size=96, seed=0)
    monkeypatch.setenv("AVATAR_WAV2LIP_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("AVATAR_WAV2LIP_BACKEND", "torch")
    monkeypatch.setenv("AVATAR_WAV2LIP_DEVICE", "cpu")
    monkeypatch.setenv("AVATAR_CACHE", str(tmp_path / "cache"))
    renderer = renderers.create("wav2lip", VIDEO)
    renderer.load(package)
    requests = speech_requests(voice(0.5))[:6]
    frames = renderer.render(requests)
    originals = renderer.render([idle(r.index) for r in requests])
    assert all(f.shape == (120, 160, 4) and f.dtype == np.uint8 for f in frames)
    assert renderer.inferred_frames == 6
    assert all(not np.array_equal(a, b) for a, b in zip(frames, originals, strict=True))
    assert "torch" in renderer.backend_description


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_a_checkpoint_of_the_wrong_layout_fails_at_load(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    wrong = tmp_path / "wrong.pth"
    torch.save({"state_dict": {"module.encoder.weight": torch.zeros(3, 3)}}, wrong)
    monkeypatch.setenv("AVATAR_WAV2LIP_CHECKPOINT", str(wrong))
    monkeypatch.setenv("AVATAR_WAV2LIP_BACKEND", "torch")
    monkeypatch.setenv("AVATAR_WAV2LIP_DEVICE", "cpu")
    monkeypatch.setenv("AVATAR_CACHE", str(tmp_path / "cache"))
    renderer = renderers.create("wav2lip", VIDEO)
    with pytest.raises(RendererError, match="missing keys: audio_encoder") as error:
        renderer.load(package)
    assert error.value.message.startswith(f"{wrong} does not match the Wav2Lip 96px layout")
    assert "1 unexpected key: encoder.weight" in error.value.message


def test_health_reports_the_configured_backend_and_no_emotions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from control_api.health import renderer_report

    checkpoint = tmp_path / "wav2lip_gan.pth"
    checkpoint.write_bytes(b"weights")
    monkeypatch.setenv("AVATAR_WAV2LIP_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("AVATAR_WAV2LIP_BACKEND", "onnx")
    monkeypatch.setenv("AVATAR_WAV2LIP_DEVICE", "cpu")
    report = {entry["name"]: entry for entry in renderer_report()}
    wav2lip = report["wav2lip"]
    assert wav2lip["emotions"] == []  # it says so instead of pretending
    assert wav2lip["details"] == {
        "backend": "onnx",
        "device": "cpu",
        "fp16": False,
        "batch_size": 4,
        "checkpoint": str(checkpoint),
    }
    assert "happy" in report["meshwarp"]["emotions"]
