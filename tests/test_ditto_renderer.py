"""The ditto renderer end to end on random weights (SMALL LivePortrait networks, SMALL LMDM, a
random HuBERT stand-in, all in Ditto's `ditto_pytorch` layout) at 128x128: the stream's clock
and look-ahead, idle frames, reset, emotions, 30 fps resampling, and its settings. Random
weights paint a blur and move at random, so these pin the plumbing, not the looks."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from renderers import VideoFormat
from renderers.base import Expression, FrameRequest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("private_cache")

SIZE = 128
FPS = 30
RATE = 16000


@pytest.fixture(scope="module")
def ditto_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from renderers.ditto.audio.random_model import write_random_hubert_onnx
    from renderers.ditto.lmdm.random_weights import write_random_checkpoint
    from renderers.liveportrait.random_weights import write_random_checkpoints

    root = tmp_path_factory.mktemp("ditto") / "checkpoints"
    models = root / "ditto_pytorch" / "models"
    write_random_checkpoints(models, "ditto", 7, sizes="small")
    write_random_checkpoint(models, sizes="small", seed=3)
    write_random_hubert_onnx(root / "ditto_pytorch" / "aux_models" / "hubert_streaming_fix_kv.onnx")
    return root


class QuickPaint:
    """The real engine but for warp + decode (about a second a frame on a CPU even at SMALL
    sizes: the feature volume and the 512 output are fixed): a flat picture whose colour
    follows the driving keypoints, so frames differ exactly when the motion does."""

    def __init__(self, engine) -> None:
        self._engine = engine

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def warp_decode(self, feature, kp_source, kp_driving):
        offset = (kp_driving - kp_source)[:, [6, 14, 19], 1]  # three lip keypoints' y
        colour = 1.0 / (1.0 + np.exp(-np.clip(10.0 * offset, -30, 30)))
        return np.broadcast_to(colour[:, :, None, None], (len(colour), 3, 512, 512)).copy()


def make_renderer(
    directory: Path, overlap: int = 75, quick: bool = True, backend: str = "torch"
):
    from renderers.ditto.renderer import DittoRenderer
    from renderers.ditto.settings import DittoSettings

    settings = DittoSettings(
        directory=directory, steps=1, overlap=overlap, device="cpu", backend=backend
    )
    renderer = DittoRenderer(VideoFormat(SIZE, SIZE, FPS), settings=settings)
    if quick:
        renderer._engine = QuickPaint(renderer.engine)
    renderer.load(None)
    return renderer


@pytest.fixture(scope="module")
def renderer(ditto_dir: Path):
    return make_renderer(ditto_dir)


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tone = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return (tone + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def boundary(k: int) -> int:
    return int(Fraction(k * RATE, FPS))


def speech_requests(renderer, audio, segment=1, start_index=0, expression=None):
    """The runtime's requests (avatar_runtime/speech.py) for `audio` as one utterance."""
    lookahead = round(renderer.capabilities.lookahead_s * RATE)
    frames = 0
    while boundary(frames) < audio.size:
        frames += 1
    padded = np.concatenate([audio, np.zeros(lookahead + RATE, np.float32)])
    out = []
    for k in range(frames):
        lo, hi = boundary(k), boundary(k + 1)
        out.append(
            FrameRequest(
                index=start_index + k,
                audio=padded[lo : hi + lookahead].copy(),
                window_offset=0,
                window_length=hi - lo,
                speech_position=lo,
                segment=segment,
                segment_position=lo,
                expression=expression or Expression(),
            )
        )
    return out


def idle(index: int, emotion: str = "neutral", intensity: float = 0.0) -> FrameRequest:
    return FrameRequest(index, None, 0, 0, 0, expression=Expression(emotion, intensity))


