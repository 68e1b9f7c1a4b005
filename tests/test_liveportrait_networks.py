"""LivePortrait's networks, their checkpoint loader and the keypoint arithmetic.

The published layouts are pinned by facts taken from the official code (KwaiVGI/LivePortrait
src/modules, instantiated with src/config/models.yaml): each network's key count, a sha256
over its sorted "key shape" lines, spot shapes and the exact parameter totals of LivePortrait's
speed.md. The loader is exercised on random weights written in both distributed layouts."""

from __future__ import annotations

import hashlib
import pickle
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from renderers.liveportrait.keypoint_math import (
    bins_to_degrees,
    rotation_matrix,
    transform_keypoints,
)

torch = pytest.importorskip("torch")

from renderers.base import RendererError  # noqa: E402
from renderers.liveportrait.checkpoint import (  # noqa: E402
    LAYOUT_FILES,
    CheckpointError,
    LoadedNetworks,
    load_networks,
    locate,
)
from renderers.liveportrait.networks import motion as motion_net  # noqa: E402
from renderers.liveportrait.networks.sizes import PUBLISHED, SMALL  # noqa: E402
from renderers.liveportrait.random_weights import (  # noqa: E402
    checkpoint_payloads,
    random_networks,
)

pytest_plugins = ["tests.liveportrait_fixtures"]

PUBLISHED_TABLES = {
    # network: (keys, sha256[:16] of the sorted "key (shape)" lines, parameters)
    "appearance": (107, "5a2525ccfd90d4e4", 836_224),
    "motion": (212, "ceb96aee9b5f2753", 28_118_728),
    "warp": (97, "2630a8a2c224367a", 45_529_829),
    "decoder": (182, "21766d4dbdb9ce89", 55_365_388),
    "stitching": (8, "4c067e8fcbd4a0f9", None),
    "lip": (8, "5b96c46260c5fa51", None),
    "eye": (12, "06dd035fe371ae6b", None),
}
MLP_PARAMETERS = 227_263
SPOT_SHAPES = {
    "appearance": {
        "first.norm.num_batches_tracked": (),
        "down_blocks.1.conv.weight": (256, 128, 3, 3),
        "second.weight": (512, 256, 1, 1),
        "resblocks_3d.3dr5.conv2.weight": (32, 32, 3, 3, 3),
    },
    "motion": {
        "detector.downsample_layers.0.0.weight": (96, 3, 4, 4),
        "detector.stages.2.8.grn.gamma": (1, 1, 1, 1536),
        "detector.stages.3.2.pwconv1.weight": (3072, 768),
        "detector.fc_kp.weight": (63, 768),
        "detector.fc_pitch.weight": (66, 768),
    },
    "warp": {
        "dense_motion_network.mask.weight": (22, 142, 7, 7, 7),
        "dense_motion_network.occlusion.weight": (1, 2272, 7, 7),
        "dense_motion_network.hourglass.encoder.down_blocks.4.conv.weight": (1024, 512, 3, 3, 3),
        "dense_motion_network.compress.weight": (4, 32, 1, 1, 1),
        "third.conv.weight": (256, 512, 3, 3),
    },
    "decoder": {
        "fc.weight": (512, 256, 3, 3),
        "up_0.conv_s.weight_orig": (256, 512, 1, 1),
        "up_0.conv_s.weight_u": (256,),
        "up_0.conv_s.weight_v": (512,),
        "up_1.conv_1.weight_v": (576,),
        "conv_img.0.weight": (12, 64, 3, 3),
    },
}


def fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    text = "".join(f"{key} {tuple(value.shape)}\n" for key, value in sorted(state.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def published() -> dict[str, torch.nn.Module]:
    """Random networks at the published sizes (drawn once: 130 M parameters)."""
    return random_networks(seed=1, sizes="published")


# -- the published layouts -------------------------------------------------------------------


def test_published_networks_have_the_released_keys_shapes_and_parameter_counts(
    published: dict[str, torch.nn.Module],
) -> None:
    for network, (count, digest, parameters) in PUBLISHED_TABLES.items():
        state = published[network].state_dict()
        assert len(state) == count, network
        assert fingerprint(state) == digest, network
        if parameters is not None:
            assert sum(p.numel() for p in published[network].parameters()) == parameters
        for key, shape in SPOT_SHAPES.get(network, {}).items():
            assert tuple(state[key].shape) == shape, key
    mlps = sum(
        p.numel() for name in ("stitching", "lip", "eye") for p in published[name].parameters()
    )
    assert mlps == MLP_PARAMETERS
    decoder = published["decoder"].state_dict()
    spectral = [key for key in decoder if key.endswith("weight_orig")]
    assert len(spectral) == 18  # every residual conv; conv_s of up_0/up_1 without bias
    assert not any(
        key.endswith(".weight") and key.replace("weight", "weight_orig") in decoder
        for key in decoder
    )
    assert "up_0.conv_s.bias" not in decoder and "up_1.conv_s.bias" not in decoder
    assert "dense_motion_network.mask.bias" in published["warp"].state_dict()


@pytest.mark.parametrize("layout", ["liveportrait", "ditto"])
def test_random_checkpoint_files_follow_each_published_layout(
    layout: str, published: dict[str, torch.nn.Module]
) -> None:
    payloads = checkpoint_payloads(layout, networks=published)  # type: ignore[arg-type]
    names = LAYOUT_FILES[layout]
    assert set(payloads) == set(names.values())
    for network in ("appearance", "motion", "warp", "decoder"):
        state = payloads[names[network]]
        assert isinstance(state, Mapping)
        assert fingerprint(state) == PUBLISHED_TABLES[network][1]
    stitching = payloads[names["stitching"]]
    assert isinstance(stitching, Mapping)
    assert set(stitching) == {"retarget_shoulder", "retarget_mouth", "retarget_eye"}
    for key, network in (
        ("retarget_shoulder", "stitching"),
        ("retarget_mouth", "lip"),
        ("retarget_eye", "eye"),
    ):
        state = stitching[key]
        assert all(name.startswith("module.mlp.") for name in state)  # the DDP prefix
        stripped = {name.removeprefix("module."): value for name, value in state.items()}
        assert fingerprint(stripped) == PUBLISHED_TABLES[network][1]


def test_published_size_checkpoint_writes_and_loads_strictly(
    tmp_path: Path, published: dict[str, torch.nn.Module]
) -> None:
    from renderers.liveportrait.random_weights import write_random_checkpoints

    root = write_random_checkpoints(
        tmp_path / "pretrained_weights" / "liveportrait", "liveportrait", networks=published
    )
    try:
        networks = load_networks(tmp_path / "pretrained_weights")  # the parent is accepted
        assert networks.sizes == PUBLISHED and networks.files.layout == "liveportrait"
        assert networks.has_lip_retargeting and networks.has_eye_retargeting
        loaded = networks.decoder.state_dict()
        for key, value in published["decoder"].state_dict().items():
            assert torch.equal(loaded[key], value), key
    finally:
        shutil.rmtree(root)  # 500 MB


# -- loading the random sets -----------------------------------------------------------------


def same_weights(a: LoadedNetworks, b: LoadedNetworks) -> bool:
    for name in ("appearance", "motion", "warp", "decoder", "stitching", "lip", "eye"):
        first, second = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        if first.keys() != second.keys():
            return False
        if not all(torch.equal(first[key], second[key]) for key in first):
            return False
    return True


def test_both_layouts_load_the_same_small_weights(
    liveportrait_dir: Path, liveportrait_ditto_dir: Path
) -> None:
    ours, ditto = load_networks(liveportrait_dir), load_networks(liveportrait_ditto_dir)
    assert (ours.files.layout, ditto.files.layout) == ("liveportrait", "ditto")
    assert ours.sizes == SMALL == ditto.sizes
    assert same_weights(ours, ditto)
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        feature = ours.appearance(image)
        kp = ours.motion(image)["kp"].view(1, 21, 3)
        picture = ours.decoder(ours.warp(feature, kp, kp * 1.01))
    assert picture.shape == (1, 3, 512, 512) and torch.isfinite(picture).all()
    # random weights still paint a picture with contrast, not a saturated sheet
    assert float(picture.std()) > 0.05 and 0.2 < float(picture.mean()) < 0.8


def test_the_folder_above_each_layout_is_accepted(
    liveportrait_dir: Path, liveportrait_ditto_dir: Path
) -> None:
    assert locate(liveportrait_dir.parent).root == liveportrait_dir
    assert locate(liveportrait_ditto_dir.parent).root == liveportrait_ditto_dir
    assert locate(liveportrait_ditto_dir).layout == "ditto"


def copy_set(source: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(source, tmp_path / source.name))


def test_a_missing_file_is_checkpoint_not_found_naming_it(
    liveportrait_dir: Path, tmp_path: Path
) -> None:
    root = copy_set(liveportrait_dir, tmp_path)
    (root / "base_models" / "spade_generator.pth").unlink()
    with pytest.raises(CheckpointError) as caught:
        load_networks(root)
    assert caught.value.code == "checkpoint_not_found"
    assert "base_models/spade_generator.pth not found" in caught.value.message
    assert str(tmp_path) not in caught.value.message  # no local paths in messages


def test_an_empty_directory_says_what_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as caught:
        locate(tmp_path)
    message = caught.value.message
    assert caught.value.code == "checkpoint_not_found"
    assert "base_models/appearance_feature_extractor.pth" in message
    assert "warp_network.pth" in message and "stitch_network.pth" in message
    with pytest.raises(CheckpointError, match="does not exist") as missing:
        locate(tmp_path / "nowhere")
    assert missing.value.code == "checkpoint_not_found"


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: b"not a checkpoint\n" * 10, id="text"),
    ],
)
def test_an_unreadable_file_is_invalid_checkpoint_naming_it(
    liveportrait_ditto_dir: Path, tmp_path: Path, damage
) -> None:  # type: ignore[no-untyped-def]
    root = copy_set(liveportrait_ditto_dir, tmp_path)
    path = root / "warp_network.pth"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError) as caught:
        load_networks(root)
    assert caught.value.code == "invalid_checkpoint"
    message = caught.value.message
    assert message.startswith("warp_network.pth is not a readable torch checkpoint")
    assert "Error" not in message and "Traceback" not in message


