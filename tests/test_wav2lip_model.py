"""The Wav2Lip network, its checkpoint loader, the mel features and the inference back ends.

Checkpoints are generated with random weights in the published layout (wrapper dict, `module.`
prefixes, BatchNorm counters, optionally Adam state) and go through the same loader a real
`wav2lip.pth` does. The mel features are checked against facts computed here independently: the
Slaney scale's anchor points, each filter's triangle, and the analytic spectrum of a sine.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from renderers.wav2lip import mel as melmod
from renderers.wav2lip.mel import (
    MEL_STEP_COLUMNS,
    StreamingMel,
    lookahead_seconds,
    mel_filterbank,
    mel_window,
    melspectrogram,
    samples_needed,
    window_start,
)

torch = pytest.importorskip("torch")

from renderers.base import RendererError  # noqa: E402
from renderers.wav2lip.backends import (  # noqa: E402
    BGR_FACES,
    BackendUnavailableError,
    OnnxGenerator,
    TorchGenerator,
    create_generator,
    export_onnx,
    installed,
    onnx_cache_path,
)
from renderers.wav2lip.checkpoint import (  # noqa: E402
    CheckpointError,
    file_digest,
    load_checkpoint,
    write_random_checkpoint,
)
from renderers.wav2lip.model import Wav2Lip, parameter_count  # noqa: E402

SR = 16000


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 96-px checkpoint as published: wrapper dict and `module.` prefixes."""
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "wav2lip.pth", seed=3)


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> Wav2Lip:
    return load_checkpoint(checkpoint)


