"""Ditto's audio front end (renderers/ditto/audio): the window arithmetic against the official
formulas (antgroup/ditto-talkinghead: inference.py, core/atomic_components/wav2feat.py,
stream_pipeline_online.py), streaming against the whole-clip paths, flush/reset, the HuBERT
file's errors, and a random HuBERT stand-in through the real ONNX Runtime path."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from renderers.ditto.audio import (
    DIR_ENV,
    EXPORT_FILE,
    HUBERT_FILE,
    AudioFeatureStream,
    DittoAudioError,
    DittoFraming,
    HubertOnnx,
    encoder_frames,
    load_hubert,
    locate_hubert,
    num_frames,
    offline_features,
    online_features,
    silence_prefill,
)
from renderers.ditto.audio.random_model import write_random_hubert_onnx
from renderers.errors import CodedError
from renderers.model_settings import installed

CHUNKSIZE = (3, 5, 2)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_hubert_onnx(tmp_path_factory.mktemp("hubert") / "random.onnx", seed=3)


@pytest.fixture(scope="module")
def encoder(model_path: Path) -> HubertOnnx:
    return HubertOnnx(model_path, threads=1)


def speech_like(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return (tone + 0.05 * rng.standard_normal(n)).astype(np.float32)


# --- the official formulas, as Ditto writes them ---------------------------------------------


def official_window_features(encoding: np.ndarray, chunksize=CHUNKSIZE) -> np.ndarray:
    """Wav2FeatHubert.__call__ after the model."""
    start = -sum(chunksize[1:]) * 2
    end = -chunksize[2] * 2
    return encoding[start:end].reshape(chunksize[1], 2, 1024).mean(1)


def official_online(audio: np.ndarray, encoder, chunksize=CHUNKSIZE) -> np.ndarray:
    """inference.py's online loop (run_chunk for every window)."""
    audio = np.concatenate([np.zeros((chunksize[0] * 640,), dtype=np.float32), audio], 0)
    split_len = int(sum(chunksize) * 0.04 * 16000) + 80
    out = []
    for i in range(0, len(audio), chunksize[1] * 640):
        chunk = audio[i : i + split_len]
        if len(chunk) < split_len:
            chunk = np.pad(chunk, (0, split_len - len(chunk)), mode="constant")
        out.append(official_window_features(encoder(chunk), chunksize))
    return np.concatenate(out, 0)


def official_offline(audio: np.ndarray, encoder, chunksize=CHUNKSIZE) -> np.ndarray:
    """Wav2FeatHubert.wav2feat at 16 kHz."""
    num_f = math.ceil(len(audio) / 16000 * 25)
    split_len = int(sum(chunksize) * 0.04 * 16000) + 80
    pad = np.concatenate(
        [
            np.zeros((split_len - int(sum(chunksize[1:]) * 0.04 * 16000),), dtype=audio.dtype),
            audio,
            np.zeros((split_len,), dtype=audio.dtype),
        ]
    )
    out = []
    i = 0
    while i < num_f:
        s = int(i * 0.04 * 16000)
        out.append(official_window_features(encoder(pad[s : s + split_len]), chunksize))
        i += chunksize[1]
    return np.concatenate(out, 0)[:num_f]


# --- arithmetic -------------------------------------------------------------------------------


def test_window_arithmetic_matches_the_official_formulas() -> None:
    framing = DittoFraming(CHUNKSIZE)
    assert framing.window_samples == int(sum(CHUNKSIZE) * 0.04 * 16000) + 80 == 6480
    assert framing.hop_samples == CHUNKSIZE[1] * 640 == 3200
    assert framing.lead_in_samples == CHUNKSIZE[0] * 640 == 1920
    assert framing.offline_lead_in_samples == 2000
    assert framing.feature_slice == slice(-14, -4)
    assert framing.encoder_frames_per_window == 20
    assert framing.frames_per_window == 5
    assert framing.lookahead_samples == 1360
    assert len(np.arange(20)[framing.feature_slice]) == 10
    for chunksize in [(2, 4, 1), (1, 1, 1), (5, 10, 3), (4, 6, 3), (0, 3, 0)]:
        other = DittoFraming(chunksize)
        assert other.window_samples == int(sum(chunksize) * 0.04 * 16000) + 80
        assert other.window_samples == 640 * sum(chunksize) + 80
        assert other.encoder_frames_per_window == 2 * sum(chunksize)
        kept = np.arange(other.encoder_frames_per_window)[
            -sum(chunksize[1:]) * 2 : (-chunksize[2] * 2) or None
        ]
        if chunksize[2]:
            assert len(kept) == 2 * chunksize[1]
    with pytest.raises(ValueError):
        DittoFraming((3, 0, 2))


