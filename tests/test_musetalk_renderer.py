"""MuseTalk: the avatar preparation's package (seed 000's TAR layout and contents), the
networks loaded from files in the published layouts (random weights, SMALL configs that keep
the key names), the streaming audio window, and the renderer on a prepared package."""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
import tarfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from renderers import FrameRequest, RendererError, VideoFormat
from renderers.musetalk import audio as tokens
from renderers.musetalk.prepare import EXTRA_MARGIN, crop_box, muse_box
from renderers.musetalk.settings import MuseTalkSettings
from renderers.preparation import PreparationError, prepare_avatar_package
from tests.media import talking_head_video

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("diffusers") is None or importlib.util.find_spec("torch") is None,
    reason="the musetalk extra (torch, diffusers, transformers) is not installed",
)

WIDTH, HEIGHT, FPS = 320, 240, 12
SEED_MEMBERS = {
    "coords.pkl",
    "mask_coords.pkl",
    "latents.pt",
    "avator_info.json",
    "full_imgs",
    "mask",
}
TINY_VAE = {"block_out_channels": [4, 4, 8, 8], "norm_num_groups": 2}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.musetalk_fixtures import SMALL_VAE, write_models

    return write_models(tmp_path_factory.mktemp("musetalk-models"), vae={**SMALL_VAE, **TINY_VAE})


@pytest.fixture(scope="module")
def env(models: Path) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AVATAR_MUSETALK_DIR", str(models))
        patch.setenv("AVATAR_MUSETALK_DEVICE", "cpu")
        yield


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("musetalk-video")
    return talking_head_video(root / "head.mp4", seconds=3.2, fps=FPS, size=(WIDTH, HEIGHT))