def inputs(batch: int, size: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mels = rng.uniform(-4, 4, (batch, 1, 80, 16)).astype(np.float32)
    faces = rng.uniform(0, 1, (batch, 6, size, size)).astype(np.float32)
    faces[:, :3, size // 2 :] = 0  # the masked half, as the renderer sends it
    return mels, faces


def forward(model: Wav2Lip, mels: np.ndarray, faces: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(mels), torch.from_numpy(faces)).numpy()


def raw_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# -- the network ---------------------------------------------------------------------------------


def test_parameter_count_matches_the_published_generator() -> None:
    model = Wav2Lip(96)
    assert parameter_count(model) == 36_298_035
    assert parameter_count(model.face_encoder_blocks) == 8_171_056
    assert parameter_count(model.audio_encoder) == 2_812_672
    assert parameter_count(model.face_decoder_blocks) == 25_291_072
    assert parameter_count(model.output_block) == 23_235
    state = model.state_dict()
    # Key names and shapes the reference quotes from the published files.
    assert state["face_encoder_blocks.0.0.conv_block.0.weight"].shape == (16, 6, 7, 7)
    assert state["audio_encoder.12.conv_block.0.weight"].shape == (512, 512, 1, 1)
    assert state["face_decoder_blocks.1.0.conv_block.0.weight"].shape == (1024, 512, 3, 3)
    assert state["output_block.1.weight"].shape == (3, 32, 1, 1)
    assert "output_block.0.conv_block.1.num_batches_tracked" in state


def test_size_must_be_supported() -> None:
    with pytest.raises(ValueError, match="96, 256"):
        Wav2Lip(128)


# -- checkpoints ---------------------------------------------------------------------------------


def test_published_layout_loads_and_generates(checkpoint: Path, model: Wav2Lip) -> None:
    raw = raw_state(checkpoint)
    assert set(raw) == {"state_dict", "optimizer", "global_step", "global_epoch"}
    assert all(key.startswith("module.") for key in raw["state_dict"])
    assert not model.training and model.size == 96
    loaded = model.state_dict()
    for key, value in raw["state_dict"].items():  # every weight and running stat arrived
        assert torch.equal(loaded[key.removeprefix("module.")], value), key

    mels, faces = inputs(3)
    out = forward(model, mels, faces)
    assert out.shape == (3, 3, 96, 96) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.std() > 1e-3  # not a constant picture
    # Frames are independent: batch of 3 == three batches of 1 (BN uses running stats).
    single = forward(model, mels[1:2], faces[1:2])
    np.testing.assert_allclose(out[1:2], single, atol=1e-5)


@pytest.mark.parametrize(
    ("data_parallel", "wrapped", "with_optimizer"),
    [(False, False, False), (True, False, False), (False, True, False), (True, True, True)],
)
def test_every_published_variant_loads_the_same_weights(
    tmp_path: Path, model: Wav2Lip, data_parallel: bool, wrapped: bool, with_optimizer: bool
) -> None:
    path = write_random_checkpoint(
        tmp_path / "variant.pth",
        seed=3,
        data_parallel=data_parallel,
        wrapped=wrapped,
        with_optimizer=with_optimizer,
    )
    if with_optimizer:  # Adam's state makes it about three times the weights, like the release
        assert path.stat().st_size > 2.5 * 36_298_035 * 4
    mels, faces = inputs(2, seed=1)
    np.testing.assert_array_equal(
        forward(load_checkpoint(path), mels, faces), forward(model, mels, faces)
    )


def test_the_256_variant_is_detected_from_its_keys(tmp_path: Path) -> None:
    path = write_random_checkpoint(tmp_path / "wav2lip256.pth", size=256, seed=1)
    model = load_checkpoint(path)
    assert model.size == 256
    assert "face_encoder_blocks.7.0.conv_block.0.weight" in model.state_dict()
    mels, faces = inputs(1, size=256)
    out = forward(model, mels, faces)
    assert out.shape == (1, 3, 256, 256) and 0 <= out.min() and out.max() <= 1


def _broken(tmp_path: Path, checkpoint: Path, edit) -> Path:
    raw = raw_state(checkpoint)
    edit(raw["state_dict"])
    path = tmp_path / "broken.pth"
    torch.save(raw, path)
    return path


def test_a_missing_block_is_named(tmp_path: Path, checkpoint: Path) -> None:
    def drop_block(state: dict) -> None:
        for key in [k for k in state if k.startswith("module.face_decoder_blocks.3.1.")]:
            del state[key]

    path = _broken(tmp_path, checkpoint, drop_block)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    error = caught.value
    assert isinstance(error, RendererError) and error.code == "invalid_checkpoint"
    assert str(path) in error.message
    assert "6 missing keys" in error.message  # conv w+b, BN w+b, mean, var (counter ignored)
    assert "face_decoder_blocks.3.1.conv_block.0.weight" in error.message
    assert "unexpected" not in error.message


def test_a_renamed_key_is_named_both_ways(tmp_path: Path, checkpoint: Path) -> None:
    def rename(state: dict) -> None:
        state["module.audio_encoder.4.conv_block.0.weights"] = state.pop(
            "module.audio_encoder.4.conv_block.0.weight"
        )

    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(_broken(tmp_path, checkpoint, rename))
    message = caught.value.message
    assert "1 missing key: audio_encoder.4.conv_block.0.weight" in message
    assert "1 unexpected key: audio_encoder.4.conv_block.0.weights" in message


def test_a_wrong_shape_is_named(tmp_path: Path, checkpoint: Path) -> None:
    def reshape(state: dict) -> None:
        state["module.output_block.1.weight"] = torch.zeros(4, 32, 1, 1)

    with pytest.raises(CheckpointError, match=r"wrong shape: output_block\.1\.weight \[4, 32"):
        load_checkpoint(_broken(tmp_path, checkpoint, reshape))


def test_many_problems_are_counted_not_all_listed(tmp_path: Path, checkpoint: Path) -> None:
    def drop_audio(state: dict) -> None:
        for key in [k for k in state if k.startswith("module.audio_encoder.")]:
            del state[key]

    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(_broken(tmp_path, checkpoint, drop_audio))
    message = caught.value.message
    assert "78 missing keys" in message and "(73 more)" in message  # 13 blocks x 6


def test_files_that_are_not_checkpoints(tmp_path: Path, checkpoint: Path) -> None:
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path / "absent.pth")
    assert caught.value.code == "checkpoint_not_found"

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="cannot read .*garbage.pth"):
        load_checkpoint(garbage)

    # Objects beyond tensors and plain values are refused (a pickle can run code) unless the
    # caller vouches for the file.
    trusted = tmp_path / "with_object.pth"
    raw = raw_state(checkpoint)
    raw["hparams"] = Fraction(1, 2)
    torch.save(raw, trusted)
    with pytest.raises(CheckpointError, match=r"objects other than .*fractions\.Fraction"):
        load_checkpoint(trusted)
    assert load_checkpoint(trusted, allow_pickle=True).size == 96

    empty = tmp_path / "empty.pth"
    torch.save({"state_dict": {}}, empty)
    with pytest.raises(CheckpointError, match="no state dict"):
        load_checkpoint(empty)


# -- mel features --------------------------------------------------------------------------------


def _slaney_hz_to_mel(hz: float) -> float:
    """Written out independently of the module: 3 mels per 200 Hz below 1 kHz, then 27 mels
    per factor 6.4."""
    if hz < 1000:
        return 3 * hz / 200
    return 15 + 27 * math.log(hz / 1000) / math.log(6.4)


def _slaney_mel_to_hz(m: float) -> float:
    if m < 15:
        return 200 * m / 3
    return 1000 * 6.4 ** ((m - 15) / 27)