def test_hubert_frame_count_is_the_conv_stack_s() -> None:
    # HuBERT's feature extractor: kernels (10,3,3,3,3,2,2), strides (5,2,2,2,2,2,2)
    def conv_stack(n: int) -> int:
        for kernel, stride in zip((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2), strict=True):
            n = (n - kernel) // stride + 1 if n >= kernel else 0
        return max(n, 0)

    for n in [0, 399, 400, 719, 720, 3240, 6479, 6480, 6481, 12960, 16000, 54321]:
        assert encoder_frames(n) == conv_stack(n), n
    assert encoder_frames(6480) == 20


def test_frame_count_is_ditto_s_float_formula() -> None:
    for n in [0, 1, 639, 640, 641, 4480, 6400, 8960, 16000, 27311, 35200]:
        assert num_frames(n) == math.ceil(n / 16000 * 25)
    # Ditto's float formula counts one frame more than ceil(n / 640) for a few lengths
    assert num_frames(4480) == 8 and -(-4480 // 640) == 7
    assert num_frames(6400) == 10  # the silence pre-fill's length, asserted by Ditto


# --- the ONNX model ---------------------------------------------------------------------------


def test_random_hubert_runs_through_onnxruntime(encoder: HubertOnnx) -> None:
    import onnxruntime

    session = encoder.session
    assert isinstance(session, onnxruntime.InferenceSession)
    assert [i.name for i in session.get_inputs()] == ["input_values"]
    assert [o.name for o in session.get_outputs()] == ["encoding_out"]
    assert encoder.feature_dim == 1024
    for n in (400, 719, 720, 3240, 6480, 12960):
        out = encoder(speech_like(n))
        assert out.shape == (encoder_frames(n), 1024) and out.dtype == np.float32
    window = speech_like(6480)
    assert np.isfinite(encoder(window)).all()
    assert not np.allclose(encoder(window), encoder(window * 0.5))
    framed = DittoFraming().run_window(encoder, window)
    assert framed.shape == (5, 1024)
    np.testing.assert_allclose(framed, official_window_features(encoder(window)), rtol=1e-6)


def test_missing_hubert_names_the_file_and_where_it_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DIR_ENV, raising=False)
    with pytest.raises(DittoAudioError) as unset:
        locate_hubert()
    assert unset.value.code == "checkpoint_not_found"
    assert HUBERT_FILE in unset.value.message and DIR_ENV in unset.value.message

    monkeypatch.setenv(DIR_ENV, str(tmp_path))
    with pytest.raises(CodedError) as missing:
        load_hubert()
    assert missing.value.code == "checkpoint_not_found"
    message = missing.value.message
    assert "ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx" in message
    assert DIR_ENV in message and str(tmp_path) not in message

    with pytest.raises(DittoAudioError) as nodir:
        locate_hubert(tmp_path / "absent")
    assert nodir.value.code == "checkpoint_not_found" and HUBERT_FILE in nodir.value.message


def test_hubert_is_found_in_ditto_s_layouts(tmp_path: Path, model_path: Path) -> None:
    for folder in ("ditto_pytorch/aux_models", "aux_models", "."):
        root = tmp_path / folder.replace("/", "_").replace(".", "flat")
        target = root / folder / HUBERT_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(model_path.read_bytes())
        assert locate_hubert(root) == target
    # the project's export is the fall-back
    export_root = tmp_path / "exported"
    target = export_root / "ditto_pytorch/aux_models" / EXPORT_FILE
    target.parent.mkdir(parents=True)
    target.write_bytes(model_path.read_bytes())
    assert locate_hubert(export_root) == target
    assert load_hubert(export_root, threads=1)(np.zeros(6480, np.float32)).shape == (20, 1024)


def test_bad_hubert_files_are_invalid_checkpoints(tmp_path: Path) -> None:
    garbage = tmp_path / HUBERT_FILE
    garbage.write_bytes(b"not an onnx file")
    with pytest.raises(DittoAudioError) as bad:
        HubertOnnx(garbage)
    assert bad.value.code == "invalid_checkpoint" and HUBERT_FILE in bad.value.message

    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["audio"], ["features"])],
        "wrong_names",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, "n"])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, "n"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    with pytest.raises(DittoAudioError) as wrong:
        HubertOnnx(tmp_path / "wrong.onnx")
    assert wrong.value.code == "invalid_checkpoint" and "input_values" in wrong.value.message