def test_lookahead_covers_the_window_emission_delay() -> None:
    from renderers.ditto.renderer import DittoRenderer, required_lookahead_samples

    # overlap 75: a window every 5 frames, final one window later, HuBERT's 85 ms inside.
    assert required_lookahead_samples(75) == 3200 + 4560 + 639 - 533
    assert required_lookahead_samples(70) > required_lookahead_samples(75)
    caps = DittoRenderer.capabilities
    assert caps.sample_rate == 16000 and caps.native_fps == 25
    assert set(caps.emotions) == {
        "neutral", "happy", "sad", "concerned", "surprised", "angry", "reassuring"
    }  # fmt: skip
    assert 0.4 < caps.lookahead_s < 0.6


def test_speech_renders_every_frame_at_30_fps(renderer) -> None:
    renderer.reset()
    requests = speech_requests(renderer, speech(2.0))
    assert len(requests) == 60
    late = renderer.late_frames
    frames = []
    for request in requests:
        frames.extend(renderer.render([request]))
    assert renderer.late_frames == late  # every frame's motion was final when it came
    assert len(frames) == 60
    assert all(f.shape == (SIZE, SIZE, 4) and f.dtype == np.uint8 for f in frames)
    distinct = {f.tobytes() for f in frames}
    assert len(distinct) > 30  # the face moves while speaking


def test_the_networks_paint_and_paste_the_moving_face(ditto_dir: Path) -> None:
    real = make_renderer(ditto_dir, quick=False)
    requests = speech_requests(real, speech(0.2, 4))
    frames = [real.render([r])[0] for r in requests[:3]]
    assert all(f.shape == (SIZE, SIZE, 4) and f.dtype == np.uint8 for f in frames)
    assert (frames[0][..., 3] == 255).all()
    mask = real._source.portrait.mask[..., 0]
    outside = mask == 0.0
    assert np.array_equal(frames[0][outside][:, :3], real._source.portrait.framed[outside])
    assert not np.array_equal(frames[0], frames[2])


def test_onnx_back_end_drives_the_same_motion_as_torch(renderer, ditto_dir: Path) -> None:
    on_onnx = make_renderer(ditto_dir, backend="onnx")
    assert on_onnx._sampler.denoiser.backend == "onnx" and on_onnx.engine.backend == "onnx"
    assert "LMDM onnx" in on_onnx.backend_description
    renderer.reset()
    requests = speech_requests(renderer, speech(1.0, 6))
    for request in requests[:12]:
        want = renderer.frame_motion([request])
        got = on_onnx.frame_motion([request])
        # float32 on both; fused kernels change only the order of sums
        np.testing.assert_allclose(got.generated.exp, want.generated.exp, atol=2e-3)
        np.testing.assert_allclose(got.driving, want.driving, atol=2e-3)
    assert not np.allclose(
        renderer.frame_motion([requests[12]]).generated.exp,
        renderer.frame_motion([requests[20]]).generated.exp,
    )  # the comparison is over moving motion


def test_resampled_motion_is_continuous_with_no_repeated_frames(renderer) -> None:
    renderer.reset()
    motions = [renderer.frame_motion([r]) for r in speech_requests(renderer, speech(2.0, 1))]
    times = np.concatenate([m.times for m in motions])
    steps = np.diff(times)
    assert np.all(steps > 0) and np.allclose(steps, RATE / FPS, atol=1)
    exp = np.concatenate([m.generated.exp for m in motions])
    driving = np.concatenate([m.driving for m in motions])
    assert np.isfinite(exp).all() and np.isfinite(driving).all()
    moves = np.abs(np.diff(exp, axis=0)).reshape(len(exp) - 1, -1).max(axis=1)
    assert np.all(moves > 0)  # no frame repeats the one before
    # Interpolation between 25 fps frames: a 30 fps step never exceeds the largest 25 fps one.
    source = renderer._motion.exp
    biggest = np.abs(np.diff(source, axis=0)).max()
    assert moves.max() <= biggest + 1e-6