def test_mel_filterbank_known_answers() -> None:
    bank = mel_filterbank()
    assert bank.shape == (80, 401)
    assert _slaney_mel_to_hz(15 + 27) == pytest.approx(6400)  # the scale's own anchor
    low, high = _slaney_hz_to_mel(55), _slaney_hz_to_mel(7600)
    edges = [_slaney_mel_to_hz(low + (high - low) * i / 81) for i in range(82)]
    bins_hz = np.arange(401) * 20.0  # 16 kHz / 800
    for band in range(80):
        lo, mid, hi = edges[band], edges[band + 1], edges[band + 2]
        height = 2 / (hi - lo)  # Slaney: each triangle has unit area in Hz
        for k in range(401):
            f = bins_hz[k]
            expected = height * max(0.0, min((f - lo) / (mid - lo), (hi - f) / (hi - mid)))
            assert bank[band, k] == pytest.approx(expected, abs=1e-9), (band, k)
        nonzero = np.flatnonzero(bank[band])
        assert lo < bins_hz[nonzero[0]] and bins_hz[nonzero[-1]] < hi
        assert abs(bins_hz[np.argmax(bank[band])] - mid) <= 10  # the peak is the nearest bin
    # Wide (high) filters sample their triangle finely: area in Hz is close to 1.
    assert bank[70:].sum(axis=1) * 20 == pytest.approx(np.ones(10), abs=0.01)


def test_mel_of_a_sine_matches_its_analytic_spectrum() -> None:
    amplitude, freq = 0.5, 1000.0  # exactly FFT bin 50
    t = np.arange(SR) / SR
    mel = melspectrogram((amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32))
    assert mel.shape == (80, 81) and mel.dtype == np.float32
    # Pre-emphasis gain at 1 kHz, then a Hann window of 800: the sine's bin holds A*800/4, its
    # two neighbours half that; everything else ~0.
    w = 2 * np.pi * freq / SR
    gain = abs(1 - 0.97 * np.exp(-1j * w))
    spectrum = np.zeros(401)
    spectrum[50] = amplitude * gain * 200
    spectrum[[49, 51]] = amplitude * gain * 100
    energy = mel_filterbank() @ spectrum
    expected = np.clip(8 * (20 * np.log10(np.maximum(1e-5, energy)) - 20 + 100) / 100 - 4, -4, 4)
    middle = mel[:, 40]  # far from the padded ends
    band = int(np.argmax(expected))
    assert int(np.argmax(middle)) == band
    np.testing.assert_allclose(middle[expected > -3.5], expected[expected > -3.5], atol=2e-3)


def test_silence_is_the_floor() -> None:
    mel = melspectrogram(np.zeros(3200, dtype=np.int16))
    assert mel.shape == (80, 17)
    assert np.all(mel == -4.0)