# --- streaming and the whole-clip paths -------------------------------------------------------


def stream_in_chunks(stream: AudioFeatureStream, audio: np.ndarray, step: int, **flush) -> list:
    parts = [stream.push(audio[i : i + step]) for i in range(0, len(audio), step)]
    parts.append(stream.flush(**flush))
    for part in parts:
        assert part.ndim == 2 and part.shape[1] == 1024 and part.dtype == np.float32
    return parts


def test_streaming_in_any_chunk_size_equals_the_whole_clip(encoder: HubertOnnx) -> None:
    audio = speech_like(27311)  # 1.707 s: 43 frames, not a whole number of windows
    whole = online_features(audio, encoder)
    assert whole.shape == (num_frames(len(audio)), 1024) == (43, 1024)
    untrimmed = official_online(audio, encoder)
    assert untrimmed.shape[0] == 5 * math.ceil((len(audio) + 1920) / 3200) == 50
    np.testing.assert_array_equal(online_features(audio, encoder, trim=False), untrimmed)
    np.testing.assert_array_equal(whole, untrimmed[: len(whole)])

    stream = AudioFeatureStream(encoder)
    for step in (16, 640, 5328, len(audio)):  # 1 ms, 40 ms, 333 ms, whole
        parts = stream_in_chunks(stream, audio, step)
        np.testing.assert_array_equal(np.concatenate(parts), whole, err_msg=f"step {step}")
        assert sum(len(p) for p in parts[:-1]) % 5 == 0
    parts = stream_in_chunks(stream, audio, 333, trim=False)
    np.testing.assert_array_equal(np.concatenate(parts), untrimmed)


def test_frames_come_out_as_soon_as_their_window_is_complete(encoder: HubertOnnx) -> None:
    stream = AudioFeatureStream(encoder)
    audio = speech_like(16000)
    # window k needs the clip's samples up to 3200k + 4560
    assert stream.push(audio[:4559]).shape[0] == 0
    assert stream.push(audio[4559:4560]).shape[0] == 5
    assert stream.push(audio[4560:7759]).shape[0] == 0
    assert stream.push(audio[7760 - 1 : 7760]).shape[0] == 5
    assert stream.frames_emitted == 10 and stream.samples_received == 7760
    assert stream.max_lookahead_samples == 3920


def test_offline_path_is_ditto_s_and_80_samples_earlier(encoder: HubertOnnx) -> None:
    for n in (27311, 4480, 640, 1):
        audio = speech_like(n, seed=n)
        offline = offline_features(audio, encoder)
        np.testing.assert_array_equal(offline, official_offline(audio, encoder))
        assert offline.shape == (num_frames(n), 1024)
        # the offline window starts 80 samples (5 ms) before the online one
        shifted = np.concatenate([np.zeros(80, np.float32), audio])
        np.testing.assert_array_equal(offline, online_features(shifted, encoder)[: len(offline)])
    audio = speech_like(27311)
    assert not np.allclose(offline_features(audio, encoder), online_features(audio, encoder))


def test_silence_prefill(encoder: HubertOnnx) -> None:
    prefill = silence_prefill(encoder)
    assert prefill.shape == (10, 1024)
    np.testing.assert_array_equal(prefill, official_offline(np.zeros(6400, np.float32), encoder))
    assert np.abs(prefill).max() > 0  # silence features are not zero features
    stream = AudioFeatureStream(encoder)
    np.testing.assert_array_equal(stream.silence_prefill(), prefill)
    assert stream.silence_prefill(4).shape == (4, 1024)


def test_flush_ends_an_utterance_and_the_next_starts_fresh(encoder: HubertOnnx) -> None:
    first, second = speech_like(9000, seed=1), speech_like(5000, seed=2)
    stream = AudioFeatureStream(encoder)
    assert stream.flush().shape == (0, 1024)  # nothing pushed: nothing
    a = np.concatenate(stream_in_chunks(stream, first, 700))
    assert stream.samples_received == 0 and stream.frames_emitted == 0
    b = np.concatenate(stream_in_chunks(stream, second, 700))
    np.testing.assert_array_equal(a, online_features(first, encoder))
    np.testing.assert_array_equal(b, online_features(second, encoder))
    assert len(a) == num_frames(9000) == 15 and len(b) == num_frames(5000) == 8
    # the trimmed flush of a short utterance
    stream.push(speech_like(100))
    assert stream.flush().shape == (1, 1024)
    stream.push(speech_like(4480))
    assert stream.flush().shape == (8, 1024)  # Ditto's count, one more than 4480 / 640