@pytest.fixture(scope="module")
def prepared(head, env, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("musetalk-package")
    calls: list[float] = []
    result = prepare_avatar_package(
        head.path,
        avatar_id="muse-1",
        model="musetalk",
        out_dir=out,
        progress=lambda f, m: calls.append(f),
    )
    unpacked = out / "unpacked"
    with tarfile.open(result.package) as tar:
        tar.extractall(unpacked, filter="data")
    return result, unpacked, calls


# -- preparation ---------------------------------------------------------------------------


def test_the_package_has_the_seeds_layout(prepared) -> None:
    result, root, calls = prepared
    assert result.model == "musetalk" and result.package.name == "muse-1.tar"
    with tarfile.open(result.package) as tar:
        names = tar.getnames()
    top = {name.split("/")[0] for name in names}
    assert top == SEED_MEMBERS | {"avatar.json"}  # the seed's six, and our manifest
    n = result.num_frames
    assert n == round(3.2 * FPS)
    assert sorted(p.name for p in (root / "full_imgs").iterdir()) == [
        f"{i:08d}.png" for i in range(n)
    ]
    assert sorted(p.name for p in (root / "mask").iterdir()) == [f"{i:08d}.png" for i in range(n)]
    assert calls == sorted(calls) and calls[-1] == 1.0
    info = json.loads((root / "avator_info.json").read_text())
    assert info == {
        "avatar_id": "muse-1",
        "video_path": "head.mp4",
        "bbox_shift": 0,
        "version": "v15",
    }
    manifest = json.loads((root / "avatar.json").read_text())
    assert manifest["model"] == "musetalk" and manifest["num_frames"] == n


def test_boxes_crop_boxes_masks_and_latents_agree(prepared) -> None:
    import torch

    result, root, _ = prepared
    n = result.num_frames
    coords = pickle.loads((root / "coords.pkl").read_bytes())
    crops = pickle.loads((root / "mask_coords.pkl").read_bytes())
    latents = torch.load(root / "latents.pt", weights_only=True)
    assert len(coords) == len(crops) == len(latents) == n
    assert all(isinstance(v, int) for box in coords + crops for v in box)
    for box, crop, index in zip(coords, crops, range(n), strict=True):
        x1, y1, x2, y2 = box
        assert 0 <= x1 < x2 <= WIDTH and 0 <= y1 < y2 <= HEIGHT
        assert list(crop_box(tuple(box))) == crop  # MuseTalk's get_crop_box(box, 1.5)
        mask = cv2.imread(str(root / "mask" / f"{index:08d}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.ndim == 2 and mask.shape == (crop[3] - crop[1], crop[2] - crop[0])
        # Blurred, but it is the lower face: nothing above the crop box's middle (less the
        # blur's reach), most of it inside the face box, below the box's middle.
        side = mask.shape[0]
        reach = int(0.1 * side // 2 * 2) // 2 + 1
        assert mask[: side // 2 - reach].max() == 0
        ys, xs = np.nonzero(mask > 128)
        assert ys.size > 0.02 * (x2 - x1) * (y2 - y1)
        cy, cx = ys.mean() + crop[1], xs.mean() + crop[0]
        assert (y1 + y2) / 2 < cy < y2 and x1 < cx < x2
    assert {tuple(t.shape) for t in latents} == {(1, 8, 32, 32)}
    assert {t.dtype for t in latents} == {torch.float16}
    # The latents are the VAE's, of MuseTalk's crop: re-encoding the first frames' crops
    # with the same seed gives them again.
    from renderers.musetalk.prepare import LATENT_BATCH, load_face_encoder

    encoder = load_face_encoder()
    crops_rgb = []
    for index in range(LATENT_BATCH):
        frame = cv2.cvtColor(
            cv2.imread(str(root / "full_imgs" / f"{index:08d}.png")), cv2.COLOR_BGR2RGB
        )
        x1, y1, x2, y2 = coords[index]
        crops_rgb.append(
            cv2.resize(frame[y1:y2, x1:x2], (256, 256), interpolation=cv2.INTER_LANCZOS4)
        )
    again = encoder.latents(np.stack(crops_rgb))
    stored = torch.cat(latents[:LATENT_BATCH]).float()
    assert torch.allclose(again.half().float(), stored, atol=1e-3)
    assert not torch.allclose(stored[:, :4], stored[:, 4:])  # masked != reference


def test_the_face_box_follows_musetalks_rule() -> None:
    points = np.zeros((468, 3), dtype=np.float32)
    from renderers.musetalk.prepare import CHIN, HALF_FACE, JAW

    points[:, :2] = (150, 100)
    points[list(JAW), 0] = np.linspace(100, 200, len(JAW))
    points[list(JAW), 1] = 120
    points[CHIN, 1] = 180
    points[HALF_FACE, 1] = 130
    assert muse_box(points, 0, 320, 240) == (100, 80, 200, 180 + EXTRA_MARGIN)
    # bbox_shift moves the half-face point: + lowers the top by twice as much.
    assert muse_box(points, 5, 320, 240) == (100, 90, 200, 180 + EXTRA_MARGIN)
    assert muse_box(points, 0, 320, 185) == (100, 80, 200, 185)  # clamped to the frame
    points[list(JAW), 0] -= 150  # off the left edge: the detector's box instead
    assert muse_box(points, 0, 320, 240) is None
    assert crop_box((100, 80, 200, 190)) == (68, 53, 232, 217)  # half-side int(55 * 1.5)


def test_without_the_vae_preparation_says_models_missing(head, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AVATAR_MUSETALK_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(PreparationError) as excinfo:
        prepare_avatar_package(head.path, avatar_id="m", model="musetalk", out_dir=tmp_path / "o")
    assert excinfo.value.code == "models_missing"
    assert "sd-vae" in excinfo.value.message and "Traceback" not in excinfo.value.message
    assert not list((tmp_path / "o").iterdir())


# -- published files -----------------------------------------------------------------------


def test_published_configs_give_the_published_key_layouts() -> None:
    """The published configs, built without memory (meta tensors): the shapes MuseTalk's
    files have. unet.pth holds exactly UNet2DConditionModel's keys for musetalk.json."""
    import torch

    from renderers.musetalk.networks import build_unet, build_vae, build_whisper_encoder
    from tests.musetalk_fixtures import PUBLISHED_UNET, PUBLISHED_VAE, PUBLISHED_WHISPER

    with torch.device("meta"):
        unet = build_unet(dict(PUBLISHED_UNET)).state_dict()
        vae = build_vae(dict(PUBLISHED_VAE)).state_dict()
        whisper = build_whisper_encoder(dict(PUBLISHED_WHISPER)).state_dict()
    assert unet["conv_in.weight"].shape == (320, 8, 3, 3)  # 8 channels: masked + reference
    assert unet["conv_out.weight"].shape == (4, 320, 3, 3)
    assert unet["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape == (
        320,
        384,
    )
    assert unet["mid_block.attentions.0.transformer_blocks.0.attn2.to_v.weight"].shape == (
        1280,
        384,
    )
    assert not any(k.startswith("down_blocks.3.attentions") for k in unet)  # DownBlock2D
    params = sum(t.numel() for t in unet.values())
    assert 7.5e8 < params < 9.5e8, params  # Stable Diffusion 1.x's UNet, narrower cross-attention
    assert vae["encoder.conv_in.weight"].shape == (128, 3, 3, 3)
    assert vae["quant_conv.weight"].shape == (8, 8, 1, 1)
    assert vae["decoder.conv_out.weight"].shape == (3, 128, 3, 3)
    assert "encoder.mid_block.attentions.0.to_q.weight" in vae
    assert whisper["conv1.weight"].shape == (384, 80, 3)
    assert whisper["embed_positions.weight"].shape == (1500, 384)
    assert max(int(k.split(".")[1]) for k in whisper if k.startswith("layers.")) == 3


def test_small_files_in_the_published_layouts_load_strictly(models: Path, tmp_path: Path) -> None:
    import torch

    from renderers.musetalk.networks import (
        MuseTalkNetworks,
        load_unet,
        load_vae,
        load_whisper_encoder,
    )

    vae_bin = torch.load(models / "sd-vae" / "diffusion_pytorch_model.bin", weights_only=True)
    assert "encoder.mid_block.attentions.0.query.weight" in vae_bin  # diffusers 0.4's names
    whisper_bin = torch.load(models / "whisper" / "pytorch_model.bin", weights_only=True)
    assert (
        any(k.startswith("model.decoder.") for k in whisper_bin)
        and "proj_out.weight" in whisper_bin
    )
    vae = load_vae(
        models / "sd-vae" / "config.json", models / "sd-vae" / "diffusion_pytorch_model.bin"
    )
    assert torch.equal(
        vae.state_dict()["encoder.mid_block.attentions.0.to_q.weight"],
        vae_bin["encoder.mid_block.attentions.0.query.weight"],
    )
    load_whisper_encoder(
        models / "whisper" / "config.json", models / "whisper" / "pytorch_model.bin"
    )
    networks = MuseTalkNetworks.load(models, device="cpu", fp16=False)
    assert networks.layers == 3 and networks.feature_dim == 32
    # A file that is not the config's network is refused, saying which and why.
    state = torch.load(models / "musetalkV15" / "unet.pth", weights_only=True)
    state.pop("conv_in.weight")
    torch.save(state, tmp_path / "unet.pth")
    with pytest.raises(RendererError) as excinfo:
        load_unet(models / "musetalkV15" / "musetalk.json", tmp_path / "unet.pth")
    assert excinfo.value.code == "invalid_checkpoint" and "conv_in.weight" in excinfo.value.message
    (tmp_path / "bad.bin").write_bytes(b"not a pickle")
    with pytest.raises(RendererError) as excinfo:
        load_vae(models / "sd-vae" / "config.json", tmp_path / "bad.bin")
    assert excinfo.value.code == "invalid_checkpoint"


def test_settings_name_what_is_missing(models: Path, tmp_path: Path) -> None:
    assert "AVATAR_MUSETALK_DIR" in (MuseTalkSettings().missing() or "")
    assert MuseTalkSettings(models_dir=models).missing() is None
    assert MuseTalkSettings(models_dir=models).checkpoints()["complete"] is True
    assert "sd-vae/config.json is missing" in (
        MuseTalkSettings(models_dir=tmp_path).missing() or ""
    )
    (tmp_path / "sd-vae").mkdir()
    for name in ("config.json", "diffusion_pytorch_model.bin"):
        (tmp_path / "sd-vae" / name).write_bytes((models / "sd-vae" / name).read_bytes())
    only_vae = MuseTalkSettings(models_dir=tmp_path)
    assert only_vae.missing(vae_only=True) is None  # enough to prepare
    assert "musetalkV15/unet.pth is missing" in (only_vae.missing() or "")  # not to render
    with pytest.raises(RendererError) as excinfo:
        MuseTalkSettings.from_env({"AVATAR_MUSETALK_BATCH": "0"})
    assert excinfo.value.code == "invalid_config"


# -- audio ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_each_frame_gets_musetalks_audio_window(fps: float) -> None:
    """With an 'encoder' whose feature p is the number p, frame k's tokens are the positions
    MuseTalk's get_whisper_chunk picks: floor(k * 50 / fps) in the 4-zero-padded array."""
    layers, width = 2, 3

    def encode(mel: np.ndarray) -> np.ndarray:
        return np.repeat(np.arange(1, 1501, dtype=np.float32)[:, None, None], layers, 1).repeat(
            width, 2
        )

    stream = tokens.UtteranceFeatures(1, mel=lambda a: a, encode=encode, layers=layers, width=width)
    stream.feed(np.zeros(16000, dtype=np.float32), 0)  # one second heard: positions 0..49
    frames = [0, 1, 2, 7, 23]
    out = stream.tokens(frames, fps).reshape(len(frames), tokens.WINDOW, layers, width)
    for row, k in enumerate(frames):
        start = int(np.floor(k * 50 / fps)) - 4
        want = [p + 1 if 0 <= p < 50 else 0 for p in range(start, start + tokens.WINDOW)]
        assert out[row, :, 0, 0].tolist() == want, k
    assert stream.encoder_runs == 1
    assert tokens.lookahead_seconds(25.0) == pytest.approx(0.12)


def test_the_log_mel_matches_whispers_padded_one() -> None:
    from transformers import WhisperFeatureExtractor

    audio = (np.random.default_rng(0).standard_normal(16000 * 2) * 0.1).astype(np.float32)
    ref = WhisperFeatureExtractor(feature_size=80)(audio, sampling_rate=16000, return_tensors="np")
    ours = tokens.FeatureExtractor(80)(audio)
    diff = np.abs(ours - ref["input_features"][0]).max(axis=0)
    assert ours.shape == (80, 3000)
    assert np.flatnonzero(diff > 1e-3).tolist() in ([], [199], [199, 200], [199, 200, 201])


# -- the renderer --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def renderer(prepared, env):
    from renderers.musetalk.renderer import MuseTalkRenderer

    r = MuseTalkRenderer(VideoFormat(WIDTH, HEIGHT, 25.0))
    r.load(prepared[0].package)
    yield r
    r.close()


def _speech(
    renderer, frames: range, segment: int = 1, amplitude: float = 0.3
) -> list[FrameRequest]:
    rate, per = 16000, 16000 // 25
    look = int(renderer.capabilities.lookahead_s * rate) + 1
    t = np.arange(rate * 4) / rate
    audio = (
        amplitude * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    ).astype(np.float32)
    return [
        FrameRequest(
            index=100 + k,
            audio=audio[k * per : (k + 1) * per + look],
            window_offset=0,
            window_length=per,
            speech_position=k * per,
            segment=segment,
            segment_position=k * per,
        )  # fmt: skip
        for k in frames
    ]


def test_the_renderer_registered_and_loading_a_package(renderer, prepared, tmp_path) -> None:
    import renderers
    from avatar_runtime import AvatarCatalog
    from control_api.jobs.storage import install_package

    assert "musetalk" in renderers.available()
    assert renderers.registry.unavailable_reason("musetalk") is None  # AVATAR_MUSETALK_DIR set
    avatar = renderer._avatar
    assert avatar.num_frames == prepared[0].num_frames
    assert avatar.frames.shape[1:] == (HEIGHT, WIDTH, 3)
    # The package as a directory, and by avatar id from the local store, load alike.
    installed = install_package(prepared[0].package, tmp_path / "avatars", "muse-1")
    found = AvatarCatalog(tmp_path / "avatars").resolve("muse-1")
    assert found is not None and Path(found) == installed.resolve()
    from renderers.musetalk.package import load_package

    again = load_package(Path(found), WIDTH, HEIGHT, max_frames=5)
    assert np.array_equal(again.frames, avatar.frames[:5]) and np.array_equal(
        again.latents, avatar.latents[:5]
    )
    # Not a package: said plainly.
    (tmp_path / "empty").mkdir()
    with pytest.raises(RendererError) as excinfo:
        renderer.load(tmp_path / "empty")
    assert excinfo.value.code == "invalid_package" and "mask_coords.pkl" in excinfo.value.message
    renderer.load(prepared[0].package)


def test_idle_frames_are_the_package_ping_pong_without_inference(renderer) -> None:
    avatar = renderer._avatar
    n = avatar.num_frames
    before = renderer.inferred_frames
    idle = [
        FrameRequest(index=i, audio=None, window_offset=0, window_length=640, speech_position=0)
        for i in range(2 * n)
    ]
    frames = renderer.render(idle)
    # forward, then backward without showing the turning frame twice, then forward again
    expected = {
        0: 0,
        1: 1,
        n - 1: n - 1,
        n: n - 2,
        n + 1: n - 3,
        2 * n - 3: 1,
        2 * n - 2: 0,
        2 * n - 1: 1,
    }
    for i, shown in expected.items():
        assert np.array_equal(frames[i][..., :3], avatar.frames[shown]), i
    assert renderer.inferred_frames == before


def test_speech_redraws_the_lower_face_only_and_silence_skips(renderer) -> None:
    avatar = renderer._avatar
    renderer.reset()
    before = renderer.inferred_frames
    requests = _speech(renderer, range(4))
    frames = renderer.render(requests)
    assert renderer.inferred_frames == before + 4
    for request, frame in zip(requests, frames, strict=True):
        shown = avatar.frame_for(request.index)
        original = avatar.frames[shown]
        changed = np.abs(frame[..., :3].astype(int) - original).sum(-1) > 0
        ys, xs = np.nonzero(changed)
        assert ys.size > 50, "the face was not redrawn"
        x0, y0, x1, y1 = avatar.boxes[shown]
        assert xs.min() >= x0 - 1 and xs.max() <= x1 + 1 and ys.max() <= y1 + 1
        assert ys.min() >= (y0 + y1) / 2 - 0.1 * (y1 - y0), "above the lower face"
    # Silence: fed, not inferred: the avatar's own frames.
    quiet = _speech(renderer, range(4, 6), amplitude=0.0)
    frames = renderer.render(quiet)
    assert renderer.inferred_frames == before + 4
    for request, frame in zip(quiet, frames, strict=True):
        assert np.array_equal(frame[..., :3], avatar.frames[avatar.frame_for(request.index)])
    # An interruption drops the utterance; the next one starts afresh.
    renderer.reset()
    assert renderer._utterance is None
    renderer.render(_speech(renderer, range(2), segment=2))
    assert renderer._utterance.segment == 2 and renderer.inferred_frames == before + 6


def test_a_package_that_is_not_musetalks_is_refused(prepared, tmp_path) -> None:
    from renderers.musetalk.package import load_package

    root = prepared[1]
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("coords.pkl", "mask_coords.pkl", "latents.pt"):
        (bad / name).write_bytes((root / name).read_bytes())
    (bad / "full_imgs").mkdir()
    (bad / "mask").mkdir()
    for i in range(2):
        (bad / "full_imgs" / f"{i:08d}.png").write_bytes(
            (root / "full_imgs" / f"{i:08d}.png").read_bytes()
        )
        (bad / "mask" / f"{i:08d}.png").write_bytes((root / "mask" / f"{i:08d}.png").read_bytes())
    assert load_package(bad, WIDTH, HEIGHT, max_frames=10).num_frames == 2

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (bad / "coords.pkl").write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(RendererError) as excinfo:
        load_package(bad, WIDTH, HEIGHT, max_frames=10)
    assert excinfo.value.code == "invalid_package" and "coords.pkl" in excinfo.value.message
    (bad / "coords.pkl").write_bytes((root / "coords.pkl").read_bytes())
    buffer = io.BytesIO()
    import torch

    torch.save([torch.zeros(1, 4, 32, 32)], buffer)
    (bad / "latents.pt").write_bytes(buffer.getvalue())
    with pytest.raises(RendererError) as excinfo:
        load_package(bad, WIDTH, HEIGHT, max_frames=10)
    assert excinfo.value.code == "invalid_package" and "latents.pt" in excinfo.value.message