def test_pickled_objects_are_refused_not_run(liveportrait_dir: Path, tmp_path: Path) -> None:
    root = copy_set(liveportrait_dir, tmp_path)
    torch.save({"config": Path("x")}, root / "base_models" / "motion_extractor.pth")
    with pytest.raises(CheckpointError, match="holds Python objects") as caught:
        load_networks(root)
    assert caught.value.code == "invalid_checkpoint"
    assert "base_models/motion_extractor.pth" in caught.value.message


def rewrite(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    state = dict(torch.load(path, weights_only=True))
    change(state)
    torch.save(state, path)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda s: s.pop("dense_motion_network.mask.weight"),
            "1 missing key: dense_motion_network.mask.weight",
        ),
        (
            lambda s: s.__setitem__("extra.weight", torch.zeros(2)),
            "1 unexpected key: extra.weight",
        ),
        (
            lambda s: s.__setitem__("fourth.bias", torch.zeros(7)),
            "1 wrong shape: fourth.bias [7] (expected [16])",
        ),
        (
            lambda s: [s.pop(k) for k in sorted(s) if k.startswith("third.")],
            "missing keys: third.conv.bias, third.conv.weight, third.norm.bias, "
            "third.norm.running_mean, ... (2 more)",
        ),
    ],
    ids=["missing", "unexpected", "wrong-shape", "many-missing"],
)
def test_a_wrong_layout_names_the_file_and_the_keys(
    liveportrait_dir: Path, tmp_path: Path, change, expected: str
) -> None:  # type: ignore[no-untyped-def]
    root = copy_set(liveportrait_dir, tmp_path)
    rewrite(root / "base_models" / "warping_module.pth", change)
    with pytest.raises(CheckpointError) as caught:
        load_networks(root)
    assert caught.value.code == "invalid_checkpoint"
    message = caught.value.message
    assert message.startswith(
        "base_models/warping_module.pth does not match the LivePortrait warping module layout"
    )
    assert expected in message


