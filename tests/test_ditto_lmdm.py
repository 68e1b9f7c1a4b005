"""Ditto's LMDM (renderers/ditto/lmdm): the released layout, the loader and the sampler.

The published layout is pinned by facts taken from the official code (antgroup/ditto-talkinghead,
core/models/modules/lmdm_modules/model.py `MotionDecoder` built as core/models/modules/LMDM.py
builds it, with audio_feat_dim 1103): 249 state-dict entries, a sha256 over the sorted
"key shape" lines and 47,788,297 parameters. REFERENCE values were computed once by running the
official module and sampler on the SMALL random weights below (same seeds); everything else
runs at SMALL size on the CPU."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from renderers.base import RendererError  # noqa: E402
from renderers.ditto.lmdm.checkpoint import (  # noqa: E402
    LMDMCheckpointError,
    load_motion_decoder,
)
from renderers.ditto.lmdm.diffusion import (  # noqa: E402
    GuidedDenoiser,
    MotionSampler,
    alphas_cumprod,
    timestep_pairs,
)
from renderers.ditto.lmdm.network import MotionDecoder, parameter_count  # noqa: E402
from renderers.ditto.lmdm.random_weights import (  # noqa: E402
    checkpoint_payload,
    random_motion_decoder,
    write_random_checkpoint,
)
from renderers.ditto.lmdm.sizes import (  # noqa: E402
    CHECKPOINT_NAME,
    PUBLISHED,
    PUBLISHED_PARAMETERS,
    SMALL,
)

PUBLISHED_KEYS = 249
PUBLISHED_FINGERPRINT = "428d882a35549644"
ROTARY_KEYS = {
    "rotary.freqs",
    "cond_encoder.0.rotary.freqs",
    "cond_encoder.1.rotary.freqs",
    *(f"seqTransDecoder.stack.{i}.rotary.freqs" for i in range(8)),
}
SPOT_SHAPES = {
    "input_projection.weight": (512, 530),
    "cond_projection.weight": (512, 1103),
    "null_cond_embed": (1, 80, 512),
    "null_cond_hidden": (1, 512),
    "time_mlp.1.weight": (2048, 512),
    "to_time_tokens.0.weight": (1024, 2048),
    "seqTransDecoder.stack.7.multihead_attn.in_proj_weight": (1536, 512),
    "seqTransDecoder.stack.0.film3.block.1.weight": (1024, 512),
    "cond_encoder.1.linear1.weight": (1024, 512),
    "non_attn_cond_projection.3.weight": (512, 512),
    "final_layer.weight": (265, 512),
    "rotary.freqs": (256,),
}
# The official module and LMDM.ddim_sample on random_motion_decoder(3, "small"), inputs below.
REFERENCE: dict[str, tuple[float, ...]] = {
    "conditioned": (470.9488830566406, 16985.06640625),  # (sum, sum of |x|) at t = 737
    "unconditioned": (-1042.54931640625, 21524.95703125),
    "pred_noise": (-1116.1920166015625, 25063.318359375),
    "x_start_abs": (39588.1328125,),
    "sample4": (245.6066436767578, 39839.30078125),  # seed 11 for x_T and the step noise
}


def fingerprint(state: Mapping[str, Any]) -> str:
    text = "".join(f"{key} {tuple(value.shape)}\n" for key, value in sorted(state.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def inputs() -> tuple[Any, Any, Any]:
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(1, 80, 265, generator=generator)
    cond_frame = torch.randn(1, 265, generator=generator)
    cond = torch.randn(1, 80, 1103, generator=generator)
    return x, cond_frame, cond


@pytest.fixture(scope="module")
def small() -> MotionDecoder:
    return random_motion_decoder(3, "small")


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory, small: MotionDecoder) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("ditto") / "models", model=small)


# -- the released layout ---------------------------------------------------------------------


def test_published_network_has_the_released_keys_shapes_and_parameter_count() -> None:
    with torch.device("meta"):
        model = MotionDecoder(PUBLISHED)
    state = model.state_dict()
    assert len(state) == PUBLISHED_KEYS
    assert fingerprint(state) == PUBLISHED_FINGERPRINT
    assert parameter_count(model) == PUBLISHED_PARAMETERS == 47_788_297
    assert {key for key in state if key.endswith("freqs")} == ROTARY_KEYS
    for key, shape in SPOT_SHAPES.items():
        assert tuple(state[key].shape) == shape, key


def test_small_keeps_every_key_and_interface() -> None:
    with torch.device("meta"):
        published, small = MotionDecoder(PUBLISHED), MotionDecoder(SMALL)
    assert list(published.state_dict()) == list(small.state_dict())
    for name in ("motion_dim", "cond_dim", "seq_frames", "decoder_layers", "encoder_layers"):
        assert getattr(SMALL, name) == getattr(PUBLISHED, name)
    assert parameter_count(small) < 1_000_000


def test_random_file_follows_the_released_layout(small: MotionDecoder) -> None:
    payload = checkpoint_payload(small)
    assert list(payload) == ["model_state_dict"]
    assert len(payload["model_state_dict"]) == PUBLISHED_KEYS


# -- the official behaviour --------------------------------------------------------------------


def close(value: float, expected: float) -> bool:
    return abs(value - expected) <= 1e-4 * max(1.0, abs(expected))


def test_passes_step_and_sampler_match_the_official_code(small: MotionDecoder) -> None:
    x, cond_frame, cond = inputs()
    t = torch.tensor([737])
    with torch.inference_mode():
        conditioned = small(x, cond_frame, cond, t)
        unconditioned = small(x, cond_frame, cond, t, conditioned=False)
        pred_noise, x_start = GuidedDenoiser(small)(x, cond_frame, cond, t)
    for name, out in (("conditioned", conditioned), ("unconditioned", unconditioned)):
        assert close(float(out.sum()), REFERENCE[name][0]), name
        assert close(float(out.abs().sum()), REFERENCE[name][1]), name
    assert close(float(pred_noise.sum()), REFERENCE["pred_noise"][0])
    assert close(float(pred_noise.abs().sum()), REFERENCE["pred_noise"][1])
    assert close(float(x_start.abs().sum()), REFERENCE["x_start_abs"][0])
    motion = MotionSampler(GuidedDenoiser(small), sampling_timesteps=4, seed=11).sample(
        cond_frame, cond
    )
    assert close(float(motion.sum()), REFERENCE["sample4"][0])
    assert close(float(motion.abs().sum()), REFERENCE["sample4"][1])


def test_guidance_two_combines_the_unconditioned_and_conditioned_passes(
    small: MotionDecoder,
) -> None:
    x, cond_frame, cond = inputs()
    t = torch.tensor([321])
    with torch.inference_mode():
        guided = small.guided_forward(x, cond_frame, cond, t, 2.0)
        unc = small(x, cond_frame, cond, t, conditioned=False)
        cond_out = small(x, cond_frame, cond, t)
        # the unconditional pass ignores the audio condition but not the motion input
        other = small(x, cond_frame, torch.zeros_like(cond), t, conditioned=False)
        moved = small(x, cond_frame + 1, cond, t, conditioned=False)
    torch.testing.assert_close(guided, unc + 2 * (cond_out - unc), atol=1e-5, rtol=1e-5)
    assert torch.equal(unc, other)
    assert not torch.allclose(unc, moved)
    assert GuidedDenoiser(small).guidance_weight == 2


def test_schedule_and_timesteps() -> None:
    cumulative = alphas_cumprod()
    assert cumulative.shape == (1000,) and cumulative.dtype == torch.float32
    assert bool((cumulative[1:] < cumulative[:-1]).all()) and 0 < float(cumulative[-1]) < 1e-4
    pairs = timestep_pairs(50)
    assert len(pairs) == 50 and pairs[0] == (999, 979) and pairs[-1] == (19, -1)
    assert timestep_pairs(10)[-2:] == [(199, 99), (99, -1)]
    assert [t for t, _ in timestep_pairs(3)] == [999, 665, 332]
    with pytest.raises(ValueError):
        timestep_pairs(0)


# -- the sampler ---------------------------------------------------------------------------------


def test_sampler_is_deterministic_for_the_same_noise_and_steps_are_configurable(
    small: MotionDecoder,
) -> None:
    _, cond_frame, cond = inputs()
    denoiser = GuidedDenoiser(small)
    first = MotionSampler(denoiser, sampling_timesteps=3, seed=7)
    a1, a2 = first.sample(cond_frame, cond), first.sample(cond_frame, cond)
    second = MotionSampler(denoiser, sampling_timesteps=3, seed=7)
    b1, b2 = second.sample(cond_frame, cond), second.sample(cond_frame, cond)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)  # streaming == offline, window by window
    assert not torch.equal(a1, a2)  # a fresh x_T per window
    assert len(first.steps) == 3 and len(first.noise) == 2
    x_t = torch.randn(1, 80, 265, generator=torch.Generator().manual_seed(1))
    fixed = second.sample(cond_frame, cond, x=x_t)
    assert torch.equal(fixed, second.sample(cond_frame, cond, x=x_t))  # step noise fixed per setup
    two = second.sample(cond_frame, cond, sampling_timesteps=2, x=x_t)
    assert second.sampling_timesteps == 2 and len(second.steps) == 2
    assert not torch.equal(two, fixed)
    for motion in (a1, a2, fixed, two):
        assert motion.shape == (1, 80, 265) and motion.dtype == torch.float32
        assert bool(torch.isfinite(motion).all())


# -- the loader ----------------------------------------------------------------------------------


def test_random_file_loads_strictly(small_file: Path, small: MotionDecoder) -> None:
    assert small_file.name == CHECKPOINT_NAME
    for given in (small_file, small_file.parent, small_file.parent.parent):  # file, models/, above
        model = load_motion_decoder(given)
        assert model.sizes == SMALL and not model.training
        assert next(model.parameters()).device.type == "cpu"
    state = model.state_dict()
    for key, value in small.state_dict().items():
        assert torch.equal(state[key], value), key


def write(path: Path, payload: object) -> Path:
    torch.save(payload, path)
    return path


def test_loader_errors_are_coded_and_name_the_file(tmp_path: Path, small: MotionDecoder) -> None:
    state = dict(small.state_dict())
    missing = dict(state)
    del missing["seqTransDecoder.stack.3.rotary.freqs"]
    wrong = dict(state)
    wrong["cond_projection.weight"] = torch.zeros(SMALL.latent, 1059)  # the code's default dim
    extra = dict(state, **{"model.extra": torch.zeros(1)})
    cases = {
        "missing": ({"model_state_dict": missing}, "1 missing key: seqTransDecoder.stack.3.rotary"),
        "wrong": ({"model_state_dict": wrong}, "1 wrong shape: cond_projection.weight [32, 1059]"),
        "extra": ({"model_state_dict": extra}, "1 unexpected key: model.extra"),
        "bare": (state, "no 'model_state_dict' entry"),
    }
    for name, (payload, phrase) in cases.items():
        path = write(tmp_path / f"{name}.pth", payload)
        with pytest.raises(LMDMCheckpointError) as caught:
            load_motion_decoder(path)
        assert caught.value.code == "invalid_checkpoint", name
        assert phrase in caught.value.message and f"{name}.pth" in caught.value.message, name
        assert str(tmp_path) not in caught.value.message
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(RendererError) as refused:
        load_motion_decoder(junk)
    assert refused.value.code == "invalid_checkpoint" and "junk.pth" in refused.value.message
    for absent in (tmp_path / "nowhere.pth", tmp_path):
        with pytest.raises(LMDMCheckpointError) as caught:
            load_motion_decoder(absent)
        assert caught.value.code == "checkpoint_not_found"
        assert str(tmp_path) not in caught.value.message


# -- ONNX ----------------------------------------------------------------------------------------


def test_onnx_step_has_the_released_names_and_matches_torch(
    tmp_path: Path, small: MotionDecoder
) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from renderers.ditto.lmdm.onnx_export import INPUTS, OUTPUTS, example_inputs, export_step

    denoiser = GuidedDenoiser(small)
    path = export_step(denoiser, tmp_path / "lmdm_v0.4_hubert.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(INPUTS)
    assert [o.name for o in session.get_outputs()] == list(OUTPUTS)
    assert [i.shape for i in session.get_inputs()] == [[1, 80, 265], [1, 265], [1, 80, 1103], [1]]
    x, cond_frame, cond, _ = example_inputs(denoiser, seed=4)
    for time in (999, 20):
        time_cond = torch.tensor([time])
        feeds = dict(zip(INPUTS, (x, cond_frame, cond, time_cond), strict=True))
        got = session.run(None, {name: tensor.numpy() for name, tensor in feeds.items()})
        with torch.inference_mode():
            want = denoiser(x, cond_frame, cond, time_cond)
        for out, ref in zip(got, want, strict=True):
            torch.testing.assert_close(torch.from_numpy(out), ref, atol=1e-4, rtol=1e-4)


# -- back ends -----------------------------------------------------------------------------------


def test_onnx_back_end_samples_the_same_motion_as_torch(
    tmp_path: Path, small_file: Path, small: MotionDecoder
) -> None:
    pytest.importorskip("onnxruntime")
    from renderers.ditto.lmdm.engines import OnnxStep, TorchStep, export_path, load_step

    cache = tmp_path / "cache"
    step = load_step("onnx", small_file, device="cpu", fp16=False, cache=cache)
    assert isinstance(step, OnnxStep) and step.window_shape == (1, 80, 265)
    assert step.path == export_path(small_file, cache)  # exported once, kept by content
    torch_step = load_step("torch", small_file, device="cpu", fp16=False, cache=cache)
    assert isinstance(torch_step, TorchStep)
    _, cond_frame, cond = inputs()
    x_t = torch.randn(1, 80, 265, generator=torch.Generator().manual_seed(2))
    on_onnx = MotionSampler(step, sampling_timesteps=4, seed=9).sample(cond_frame, cond, x=x_t)
    on_torch = MotionSampler(torch_step, sampling_timesteps=4, seed=9).sample(
        cond_frame, cond, x=x_t
    )
    # float32 both: only the order of sums differs (fused kernels), ~1e-6 relative per step
    torch.testing.assert_close(on_onnx, on_torch, atol=1e-3, rtol=1e-3)
    stamp = step.path.stat().st_mtime_ns
    again = load_step("onnx", small_file, device="cpu", fp16=False, cache=cache)
    assert isinstance(again, OnnxStep) and again.path.stat().st_mtime_ns == stamp  # not re-exported


def test_onnx_back_end_prefers_dittos_released_graph(
    tmp_path: Path, small_file: Path, small: MotionDecoder
) -> None:
    pytest.importorskip("onnxruntime")
    from renderers.ditto.lmdm.engines import OnnxStep, load_step
    from renderers.ditto.lmdm.onnx_export import export_step

    released = export_step(
        GuidedDenoiser(small), tmp_path / "checkpoints" / "ditto_onnx" / "lmdm_v0.4_hubert.onnx"
    )
    step = load_step(
        "onnx",
        small_file,
        device="cpu",
        fp16=False,
        cache=tmp_path / "cache",
        directory=tmp_path / "checkpoints",
    )
    assert isinstance(step, OnnxStep) and step.path == released
    assert not (tmp_path / "cache").exists()  # nothing exported


def test_a_graph_that_is_not_a_step_is_refused_by_name(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from renderers.ditto.audio.random_model import write_random_hubert_onnx
    from renderers.ditto.lmdm.engines import OnnxStep

    wrong = write_random_hubert_onnx(tmp_path / "lmdm_v0.4_hubert.onnx")
    with pytest.raises(RendererError) as caught:
        OnnxStep(wrong)
    assert caught.value.code == "invalid_checkpoint"
    assert "lmdm_v0.4_hubert.onnx" in caught.value.message and "cond_frame" in caught.value.message


def test_tensorrt_where_it_cannot_run_is_named_or_falls_back_to_torch(
    tmp_path: Path, small_file: Path
) -> None:
    from renderers.ditto.lmdm.engines import TorchStep, load_step
    from renderers.model_settings import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT runs here; the GPU benchmark covers it")
    with pytest.raises(RendererError) as caught:
        load_step("tensorrt", small_file, device="cpu", fp16=False, cache=tmp_path)
    assert caught.value.code == "backend_unavailable" and caught.value.message == reason
    fallback = load_step(
        "tensorrt", small_file, device="cpu", fp16=False, cache=tmp_path, fallback_to_torch=True
    )
    assert isinstance(fallback, TorchStep)