def test_idle_frames_keep_the_model_running(renderer) -> None:
    renderer.reset()
    motions = [renderer.frame_motion([idle(i)]) for i in range(12)]
    times = [float(m.times[0]) for m in motions]
    assert np.allclose(np.diff(times), RATE / FPS)
    assert renderer._pushed >= times[-1]  # silence went through the model
    frames = renderer.render([idle(12)])
    assert frames[0].shape == (SIZE, SIZE, 4)
    assert renderer.late_frames == 0


def test_speech_after_idle_is_placed_after_the_silence_and_eased_in(renderer) -> None:
    from renderers.ditto.motion.windows import _at_positions
    from renderers.ditto.renderer import EASE_FRAMES

    renderer.reset()
    idle_motion = [renderer.frame_motion([idle(i)]) for i in range(10)]
    pushed = renderer._pushed
    requests = speech_requests(renderer, speech(0.5), 1, 10)
    first = renderer.frame_motion([requests[0]])
    # the utterance starts where the silence pushed for the idle frames ends: a jump forward
    # of less than the look-ahead, its audio paired exactly from there on
    last_idle = float(idle_motion[-1].times[0])
    assert first.times[0] == pushed
    jump = first.times[0] - last_idle - RATE / FPS
    assert 0 < jump <= renderer.capabilities.lookahead_s * RATE + 640
    # ... and eased: the first frame is a quarter of the way from the last idle frame's motion
    raw = _at_positions(renderer._motion, np.array([first.times[0] / 640 - renderer._motion_base]))
    w = 1 / (EASE_FRAMES + 1)
    expected = idle_motion[-1].generated.exp * (1 - w) + raw.exp * w
    np.testing.assert_allclose(first.generated.exp, expected, atol=1e-5)
    rest = [renderer.frame_motion([r]) for r in requests[1:]]
    assert np.allclose(np.diff([m.times[0] for m in [first, *rest]]), RATE / FPS, atol=1)
    # back to idle: the clock runs on from the last speech frame, no jump
    after = renderer.frame_motion([idle(40)])
    assert after.times[0] == rest[-1].times[0] + requests[-1].window_length
    assert renderer.late_frames == 0


def test_reset_mid_utterance_is_idle_on_the_next_frame(renderer, ditto_dir: Path) -> None:
    renderer.reset()
    for request in speech_requests(renderer, speech(1.0, 2))[:20]:
        renderer.frame_motion([request])
    renderer.reset()
    assert renderer._pushed == 0 and renderer._motion is None
    after = renderer.frame_motion([idle(21)])
    fresh = make_renderer(ditto_dir)
    expected = fresh.frame_motion([idle(0)])
    # the same as a stream that never heard the utterance: nothing of it is left
    np.testing.assert_allclose(after.generated.exp, expected.generated.exp, atol=1e-6)
    np.testing.assert_allclose(after.times, expected.times)


def test_emotion_adds_liveportraits_expression_edits(renderer) -> None:
    renderer.reset()
    renderer.snap_expression(Expression("neutral", 0.0))
    neutral = renderer.frame_motion([idle(0)])
    np.testing.assert_allclose(neutral.edited.exp, neutral.generated.exp)
    renderer.snap_expression(Expression("happy", 1.0))
    happy = renderer.frame_motion([idle(1, "happy", 1.0)])
    delta = happy.edited.exp - happy.generated.exp
    # LivePortrait's smile: mouth corners (kp 14, 20) up (-y), kp 17 down (+y)
    assert delta[0, 14, 1] < 0 and delta[0, 20, 1] < 0 and delta[0, 17, 1] > 0
    renderer.snap_expression(Expression("sad", 1.0))
    sad = renderer.frame_motion([idle(2, "sad", 1.0)])
    assert (sad.edited.exp - sad.generated.exp)[0, 20, 1] > 0  # a frown: corners down
    # the ease: from sad toward neutral, part of the way after one frame
    step = renderer.frame_motion([idle(3, "neutral", 0.0)])
    moved = (step.edited.exp - step.generated.exp)[0, 20, 1]
    assert 0 < moved < (sad.edited.exp - sad.generated.exp)[0, 20, 1]
    renderer.snap_expression(Expression("neutral", 0.0))


