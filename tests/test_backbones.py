"""Backbones: architecture, offline ImageNet weights, checkpoint loading and its errors."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from apc_edge.export.backbones import (
    BACKBONE_NAMES,
    BackboneError,
    FeatureBackbone,
    build_backbone,
    offline_weights_path,
)
from apc_edge.export.backbones import efficientnet as effnet
from apc_edge.export.backbones import mobilenet

OFFLINE = ("mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
EXPECTED_CHANNELS = {
    "mobilenet_v2": (16, 24, 32, 96),
    "efficientnet_lite0": (16, 24, 40, 112),
    "efficientnet_lite1": (16, 24, 40, 112),
    "efficientnet_lite2": (16, 24, 48, 120),
    "resnet18": (64, 64, 128, 256),
    "resnet50": (64, 256, 512, 1024),
    "wide_resnet50_2": (64, 256, 512, 1024),
    "clip_rn50": (64, 256, 512, 1024),
    "clip_rn101": (64, 256, 512, 1024),
    "clip_rn50x4": (80, 320, 640, 1280),
    "clip_rn50x16": (96, 384, 768, 1536),
    "clip_rn50x64": (128, 512, 1024, 2048),
}
# the larger CLIP ResNets are built in one shape test only (hundreds of MB each)
LIGHT_NAMES = [n for n in BACKBONE_NAMES if n not in ("clip_rn101", "clip_rn50x4", "clip_rn50x16", "clip_rn50x64")]
MILITARY_UNIFORM = 652  # ImageNet class of the Grace Hopper portrait
SUIT, WINDSOR_TIE = 834, 906


class NotATensor:
    """A custom object: saving it makes a checkpoint that needs full unpickling."""


@pytest.fixture(scope="module")
def resnet50_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_backbone("resnet50", weights="random").state_dict()


def full_resnet50_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` plus layer4/fc tensors, as in a complete torchvision ResNet-50 file."""
    full = dict(state)
    full["layer4.0.conv1.weight"] = torch.randn(512, 1024, 1, 1)
    full["layer4.2.bn3.running_mean"] = torch.randn(2048)
    full["fc.weight"] = torch.randn(1000, 2048)
    full["fc.bias"] = torch.randn(1000)
    return full


def assert_same_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    got = module.state_dict()
    assert set(got) == set(state)
    for key, value in got.items():
        assert torch.equal(value, state[key]), key


# --- architecture ----------------------------------------------------------------------


def test_names_and_error_type():
    assert set(BACKBONE_NAMES) == set(EXPECTED_CHANNELS)
    assert issubclass(BackboneError, ValueError)


@pytest.mark.parametrize("name", [n for n in BACKBONE_NAMES if n not in ("clip_rn50x16", "clip_rn50x64")])
def test_random_backbone_stage_shapes(name):
    bb = build_backbone(name, weights="random").eval()
    assert isinstance(bb, FeatureBackbone)
    assert bb.name == name
    assert bb.stage_channels == EXPECTED_CHANNELS[name]
    assert bb.stage_strides == (2, 4, 8, 16)
    assert bb.default_levels == (2, 3)
    assert len(bb.input_mean) == len(bb.input_std) == 3
    assert all(0 < v < 1 for v in bb.input_mean + bb.input_std)
    with torch.no_grad():
        for height, width in ((224, 224), (97, 130)):
            feats = bb(torch.randn(1, 3, height, width))
            assert len(feats) == 4
            for f, channels, stride in zip(feats, bb.stage_channels, bb.stage_strides):
                assert tuple(f.shape) == (1, channels, math.ceil(height / stride), math.ceil(width / stride))
                assert torch.isfinite(f).all()