def test_a_wrong_retargeting_entry_names_the_entry(liveportrait_dir: Path, tmp_path: Path) -> None:
    root = copy_set(liveportrait_dir, tmp_path)
    path = root / "retargeting_models" / "stitching_retargeting_module.pth"
    state = torch.load(path, weights_only=True)
    state["retarget_eye"]["module.mlp.0.weight"] = torch.zeros(3, 3)
    torch.save(state, path)
    with pytest.raises(CheckpointError) as caught:
        load_networks(root)
    assert "stitching_retargeting_module.pth [retarget_eye]" in caught.value.message
    assert "1 wrong shape: mlp.0.weight [3, 3] (expected [256, 66])" in caught.value.message

    torch.save({"retarget_mouth": state["retarget_mouth"]}, path)
    with pytest.raises(CheckpointError, match="no 'retarget_shoulder' entry"):
        load_networks(root)


def test_ditto_stitch_files_load_what_they_hold(
    liveportrait_ditto_dir: Path, tmp_path: Path
) -> None:
    root = copy_set(liveportrait_ditto_dir, tmp_path)
    path = root / "stitch_network.pth"
    full = torch.load(path, weights_only=True)
    # extra entries beside the three MLPs are ignored
    torch.save({**full, "optimizer_like": {"step": torch.tensor(3)}}, path)
    networks = load_networks(root)
    assert networks.has_lip_retargeting and networks.has_eye_retargeting
    # only the stitching MLP, as Ditto itself reads: the others are reported absent
    torch.save({"retarget_shoulder": full["retarget_shoulder"]}, path)
    networks = load_networks(root)
    assert networks.lip is None and networks.eye is None
    assert not networks.has_lip_retargeting and not networks.has_eye_retargeting


def test_loading_depends_on_neither_metadata_nor_prefixes_nor_step_counters(
    liveportrait_dir: Path, tmp_path: Path
) -> None:
    root = copy_set(liveportrait_dir, tmp_path)
    path = root / "base_models" / "spade_generator.pth"
    state = torch.load(path, weights_only=True)
    assert hasattr(state, "_metadata")  # torch.save of a state_dict keeps it ...
    plain = {f"module.{key}": value.clone() for key, value in state.items()}  # ... this has none
    torch.save(plain, path)
    appearance = root / "base_models" / "appearance_feature_extractor.pth"
    rewrite(appearance, lambda s: [s.pop(k) for k in list(s) if k.endswith("num_batches_tracked")])
    assert same_weights(load_networks(root), load_networks(liveportrait_dir))


def test_messages_are_plain_renderer_errors(liveportrait_dir: Path, tmp_path: Path) -> None:
    root = copy_set(liveportrait_dir, tmp_path)
    (root / "base_models" / "motion_extractor.pth").write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(RendererError) as caught:
        load_networks(root)
    assert caught.value.code == "invalid_checkpoint"
    assert "pickle" not in caught.value.message.lower()


# -- pieces of the networks ------------------------------------------------------------------


def test_spectral_norm_vectors_make_the_largest_singular_value_about_one() -> None:
    from renderers.liveportrait.networks.blocks import SpectralConv2d

    decoder = random_networks(seed=2, sizes="small")["decoder"]
    convs = [m for m in decoder.modules() if isinstance(m, SpectralConv2d)]
    assert len(convs) == 18
    for conv in convs:
        weight = conv.normalized_weight().detach().flatten(1)
        assert abs(float(torch.linalg.matrix_norm(weight, ord=2)) - 1.0) < 0.02