def test_unavailable_reason_names_what_is_missing(monkeypatch, ditto_dir: Path) -> None:
    from renderers.ditto.renderer import DittoRenderer
    from renderers.ditto.settings import DittoSettings

    monkeypatch.delenv("AVATAR_DITTO_DIR", raising=False)
    assert "AVATAR_DITTO_DIR" in (DittoRenderer.unavailable_reason() or "")
    monkeypatch.setenv("AVATAR_DITTO_DIR", str(ditto_dir))
    assert DittoRenderer.unavailable_reason() is None
    monkeypatch.setenv("AVATAR_DITTO_OVERLAP", "90")
    assert "AVATAR_DITTO_OVERLAP" in (DittoRenderer.unavailable_reason() or "")
    empty = ditto_dir.parent / "empty"
    empty.mkdir(exist_ok=True)
    assert "lmdm_v0.4_hubert.pth" in (DittoSettings(directory=empty).unavailable_reason() or "")


def test_it_is_registered_with_its_checkpoints(monkeypatch, ditto_dir: Path) -> None:
    from renderers import registry

    monkeypatch.delenv("AVATAR_DITTO_DIR", raising=False)
    assert "ditto" in registry.available()
    assert "AVATAR_DITTO_DIR" in (registry.unavailable_reason("ditto") or "")
    files = registry.renderer_class("ditto").checkpoints()
    assert files is not None and files["setting"] == "AVATAR_DITTO_DIR" and not files["complete"]
    monkeypatch.setenv("AVATAR_DITTO_DIR", str(ditto_dir))
    assert registry.unavailable_reason("ditto") is None
    files = registry.renderer_class("ditto").checkpoints()
    assert files is not None and files["complete"]
    assert registry.renderer_class("ditto").describe()["overlap"] == 75


def test_offline_render_makes_an_mp4_of_the_audios_length(
    ditto_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import av

    from avatar_runtime.offline import render_talking_video
    from tests.media import speech_like_audio

    monkeypatch.setenv("AVATAR_DITTO_DIR", str(ditto_dir))
    monkeypatch.setenv("AVATAR_DITTO_STEPS", "1")
    audio = tmp_path / "speech.wav"
    speech_like_audio(audio, 0.2)
    result = render_talking_video(
        audio=audio, out=tmp_path / "talk.mp4", renderer="ditto", width=SIZE, height=SIZE
    )
    assert result.frames == 6 and (result.width, result.height) == (SIZE, SIZE)
    with av.open(str(result.path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 6
    assert not np.array_equal(frames[0], frames[-1])  # the face moved


def test_seed_004s_sampling_timesteps_set_the_sessions_steps(
    ditto_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_api.streaming.worker import load
    from renderers.bundled import DEFAULT_PORTRAIT

    monkeypatch.setenv("AVATAR_DITTO_DIR", str(ditto_dir))
    monkeypatch.setenv("AVATAR_DITTO_STEPS", "2")
    init = {
        "renderer": "ditto",
        "width": SIZE,
        "height": SIZE,
        "fps": FPS,
        "kind": "image",
        "suffix": DEFAULT_PORTRAIT.suffix,
        "options": {"sampling_timesteps": 3},
    }
    source = DEFAULT_PORTRAIT.read_bytes()
    given = load(init, source, tmp_path)
    assert given.settings.steps == 3 and given._sampler.sampling_timesteps == 3
    given.close()
    init["options"] = {"sampling_timesteps": None}  # not given: the service's own setting
    default = load(init, source, tmp_path)
    assert default.settings.steps == 2 and default._sampler.sampling_timesteps == 2
    default.set_sampling_steps(4)  # between utterances, from the next window on
    assert default._sampler.sampling_timesteps == 4
    default.reset()
    assert default._sampler.sampling_timesteps == 4
    default.close()