def test_reset_drops_everything_buffered(encoder: HubertOnnx) -> None:
    audio = speech_like(20000, seed=5)
    stream = AudioFeatureStream(encoder)
    stream.push(speech_like(3000, seed=9))
    assert stream.push(speech_like(3000, seed=8)).shape[0] == 5
    stream.reset()
    assert stream.samples_received == 0 and stream.buffered_samples == 1920
    after = np.concatenate(stream_in_chunks(stream, audio, 1234))
    np.testing.assert_array_equal(after, online_features(audio, encoder))


def test_int16_and_float_pcm_give_the_same_features(encoder: HubertOnnx) -> None:
    pcm = (speech_like(8000, seed=4) * 32767).astype(np.int16)
    as_float = pcm.astype(np.float32) / 32768
    a = AudioFeatureStream(encoder)
    b = AudioFeatureStream(encoder)
    left = np.concatenate(stream_in_chunks(a, pcm, 480))
    right = np.concatenate(stream_in_chunks(b, as_float, 480))
    np.testing.assert_array_equal(left, right)
    with pytest.raises(ValueError):
        a.push(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError):
        a.push(np.zeros(100, np.int32))


# --- the transformers path ----------------------------------------------------------------------


def test_hf_export_without_transformers_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from renderers.ditto.audio import export
    from renderers.ditto.audio.export import export_hubert_onnx

    # as on an install without the ditto extra (setup installs it here)
    monkeypatch.setattr(export, "installed", lambda module: module != "transformers")
    with pytest.raises(DittoAudioError) as error:
        export_hubert_onnx(tmp_path, tmp_path / EXPORT_FILE)
    assert error.value.code == "backend_unavailable"
    assert "pip install" in error.value.message and "transformers" in error.value.message


@pytest.mark.skipif(not installed("torch"), reason="torch is not installed")
def test_exported_encoder_has_ditto_s_io(tmp_path: Path) -> None:
    import torch

    from renderers.ditto.audio.export import export_encoder_onnx, hubert_encoder_module

    class TinyHubert(torch.nn.Module):
        """HubertModel's interface: (1, N) -> .last_hidden_state (1, T, 1024)."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv1d(1, 1024, 400, stride=320)

        def forward(self, input_values, output_hidden_states=False):
            hidden = self.conv(input_values[:, None]).transpose(1, 2)

            class Out:
                last_hidden_state = hidden
                hidden_states = (hidden, hidden)

            return Out()

    path = export_encoder_onnx(
        hubert_encoder_module(TinyHubert(), normalize=True), tmp_path / EXPORT_FILE
    )
    encoder = HubertOnnx(path, threads=1)
    for n in (6480, 12960):
        assert encoder(speech_like(n)).shape == (encoder_frames(n), 1024)
    stream = AudioFeatureStream(encoder)
    assert np.concatenate(stream_in_chunks(stream, speech_like(7000), 640)).shape == (11, 1024)


@pytest.mark.skipif(not installed("transformers"), reason="transformers is not installed")
def test_hf_weights_export_to_an_onnx_that_matches_hubertmodel(tmp_path: Path) -> None:
    import torch
    from transformers import HubertConfig, HubertModel

    from renderers.ditto.audio.export import export_hubert_onnx

    # facebook/hubert-large-ls960-ft's configuration, narrowed: same conv front end and
    # layer-norm placement, 2 layers of width 1024 so the features keep Ditto's 1024.
    config = HubertConfig(
        hidden_size=1024,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    torch.manual_seed(0)
    model = HubertModel(config).eval()
    folder = tmp_path / "hubert-large-ls960-ft"
    model.save_pretrained(folder)
    path = export_hubert_onnx(folder, tmp_path / "aux_models" / EXPORT_FILE)
    encoder = HubertOnnx(path, threads=1)
    audio = speech_like(6480)
    got = encoder(audio)
    with torch.inference_mode():
        want = model(torch.from_numpy(audio)[None]).last_hidden_state[0].numpy()
    assert got.shape == want.shape == (encoder_frames(6480), 1024)
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-3)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(DittoAudioError) as error:
        export_hubert_onnx(broken, tmp_path / "x.onnx")
    assert error.value.code == "invalid_checkpoint" and str(tmp_path) not in error.value.message