def _chunked(wav: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, list[int]]:
    stream, parts, emitted_after = StreamingMel(), [], []
    position, turn = 0, 0
    while position < wav.size:
        size = sizes[turn % len(sizes)]
        parts.append(stream.push(wav[position : position + size]))
        position += size
        turn += 1
        emitted_after.append(stream.columns_emitted)
    parts.append(stream.finish())
    return np.concatenate(parts, axis=1), emitted_after


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_streaming_mel_equals_whole_utterance(dtype) -> None:
    rng = np.random.default_rng(7)
    for length in (0, 1, 250, 400, 401, 799, 1000, 5000, 12345):
        speech = rng.standard_normal(length) * 0.2
        wav = (speech * 32767).astype(np.int16) if dtype is np.int16 else speech.astype(dtype)
        whole = melspectrogram(wav)
        assert whole.shape == (80, 1 + length // 200 if length else 0)
        assert np.all(np.abs(whole) <= 4.0)
        chunkings = [[1], [160], [length + 5], list(rng.integers(1, 900, size=20))]
        for sizes in chunkings:
            streamed, _ = _chunked(wav, sizes)
            assert streamed.shape == whole.shape, (length, sizes[:3])
            if length:
                assert np.abs(streamed - whole).max() < 1e-4, (length, sizes[:3])


def test_streaming_emits_each_column_as_soon_as_it_is_final() -> None:
    wav = (np.random.default_rng(3).standard_normal(16000) * 3000).astype(np.int16)
    _, emitted_after = _chunked(wav, [1])
    for received, emitted in enumerate(emitted_after, start=1):
        # column c covers samples [200c - 400, 200c + 400): final once 200c + 400 arrived
        assert emitted == (0 if received < 401 else (received - 400) // 200 + 1), received
    # And a frame's whole window is out once samples_needed(frame) samples are in.
    for frame in (0, 1, 7, 20):
        needed = samples_needed(frame, 30)
        assert emitted_after[needed - 1] >= window_start(frame, 30) + MEL_STEP_COLUMNS
        assert emitted_after[needed - 2] < window_start(frame, 30) + MEL_STEP_COLUMNS


def test_mel_window_start_columns() -> None:
    mel = np.tile(np.arange(100, dtype=np.float32), (80, 1))  # each column holds its index
    for fps, frames_and_starts in [
        (25, [(0, 0), (1, 3), (2, 6), (5, 16), (9, 28)]),  # 3.2 columns per frame
        (30, [(0, 0), (1, 2), (2, 5), (3, 8), (4, 10), (29, 77)]),  # 2.667 per frame
    ]:
        for frame, start in frames_and_starts:
            window = mel_window(mel, frame, fps)
            assert window.shape == (80, 16)
            np.testing.assert_array_equal(window[0], np.arange(start, start + 16))
    # Past the end: the last 16 columns, as the reference does.
    np.testing.assert_array_equal(mel_window(mel, 40, 30)[0], np.arange(84, 100))
    # Shorter than a window: padded with silence.
    short = mel_window(mel[:, :5], 0, 30)
    assert short.shape == (80, 16) and np.all(short[:, 5:] == -4)
    # The look-ahead past a frame's end: 15 hops + half a window, minus the frame itself.
    assert lookahead_seconds(30) == pytest.approx((15 * 200 + 400) / SR - 1 / 30)
    assert melmod.COLUMNS_PER_SECOND == 80


# -- back ends -----------------------------------------------------------------------------------


def test_torch_generator_speaks_rgb(model: Wav2Lip) -> None:
    generator = TorchGenerator(model, device="cpu")
    mels, faces = inputs(2, seed=5)
    rgb = generator.predict(mels, faces)
    assert rgb.shape == (2, 96, 96, 3) and rgb.dtype == np.uint8
    # The network itself runs on BGR: feeding it the reversed halves and reversing the output
    # must give exactly what predict returned.
    bgr_out = forward(model, mels, faces[:, BGR_FACES])
    expected = np.clip(np.rint(bgr_out[:, ::-1].transpose(0, 2, 3, 1) * 255), 0, 255)
    assert np.abs(rgb.astype(int) - expected.astype(int)).max() <= 1
    with pytest.raises(ValueError, match="faces must be"):
        generator.predict(mels, faces[:, :, :64])
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        TorchGenerator(model, device="cpu", fp16=True)


@pytest.mark.skipif(not installed("onnxruntime"), reason="onnxruntime not installed")
def test_onnx_export_matches_torch(tmp_path: Path, model: Wav2Lip) -> None:
    path = export_onnx(model, tmp_path / "wav2lip96.onnx", size=96)
    generator = OnnxGenerator(path)
    assert generator.size == 96 and generator.device == "cpu"
    for batch in (1, 3):  # the batch axis is dynamic
        mels, faces = inputs(batch, seed=batch)
        (out,) = generator.session.run(None, {"mel": mels, "faces": faces})
        np.testing.assert_allclose(out, forward(model, mels, faces), atol=1e-3)
        torch_rgb = TorchGenerator(model).predict(mels, faces)
        assert np.abs(generator.predict(mels, faces).astype(int) - torch_rgb).max() <= 1


@pytest.mark.skipif(not installed("onnxruntime"), reason="onnxruntime not installed")
def test_create_generator_picks_and_caches(tmp_path: Path, checkpoint: Path) -> None:
    cache = tmp_path / "cache"
    generator = create_generator("torch", checkpoint, device="cpu", cache_dir=cache)
    assert isinstance(generator, TorchGenerator)
    assert (generator.name, generator.device, generator.fp16) == ("torch", "cpu", False)
    assert not cache.exists()  # torch exports nothing

    onnx = create_generator("onnx", checkpoint, device="cpu", cache_dir=cache)
    assert isinstance(onnx, OnnxGenerator) and onnx.name == "onnx"
    exported = onnx_cache_path(cache, file_digest(checkpoint), 96)
    stamp = exported.stat().st_mtime_ns
    create_generator("onnx", checkpoint, device="cpu", cache_dir=cache)
    assert exported.stat().st_mtime_ns == stamp  # reused, not exported again

    mels, faces = inputs(2, seed=9)
    assert np.abs(onnx.predict(mels, faces).astype(int) - generator.predict(mels, faces)).max() <= 1

    auto = create_generator("auto", checkpoint, device="cpu", cache_dir=cache)
    assert auto.device == "cpu" and auto.name in ("torch", "onnx")
    with pytest.raises(BackendUnavailableError, match="fp16 needs a CUDA device"):
        create_generator("torch", checkpoint, device="cpu", fp16=True, cache_dir=cache)
    with pytest.raises(BackendUnavailableError, match="unknown wav2lip back end"):
        create_generator("tflite", checkpoint, device="cpu", cache_dir=cache)


@pytest.mark.skipif(installed("tensorrt"), reason="tensorrt is installed here")
def test_tensorrt_without_tensorrt_says_why(tmp_path: Path, checkpoint: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="'tensorrt' package") as caught:
        create_generator("tensorrt", checkpoint, device="cpu", cache_dir=tmp_path)
    assert caught.value.code == "backend_unavailable"