def test_state_dict_uses_reference_names_and_stops_at_stride_16():
    mb = build_backbone("mobilenet_v2", weights="random").state_dict()
    assert "features.3.conv.0.0.weight" in mb and "features.13.conv.3.running_var" in mb
    assert not any(k.startswith(("features.14.", "classifier.")) for k in mb)
    rn = build_backbone("resnet50", weights="random").state_dict()
    assert "layer2.0.conv1.weight" in rn and "layer3.5.bn3.running_var" in rn and "layer2.0.downsample.0.weight" in rn
    assert not any(k.startswith(("layer4.", "fc.")) for k in rn)
    wide = build_backbone("wide_resnet50_2", weights="random").state_dict()
    assert wide["layer1.0.conv2.weight"].shape == (128, 128, 3, 3)  # twice ResNet-50's inner width
    ef = build_backbone("efficientnet_lite0", weights="random").state_dict()
    assert "_blocks.10._project_conv.weight" in ef and "_blocks.0._depthwise_conv.weight" in ef
    assert not any(k.startswith(("_blocks.11.", "_conv_head.", "_fc.")) for k in ef)


@pytest.mark.parametrize("size", [224, 225, 15, 16])
@pytest.mark.parametrize("kernel", [3, 5])
def test_same_conv_pads_like_tensorflow(size, kernel):
    conv = effnet.SameConv2d(2, 4, kernel, stride=2)
    x = torch.randn(1, 2, size, size + 1)
    # TensorFlow SAME: total padding so that out = ceil(in / 2), the odd pixel after.
    pads = []
    for n in (size + 1, size):
        total = max((math.ceil(n / 2) - 1) * 2 + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    expected = F.conv2d(F.pad(x, pads), conv.weight, stride=2)
    assert torch.allclose(conv(x), expected, atol=1e-6)
    assert effnet.SameConv2d(2, 4, kernel)(x).shape[-2:] == x.shape[-2:]


# --- offline ImageNet weights ------------------------------------------------------------


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_weights_load_every_tensor(name):
    path = offline_weights_path(name)
    file_state = torch.load(path, map_location="cpu", weights_only=True)
    bb = build_backbone(name).eval()
    state = bb.state_dict()
    # every tensor of the built layers is in the file and was copied exactly (BN stats included)
    for key, value in state.items():
        assert torch.equal(value, file_state[key]), key
    # ... and every file tensor of the layers down to stride 16 is used
    unused = [k for k in file_state if k not in state and not bb.is_unbuilt_key(k)]
    assert all(k.startswith(("classifier.", "_conv_head.", "_bn1.", "_fc.")) for k in unused), unused
    assert bb.weights_source == str(path)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        loaded = bb(x)[-1]
        random = build_backbone(name, weights="random").eval()(x)[-1]
    assert not torch.allclose(loaded, random, atol=1e-2)


def _grace_hopper(size: int, mean, std) -> torch.Tensor:
    spec = importlib.util.find_spec("matplotlib")
    path = Path(spec.origin).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg" if spec else None
    if path is None or not path.is_file():
        pytest.skip("matplotlib's sample photo is not installed")
    cv2 = pytest.importorskip("cv2")
    rgb = cv2.imread(str(path))[:, :, ::-1]
    h, w = rgb.shape[:2]
    s = min(h, w)
    crop = np.ascontiguousarray(rgb[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s])
    img = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    img = (img - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(img.transpose(2, 0, 1).copy())[None]


def _mobilenet_v2_head(state) -> nn.Module:
    """features[14:19] + classifier of the full MobileNetV2, from the same file."""
    blocks = [mobilenet.InvertedResidual(96, 160, 2, 6)]
    blocks += [mobilenet.InvertedResidual(160, 160, 1, 6) for _ in range(2)]
    blocks += [mobilenet.InvertedResidual(160, 320, 1, 6), mobilenet.conv_bn_relu6(320, 1280, 1)]
    body = nn.Sequential(*blocks)
    body.load_state_dict(
        {f"{int(k.split('.')[1]) - 14}.{k.split('.', 2)[2]}": v for k, v in state.items()
         if k.startswith("features.") and int(k.split(".")[1]) >= 14}
    )
    fc = nn.Linear(1280, 1000)
    fc.load_state_dict({"weight": state["classifier.1.weight"], "bias": state["classifier.1.bias"]})
    return nn.Sequential(body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc)


# the EfficientNet-Lite stages after stride 16: (first block index, in channels, stages)
LITE_HEAD_STAGES = {
    "efficientnet_lite0": (11, 112, ((6, 5, 2, 192, 4), (6, 3, 1, 320, 1))),
    "efficientnet_lite1": (15, 112, ((6, 5, 2, 192, 5), (6, 3, 1, 320, 1))),
    "efficientnet_lite2": (15, 120, ((6, 5, 2, 208, 5), (6, 3, 1, 352, 1))),
}


def _efficientnet_lite_head(name: str, state) -> nn.Module:
    """The blocks after stride 16 + head conv/bn + _fc of the full EfficientNet-Lite, from the same file."""
    first, in_ch, stages = LITE_HEAD_STAGES[name]
    blocks = effnet.build_blocks(stages, in_ch=in_ch)
    blocks.load_state_dict(
        {f"{int(k.split('.')[1]) - first}.{k.split('.', 2)[2]}": v for k, v in state.items()
         if k.startswith("_blocks.") and int(k.split(".")[1]) >= first}
    )
    head = nn.Sequential(effnet.SameConv2d(stages[-1][3], 1280, 1), effnet.batch_norm(1280), nn.ReLU6())
    head.load_state_dict({"0.weight": state["_conv_head.weight"],
                          **{f"1.{k[5:]}": v for k, v in state.items() if k.startswith("_bn1.")}})
    fc = nn.Linear(1280, 1000)
    fc.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    return nn.Sequential(*blocks, head, nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc)


@pytest.mark.parametrize("name, make_head", [
    ("mobilenet_v2", _mobilenet_v2_head),
    *[(lite, lambda state, lite=lite: _efficientnet_lite_head(lite, state)) for lite in LITE_HEAD_STAGES],
])
def test_offline_weights_classify_a_photo(name, make_head):
    """The ImageNet classifier of the same file, stacked on our stride-16 output, recognises
    the photo: fails on wrong wiring, normalization, BN eps or padding convention."""
    bb = build_backbone(name).eval()
    head = make_head(torch.load(offline_weights_path(name), map_location="cpu", weights_only=True)).eval()
    x = _grace_hopper(224, bb.input_mean, bb.input_std)
    with torch.no_grad():
        probs = head(bb(x)[-1]).softmax(1)[0]
    if name == "efficientnet_lite2":
        # Lite2 (trained at 260) reads the 224 crop as the portrait's suit and tie: 834 suit 0.27,
        # 906 Windsor tie 0.24, 457 bow tie 0.18, the uniform next; wrong wiring gives no such ranking
        assert set(probs.topk(5).indices.tolist()) >= {MILITARY_UNIFORM, SUIT, WINDSOR_TIE}
        assert float(probs.max()) > 0.2
        return
    assert int(probs.argmax()) == MILITARY_UNIFORM
    assert float(probs[MILITARY_UNIFORM]) > 0.25


# --- checkpoint files ----------------------------------------------------------------------


@pytest.mark.parametrize("name", LIGHT_NAMES)
def test_saved_state_dict_round_trips(name, tmp_path):
    bb = build_backbone(name, weights="random").eval()
    path = tmp_path / f"{name}.pth"
    torch.save(bb.state_dict(), path)
    again = build_backbone(name, weights=path).eval()
    assert_same_state(again, bb.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(bb(x), again(x)))


def test_resnet50_full_torchvision_checkpoint_loads(resnet50_state, tmp_path):
    full = full_resnet50_state(resnet50_state)
    torch.save(full, tmp_path / "raw.pth")
    assert_same_state(build_backbone("resnet50", weights=str(tmp_path / "raw.pth")), resnet50_state)
    # training-style wrappers, and old files without the BN batch counters
    old = {k: v for k, v in full.items() if not k.endswith("num_batches_tracked")}
    torch.save({"epoch": 3, "model_state_dict": old, "optimizer": {"lr": 0.1}}, tmp_path / "train.pth")
    bb = build_backbone("resnet50", weights=tmp_path / "train.pth")
    assert all(torch.equal(bb.state_dict()[k], v) for k, v in old.items() if k in bb.state_dict())


def test_resnet50_moco_v3_checkpoint_loads_base_encoder(resnet50_state, tmp_path):
    full = full_resnet50_state(resnet50_state)
    del full["fc.weight"], full["fc.bias"]
    full["fc.0.weight"] = torch.randn(4096, 2048)  # MoCo v3 projector
    moco = {f"module.base_encoder.{k}": v for k, v in full.items()}
    moco.update({f"module.momentum_encoder.{k}": v + 1 for k, v in full.items() if v.is_floating_point()})
    moco["module.predictor.0.weight"] = torch.randn(4096, 256)
    torch.save({"epoch": 300, "arch": "resnet50", "state_dict": moco, "optimizer": {"state": {}}},
               tmp_path / "moco.pth.tar")
    bb = build_backbone("resnet50", weights=tmp_path / "moco.pth.tar")
    assert_same_state(bb, resnet50_state)


# --- errors ----------------------------------------------------------------------------------


def test_unknown_name_lists_known_ones():
    with pytest.raises(BackboneError) as err:
        build_backbone("vgg16", weights="random")
    assert "vgg16" in str(err.value)
    assert all(name in str(err.value) for name in BACKBONE_NAMES)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "wide_resnet50_2"])