def test_pose_bins_read_as_degrees_like_liveportrait() -> None:
    logits = np.zeros((3, 66), np.float32)
    logits[1, 0] = logits[2, 65] = 50.0  # all the mass on the first / the last bin
    expected = [0.0, -97.5, 97.5]  # uniform: bin 32.5 -> 32.5 * 3 - 97.5
    assert np.allclose(bins_to_degrees(logits), expected, atol=1e-3)
    in_torch = motion_net.bins_to_degrees(torch.from_numpy(logits)).numpy()
    assert np.allclose(in_torch, expected, atol=1e-3)


# -- keypoint arithmetic ---------------------------------------------------------------------


def test_rotation_matrix_is_the_transposed_z_y_x_product() -> None:
    cases = {
        (0.0, 0.0, 0.0): [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        (90.0, 0.0, 0.0): [[1, 0, 0], [0, 0, 1], [0, -1, 0]],  # Rx(90)^T
        (0.0, 90.0, 0.0): [[0, 0, -1], [0, 1, 0], [1, 0, 0]],  # Ry(90)^T
        (0.0, 0.0, 90.0): [[0, 1, 0], [-1, 0, 0], [0, 0, 1]],  # Rz(90)^T
        (90.0, 90.0, 0.0): [[0, 0, -1], [1, 0, 0], [0, -1, 0]],  # (Ry(90) Rx(90))^T
    }
    pitch, yaw, roll = (np.array(values, np.float32) for values in zip(*cases, strict=True))
    got = rotation_matrix(pitch, yaw, roll)
    assert got.shape == (5, 3, 3) and got.dtype == np.float32
    assert np.allclose(got, np.array(list(cases.values()), np.float32), atol=1e-6)
    # (B, 1) inputs, as LivePortrait keeps them, give the same
    assert np.allclose(rotation_matrix(pitch[:, None], yaw[:, None], roll[:, None]), got)
    # a half-angle case against the elementwise definition: Rx(30)^T
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    assert np.allclose(rotation_matrix([30.0], [0.0], [0.0])[0], [[1, 0, 0], [0, c, s], [0, -s, c]])


def test_transform_keypoints_scales_rotates_adds_exp_and_shifts_only_x_y() -> None:
    kp = np.zeros((1, 21, 3), np.float32)
    kp[0, 0] = [1.0, 0.0, 0.0]
    kp[0, 1] = [0.0, 2.0, 0.5]
    exp = np.zeros((1, 21, 3), np.float32)
    exp[0, 0] = [0.1, 0.0, 0.0]
    rotation = rotation_matrix([0.0], [90.0], [0.0])  # row vectors: [x, y, z] @ Ry(90)^T
    out = transform_keypoints(kp, rotation, exp, np.float32([[2.0]]), np.float32([[0.5, 0.25, 9]]))
    # kp0: [1,0,0] @ R = [0,0,-1]; + exp = [0.1,0,-1]; x2 = [0.2,0,-2]; + (tx,ty,0)
    assert np.allclose(out[0, 0], [0.7, 0.25, -2.0], atol=1e-6)
    # kp1: [0,2,0.5] @ R = [0.5,2,0]; x2 = [1,4,0]; + (tx,ty,0)
    assert np.allclose(out[0, 1], [1.5, 4.25, 0.0], atol=1e-6)
    # the rest: 0 @ R + 0, scaled, shifted: tz (9) never applies
    assert np.allclose(out[0, 2:], [0.5, 0.25, 0.0])
    # flat (B, 63) exp and (B,) scale are accepted too
    assert np.allclose(
        transform_keypoints(kp, rotation, exp.reshape(1, 63), np.float32([2.0]), [[0.5, 0.25, 9]]),
        out,
    )