def test_resnets_need_a_checkpoint_file(name):
    with pytest.raises(BackboneError, match=r"--weights FILE"):
        build_backbone(name)


def test_missing_and_unreadable_files(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(BackboneError, match="not found") as err:
        build_backbone("resnet18", weights=missing)
    assert str(missing) in str(err.value)
    text = tmp_path / "notes.txt"
    text.write_text("these are not weights\n")
    with pytest.raises(BackboneError, match="not a PyTorch checkpoint") as err:
        build_backbone("mobilenet_v2", weights=text)
    assert str(text) in str(err.value)
    with pytest.raises(BackboneError, match="not a file"):
        build_backbone("mobilenet_v2", weights=tmp_path)
    torch.save({"epoch": 1, "note": "no tensors"}, tmp_path / "empty.pth")
    with pytest.raises(BackboneError, match="no tensors found.*epoch"):
        build_backbone("mobilenet_v2", weights=tmp_path / "empty.pth")
    with pytest.raises(BackboneError, match="file path"):
        build_backbone("mobilenet_v2", weights=123)


def test_files_needing_pickle_are_refused(resnet50_state, tmp_path):
    path = tmp_path / "with_object.pth"
    torch.save({"state_dict": resnet50_state, "extra": NotATensor()}, path)
    with pytest.raises(BackboneError, match="unpickling.*NotATensor") as err:
        build_backbone("resnet50", weights=path)
    assert str(path) in str(err.value)
    whole_module = tmp_path / "module.pth"
    torch.save(nn.Linear(2, 2), whole_module)
    with pytest.raises(BackboneError, match="refusing"):
        build_backbone("resnet50", weights=whole_module)


def test_missing_keys_are_reported(resnet50_state, tmp_path):
    partial = {k: v for k, v in resnet50_state.items() if not k.startswith("layer3.5.")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(BackboneError, match=r"missing keys: layer3\.5\.conv1\.weight") as err:
        build_backbone("resnet50", weights=tmp_path / "partial.pth")
    assert str(tmp_path / "partial.pth") in str(err.value)
    # a checkpoint with foreign names says what its keys look like
    torch.save({f"encoder.{k}": v for k, v in resnet50_state.items()}, tmp_path / "foreign.pth")
    with pytest.raises(BackboneError, match=r"look like: encoder\.conv1\.weight"):
        build_backbone("resnet50", weights=tmp_path / "foreign.pth")


def test_wrong_shapes_and_other_architectures_are_reported(resnet50_state, tmp_path):
    bad = dict(resnet50_state)
    bad["layer2.0.conv2.weight"] = torch.randn(128, 128, 5, 5)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(BackboneError, match=r"shape mismatches: layer2\.0\.conv2\.weight \(128, 128, 5, 5\) vs \(128, 128, 3, 3\)"):
        build_backbone("resnet50", weights=tmp_path / "bad.pth")
    # ResNet-50 weights into Wide-ResNet-50-2: same names, other widths
    torch.save(resnet50_state, tmp_path / "r50.pth")
    with pytest.raises(BackboneError, match="shape mismatches"):
        build_backbone("wide_resnet50_2", weights=tmp_path / "r50.pth")
    # a deeper network of the same family (ResNet-101 has 23 blocks in layer3) is no partial match
    deeper = dict(resnet50_state, **{"layer3.6.conv1.weight": torch.randn(256, 1024, 1, 1)})
    torch.save(deeper, tmp_path / "deeper.pth")
    with pytest.raises(BackboneError, match=r"unexpected keys inside the built layers: layer3\.6\.conv1\.weight"):
        build_backbone("resnet50", weights=tmp_path / "deeper.pth")


@pytest.mark.parametrize("padding, edge, corner", [("zeros", 6 / 9, 4 / 9), ("valid", 1.0, 1.0)])
def test_patch_aggregation_padding_damps_the_border_only_with_zeros(padding, edge, corner):
    from apc_edge.export.embedder import PatchEmbedder

    backbone = build_backbone("mobilenet_v2", weights="random")
    stages = [torch.ones(1, c, 16 // s * 4, 16 // s * 4) for c, s in zip((16, 24, 32, 96), (1, 2, 4, 8))]
    for stage_norm, inside in (("none", 1.0), ("l2", 32 ** -0.5)):     # unit length: 32 channels of 32 ** -0.5
        embedder = PatchEmbedder(backbone, padding=padding, stage_norm=stage_norm)
        emb = embedder.aggregate(stages)[0, :32]                  # the stride-8 level's channels
        assert emb[:, 4, 4].mean().item() == pytest.approx(inside)
        assert emb[:, 0, 4].mean().item() == pytest.approx(inside * edge)
        assert emb[:, 0, 0].mean().item() == pytest.approx(inside * corner)


def test_stage_norm_compares_patches_by_pattern_not_strength():
    """With ``stage_norm="l2"`` a level's activations scaled by any factor, per cell, give the same patches;
    raw averaging keeps the factor. A wrong axis (normalizing over space) or a norm after the averaging fails."""
    from apc_edge.export.embedder import PatchEmbedder

    backbone = build_backbone("mobilenet_v2", weights="random")
    g = torch.Generator().manual_seed(0)
    stages = [torch.rand(1, c, 16 // s * 4, 16 // s * 4, generator=g) for c, s in zip((16, 24, 32, 96), (1, 2, 4, 8))]
    strength = 0.1 + 10 * torch.rand(1, 1, *stages[2].shape[-2:], generator=g)   # a different factor per cell
    brighter = stages[:2] + [stages[2] * strength, stages[3] * 3.0]
    unit = PatchEmbedder(backbone, stage_norm="l2")
    assert torch.allclose(unit.aggregate(brighter), unit.aggregate(stages), atol=1e-5)
    raw = PatchEmbedder(backbone, stage_norm="none")
    assert not torch.allclose(raw.aggregate(brighter), raw.aggregate(stages), atol=1e-3)
    # each cell's stride-8 vector has unit length before the 3x3 average: no patch is longer than 1
    norms = unit.aggregate(stages)[0, :32].norm(dim=0)
    assert float(norms.max()) <= 1.0 + 1e-5 and float(norms[0, 0]) <= 4 / 9 + 1e-5    # a corner: 4 of 9 cells
    with pytest.raises(ValueError, match="stage norm"):
        PatchEmbedder(backbone, stage_norm="l1")


def test_soft_stage_norm_keeps_weak_cells_strength_and_evens_out_strong_ones():
    """``"soft"``: v / sqrt(|v|^2 + c^2) with c each level's median cell norm on training images. A cell
    at the floor comes out at 1/sqrt(2) of unit length; cells far above it behave as under ``"l2"``, cells
    far below keep their size in proportion; without floors it refuses rather than guess."""
    from apc_edge.export.embedder import PatchEmbedder

    backbone = build_backbone("mobilenet_v2", weights="random").eval()
    soft = PatchEmbedder(backbone, stage_norm="soft", patch_size=1)     # 1x1: the cells themselves
    with pytest.raises(ValueError, match="needs its floors"):
        soft(torch.rand(1, 3, 64, 64))
    images = torch.rand(2, 3, 64, 64)
    floors = soft.measure_floors(images)
    stages = backbone(images)
    assert floors == pytest.approx([float(stages[i].norm(dim=1).median()) for i in soft.levels], abs=1e-6)
    # a cell exactly at its level's floor
    at_floor = [s.clone() for s in stages]
    direction = torch.rand(stages[2].shape[1])
    at_floor[2][0, :, 0, 0] = direction / direction.norm() * floors[0]
    assert soft.aggregate(at_floor)[0, :32, 0, 0].norm().item() == pytest.approx(2 ** -0.5, rel=1e-4)
    soft.set_floors([1.0, 2.0])
    cells = [torch.rand(1, c, 16 // s * 4, 16 // s * 4) + 0.5 for c, s in zip((16, 24, 32, 96), (1, 2, 4, 8))]
    unit = PatchEmbedder(backbone, stage_norm="l2", patch_size=1)
    assert torch.allclose(soft.aggregate([c * 1e4 for c in cells]), unit.aggregate(cells), atol=1e-4)
    weak = soft.aggregate([c * 1e-4 for c in cells])[0, :32]            # |v| far below the floor 1.0
    assert torch.allclose(weak, cells[2][0] * 1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="finite positive"):
        soft.set_floors([1.0, float("nan")])


def test_runs_made_before_the_padding_and_stage_norm_choices_load_as_they_were_built(trained_run, tmp_path):
    import json
    import shutil

    from apc_edge.export.patchcore import load_run

    old = tmp_path / "old"
    shutil.copytree(trained_run, old)
    info = json.loads((old / "run.json").read_text())
    floors = info["backbone"].pop("stage_norm_floors")
    del info["backbone"]["aggregation_padding"], info["backbone"]["stage_norm"]
    (old / "run.json").write_text(json.dumps(info))
    assert (load_run(old)[0].padding, load_run(old)[0].stage_norm) == ("valid", "none")
    new = load_run(trained_run)[0]
    assert (new.padding, new.stage_norm, new.floors) == ("zeros", "soft", floors)
    assert len(floors) == 2 and all(c > 0 for c in floors)


def test_clip_state_dict_loads_by_path(tmp_path):
    """A CLIP checkpoint as its users have it: the image tower under visual. (with layer4 and the attention
    pool this backbone does not build) beside the text tower; the official key names load unchanged."""
    ref = build_backbone("clip_rn50", weights="random").eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    state = {f"visual.{k}": v for k, v in ref.state_dict().items()}
    state.update({"visual.layer4.0.conv1.weight": torch.zeros(512, 1024, 1, 1),
                  "visual.attnpool.positional_embedding": torch.zeros(50, 2048),
                  "visual.attnpool.q_proj.weight": torch.zeros(2048, 2048),
                  "token_embedding.weight": torch.zeros(49408, 8), "transformer.resblocks.0.ln_1.weight": torch.ones(8),
                  "positional_embedding": torch.zeros(77, 8), "logit_scale": torch.tensor(4.6)})
    assert "visual.layer1.0.downsample.0.weight" in state and "visual.layer2.0.downsample.-1" not in state
    torch.save(state, tmp_path / "rn50.pth")
    bb = build_backbone("clip_rn50", weights=tmp_path / "rn50.pth").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(ref(x), bb(x)))
    assert bb.input_mean[0] == pytest.approx(0.48145466)
    with pytest.raises(BackboneError, match="--weights FILE"):
        build_backbone("clip_rn50")                                # no CLIP weights ship offline
    torch.save({k: v for k, v in state.items() if "layer3.5" not in k}, tmp_path / "cut.pth")
    with pytest.raises(BackboneError, match="missing keys: layer3.5"):
        build_backbone("clip_rn50", weights=tmp_path / "cut.pth")


def test_clip_bottleneck_is_anti_aliased():
    """The strided block pools after its 3x3 convolution (which keeps stride 1), and so does its shortcut."""
    from apc_edge.export.backbones.clip_resnet import ClipBottleneck

    block = ClipBottleneck(256, 128, stride=2)
    assert block.conv2.stride == (1, 1) and isinstance(block.avgpool, torch.nn.AvgPool2d)
    assert [name for name, _ in block.downsample.named_children()] == ["-1", "0", "1"]
