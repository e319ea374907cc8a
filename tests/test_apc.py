"""AnomalousPatchCore: model and heads, CutPaste, anomaly selection, fine-tuning, run dir and CLI."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from apc_edge.calibration.dataset import DatasetError, MVTecCategory
from apc_edge.calibration.evaluate import evaluate
from apc_edge.export.apc import APCConfig, APCModel, finetune, select_anomalies
from apc_edge.export.apc.augment import BasicAugment
from apc_edge.export.apc.cutpaste import cut_paste
from apc_edge.export.apc.data import FewShotTrainSet, rgb_input, to_input
from apc_edge.export.apc.selection import split_quota
from apc_edge.export.backbones import BACKBONE_NAMES, build_backbone
from apc_edge.export.cli_train import main as train_main
from apc_edge.export.model_export import export_model
from apc_edge.export.patchcore import TrainConfig, fit_patchcore, load_run, make_preprocessor
from apc_edge.preprocess import Preprocessor, load_image

HW = 64


def tiny_pre(backbone) -> Preprocessor:
    return make_preprocessor(TrainConfig(resize=(HW, HW)), backbone)


# --- model and heads -------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in BACKBONE_NAMES if not n.startswith("clip_") or n == "clip_rn50"])
@pytest.mark.parametrize("decoder", ["unet2", "unet4"])
def test_head_output_shapes(name, decoder):
    torch.manual_seed(0)
    model = APCModel(build_backbone(name, "random"), decoder=decoder).train()
    out = model(torch.randn(2, 3, HW, HW + 32))
    assert set(out) == {"cls", "seg", "rec"}
    assert out["cls"].shape == (2,)
    assert out["seg"].shape == (2, 1, HW, HW + 32)
    assert out["rec"].shape == (2, 3, HW, HW + 32)


def test_task_subset_builds_only_its_heads():
    model = APCModel(build_backbone("mobilenet_v2", "random"), tasks=("cls",))
    assert set(model(torch.zeros(1, 3, HW, HW))) == {"cls"}
    assert model.seg_head is None and model.rec_head is None and model.tconv3 is None
    with pytest.raises(ValueError, match="subset of cls, seg, rec"):
        APCModel(build_backbone("mobilenet_v2", "random"), tasks=("cls", "depth"))
    with pytest.raises(ValueError, match="unknown decoder"):
        APCModel(build_backbone("mobilenet_v2", "random"), decoder="unet3")


def test_encoder_batchnorm_statistics_stay_frozen():
    model = APCModel(build_backbone("mobilenet_v2", "random")).train()
    bn = model.encoder.features[0][1]
    before = bn.running_mean.clone()
    assert not bn.training and model.bottleneck[1].training
    out = model(torch.randn(2, 3, HW, HW) * 3 + 1)
    out["cls"].sum().backward()
    assert torch.equal(bn.running_mean, before)
    assert bn.weight.grad is not None                # scale and shift still train


# --- CutPaste and augmentation ---------------------------------------------------------------


def test_cutpaste_pastes_exactly_where_the_mask_is():
    rng = np.random.default_rng(0)
    target = np.zeros((48, 64, 3), np.uint8)
    source = np.full((48, 64, 3), 200, np.uint8)
    source_mask = np.zeros((48, 64), bool)
    source_mask[5:15, 10:30] = True
    source_mask[5:8, 10:13] = False                   # not a plain rectangle
    for _ in range(20):
        image, mask = cut_paste(target, source, source_mask, rng, jitter=False)
        assert mask.sum() == source_mask.sum()
        assert np.all(image[mask] == 200) and np.all(image[~mask] == 0)



def test_cutpaste_stays_within_the_part():
    rng = np.random.default_rng(0)
    target = np.zeros((48, 64, 3), np.uint8)
    source = np.full((48, 64, 3), 200, np.uint8)
    source_mask = np.zeros((48, 64), bool)
    source_mask[2:30, 0:40] = True                    # larger than the box below: cut to it
    for _ in range(20):
        image, mask = cut_paste(target, source, source_mask, rng, jitter=False, within=(10, 20, 16, 24))
        assert mask.any() and not mask[:10].any() and not mask[26:].any()
        assert not mask[:, :20].any() and not mask[:, 44:].any()
        assert np.all(image[mask] == 200) and np.all(image[~mask] == 0)

def test_cutpaste_with_jitter_leaves_the_rest_unchanged():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    source = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    source_mask = np.zeros((40, 40), bool)
    source_mask[20:30, 2:9] = True
    image, mask = cut_paste(target, source, source_mask, rng)
    ys, xs = np.nonzero(mask)
    assert mask.sum() == 70 and np.ptp(ys) == 9 and np.ptp(xs) == 6
    assert np.array_equal(image[~mask], target[~mask])
    with pytest.raises(ValueError, match="empty"):
        cut_paste(target, source, np.zeros((40, 40), bool), rng)


def test_augmentation_moves_image_and_mask_together():
    rng = np.random.default_rng(2)
    image = np.zeros((32, 32, 3), np.uint8)
    image[3:9, 20:30] = 255
    mask = image[..., 0] > 0
    for _ in range(10):
        img, m = BasicAugment(photometric=False)(image, mask, rng)
        assert np.array_equal(img[..., 0] > 0, m)


# --- anomaly selection -----------------------------------------------------------------------


def test_selection_is_reproducible_and_uniform_per_type(synthetic_category):
    a = select_anomalies(synthetic_category, 4, seed=3)
    b = select_anomalies(synthetic_category, 4, seed=3)
    assert a.keys == b.keys and len(set(a.keys)) == 4
    assert a.per_type == {"scratch": 2, "spot": 2}
    assert sorted(select_anomalies(synthetic_category, 3, seed=0).per_type.values()) == [1, 2]
    for seed in range(5):                                    # a short type hands its share to the others
        assert split_quota(5, {"a": 1, "b": 10, "c": 10}, np.random.default_rng(seed)) == {"a": 1, "b": 2, "c": 2}
        assert sorted(split_quota(6, {"a": 1, "b": 10, "c": 10}, np.random.default_rng(seed)).values()) == [1, 2, 3]
    assert split_quota(4, {"a": 1, "b": 10}, np.random.default_rng(0)) == {"a": 1, "b": 3}
    block = a.to_dict()
    assert block["images"] == a.keys and block["seed"] == 3


def test_selection_skips_empty_masks_and_names_bad_input(synthetic_category, tmp_path):
    root = tmp_path / "washer"
    shutil.copytree(synthetic_category, root)
    empty = root / "ground_truth" / "spot" / "000_mask.png"
    cv2.imwrite(str(empty), np.zeros((256, 256), np.uint8))
    keys = select_anomalies(root, 7, seed=0).keys
    assert "spot/000.png" not in keys and len(keys) == 7
    with pytest.raises(ValueError, match="larger than the 7 anomalous test images"):
        select_anomalies(root, 8)
    with pytest.raises(ValueError, match="positive integer"):
        select_anomalies(root, 0)
    shutil.rmtree(root / "ground_truth")
    with pytest.raises(DatasetError, match="mask"):
        select_anomalies(root, 2)
    shutil.rmtree(root / "test")
    with pytest.raises(DatasetError, match="test/"):
        select_anomalies(root, 2)


# --- data and fine-tuning --------------------------------------------------------------------


def test_training_input_equals_the_runtime_preprocessing(synthetic_category):
    pre = Preprocessor(resize=(80, 72), crop=(64, 64))
    frame = load_image(next((synthetic_category / "train" / "good").iterdir()))
    assert np.array_equal(to_input(pre, [rgb_input(pre, frame)]), pre(frame))


def test_balanced_batches(synthetic_category):
    data = MVTecCategory(synthetic_category)
    pre = tiny_pre(build_backbone("mobilenet_v2", "random"))
    ds = FewShotTrainSet(data.train_good()[:4], select_anomalies(data, 2).samples, pre)
    x, masks, labels = ds.batch(6, np.random.default_rng(0))
    assert x.shape == (6, 3, HW, HW) and masks.shape == (6, 1, HW, HW)
    assert labels.sum() == 3
    assert torch.all(masks[labels == 0] == 0) and torch.all(masks[labels == 1].flatten(1).sum(1) > 0)



def test_pad_mode_masks_sit_on_the_canvas_with_their_images(synthetic_category):
    """In pad mode each frame is centred on a canvas; its mask must land exactly there too (CutPaste needs
    image and mask of one size)."""
    data = MVTecCategory(synthetic_category)
    pre = Preprocessor(resize=(64, 96), mode="pad", scale=0.2)
    ds = FewShotTrainSet(data.train_good()[:4], select_anomalies(data, 2).samples, pre, cutpaste=True)
    x, masks, labels = ds.batch(8, np.random.default_rng(0))
    assert x.shape == (8, 3, 64, 96) and masks.shape == (8, 1, 64, 96)
    top, left, h, w = pre.placement((256, 256))
    inside = torch.zeros(64, 96, dtype=torch.bool)
    inside[top:top + h, left:left + w] = True
    assert torch.all(masks[labels == 1].flatten(1).sum(1) > 0)
    assert not torch.any(masks[:, 0][:, ~inside])              # no mask pixel on the padding

@pytest.fixture(scope="module")
def tuned(synthetic_category, tmp_path_factory):
    """A tiny fine-tuning on the synthetic set: (model, result, initial encoder state, checkpoint path)."""
    torch.manual_seed(0)
    data = MVTecCategory(synthetic_category)
    backbone = build_backbone("mobilenet_v2")
    initial = {k: v.clone() for k, v in backbone.state_dict().items()}
    pre = tiny_pre(backbone)
    ds = FewShotTrainSet(data.train_good(), select_anomalies(data, 4).samples, pre)
    cfg = APCConfig(epochs=8, samples_per_epoch=16, batch_size=8, lr=1e-3)
    model = APCModel(backbone, cfg.tasks, cfg.decoder)
    ckpt = tmp_path_factory.mktemp("apc") / "apc_checkpoint.pt"
    result = finetune(model, ds, cfg, checkpoint=ckpt, show_progress=False)
    return model, result, initial, ckpt, ds, cfg


def test_losses_decrease(tuned):
    _, result, *_ = tuned
    history = result["history"]
    assert len(history) == 8 and not result["stopped_early"]
    first, last = history[0], history[-1]
    for key in ("total", "seg", "rec"):
        assert last[key] < first[key], key
    assert min(h["cls"] for h in history[-3:]) < first["cls"]


def test_resume_continues_the_checkpoint(tuned):
    model, result, _, ckpt, ds, cfg = tuned
    more = APCConfig(**{**cfg.__dict__, "epochs": 9})
    fresh = APCModel(build_backbone("mobilenet_v2", "random"), cfg.tasks, cfg.decoder)
    resumed = finetune(fresh, ds, more, checkpoint=ckpt, resume=True, show_progress=False)
    assert resumed["resumed_from_epoch"] == 8
    assert resumed["history"][:8] == result["history"] and len(resumed["history"]) == 9
    other = APCConfig(**{**cfg.__dict__, "epochs": 9, "decoder_lr": 5e-4})
    with pytest.raises(ValueError, match="other fine-tuning settings"):
        finetune(fresh, ds, other, checkpoint=ckpt, resume=True, show_progress=False)


def test_finetuned_weights_load_back(tuned, synthetic_category, tmp_path):
    model, _, initial, *_ = tuned
    tuned_state = model.encoder.state_dict()
    assert any(not torch.equal(tuned_state[k], initial[k]) for k in initial)
    run = tmp_path / "run"
    fit_patchcore(synthetic_category, run, TrainConfig(resize=(HW, HW), coreset_ratio=0.5),
                  backbone=model.encoder.eval(), extra={"fine_tuning": {"method": "AnomalousPatchCore"}})
    loaded = build_backbone("mobilenet_v2", run / "backbone.pt").state_dict()
    assert set(loaded) == set(tuned_state)
    assert all(torch.equal(loaded[k], tuned_state[k]) for k in loaded)
    embedder, info, pre = load_run(run)
    assert info["backbone"]["weights"].startswith("fine-tuned (AnomalousPatchCore)")
    x = torch.randn(1, 3, HW, HW)
    with torch.no_grad():
        assert torch.allclose(embedder.backbone(x)[3], model.encoder(x)[3])


def test_early_stopping(synthetic_category):
    data = MVTecCategory(synthetic_category)
    backbone = build_backbone("mobilenet_v2", "random")
    ds = FewShotTrainSet(data.train_good()[:2], select_anomalies(data, 1).samples, tiny_pre(backbone))
    cfg = APCConfig(epochs=30, samples_per_epoch=2, batch_size=2, lr=1e-12, decoder_lr=1e-12, patience=2,
                    tasks=("cls",))
    result = finetune(APCModel(backbone, cfg.tasks), ds, cfg, show_progress=False)
    assert result["stopped_early"] and result["epochs_run"] < 30


# --- end to end through the CLIs --------------------------------------------------------------


def test_apc_train_export_eval_excludes_exactly_the_used_anomalies(synthetic_category, tmp_path, capsys):
    run, model = tmp_path / "run", tmp_path / "model"
    assert train_main([str(synthetic_category), "--out", str(run), "--resize", str(HW), str(HW),
                       "--coreset-ratio", "0.3", "--anomalies", "3", "--epochs", "1", "--samples-per-epoch", "4",
                       "--finetune-batch", "4", "--tasks", "cls,seg", "--decoder", "unet4", "--no-augment"]) == 0
    out = capsys.readouterr().out
    assert "fine-tuned 1 epochs" in out and "left out of evaluation" in out
    info = json.loads((run / "run.json").read_text())
    keys = select_anomalies(synthetic_category, 3, seed=0).keys
    assert info["few_shot_anomalies"]["images"] == keys
    ft = info["fine_tuning"]
    assert ft["tasks"] == ["cls", "seg"] and ft["decoder"] == "unet4" and not ft["augment"]
    assert len(ft["losses"]) == 1 and {"cls", "seg", "total"} <= set(ft["losses"][0])
    manifest = export_model(run, model, target="onnx")
    assert manifest["few_shot_anomalies"]["images"] == keys and manifest["fine_tuning"]["epochs_run"] == 1
    report, scored, _ = evaluate(model, synthetic_category)
    all_keys = {s.key for s in MVTecCategory(synthetic_category).test_samples()}
    assert report["excluded"] == sorted(keys)
    assert {s.sample.key for s in scored} == all_keys - set(keys)
    assert report["n_test"] == len(all_keys) - 3


def test_apc_train_errors(synthetic_category, tmp_path, capsys):
    out = str(tmp_path / "r")
    assert train_main([str(synthetic_category), "--out", out, "--epochs", "3"]) == 2
    assert "--epochs only apply with --anomalies" in capsys.readouterr().err
    assert train_main([str(synthetic_category), "--out", out, "--anomalies", "99"]) == 2
    assert "larger than the 8 anomalous test images" in capsys.readouterr().err
    assert train_main([str(synthetic_category), "--out", out, "--anomalies", "2", "--tasks", "cls,foo"]) == 2
    assert "subset of cls, seg, rec" in capsys.readouterr().err
    assert train_main([str(synthetic_category), "--out", out, "--anomalies", "2", "--loss-weights", "cls=ten"]) == 2
    assert "--loss-weights: 'cls=ten' is not TASK=WEIGHT" in capsys.readouterr().err
    (tmp_path / "flat" / "train" / "good").mkdir(parents=True)
    assert train_main([str(tmp_path / "flat"), "--out", out, "--anomalies", "2"]) == 2
    assert "no test/ folder" in capsys.readouterr().err


def test_loss_weights_option():
    from apc_edge.export.apc.cli import parse_loss_weights

    assert parse_loss_weights("cls=5, rec=0") == {"cls": 5.0, "seg": 1.0, "rec": 0.0}
    for bad in ("cls", "foo=1", "seg=-1"):
        with pytest.raises(ValueError, match="--loss-weights"):
            parse_loss_weights(bad)



def test_seg_loss_leaves_out_anomalies_whose_mask_is_not_known():
    from apc_edge.export.apc.train import task_losses

    seg = torch.full((2, 1, 4, 4), 3.0)
    masks = torch.stack([torch.ones(1, 4, 4), torch.full((1, 4, 4), -1.0)])      # known, unknown
    out = task_losses({"seg": seg}, torch.zeros(2, 3, 4, 4), masks, torch.ones(2), torch.zeros(3, 1, 1),
                      torch.ones(3, 1, 1))
    known_only = torch.nn.functional.binary_cross_entropy_with_logits(seg[:1], masks[:1])
    assert torch.isclose(out["seg"], known_only)


def test_apc_from_a_folder_of_defects_with_and_without_masks(synthetic_category, tmp_path, capsys):
    """--anomalies-dir: defects caught on the line (apc-review --export's defect/ and defect_masks/); the one
    without a mask trains cls and rec only and is never a CutPaste source."""
    import shutil

    defect, masks = tmp_path / "reviewed" / "defect", tmp_path / "reviewed" / "defect_masks"
    defect.mkdir(parents=True)
    masks.mkdir()
    spots = [s for s in MVTecCategory(synthetic_category).test_samples() if s.is_anomalous][:3]
    for i, s in enumerate(spots):
        shutil.copy(s.path, defect / f"line_{i}.png")
        if i < 2:
            shutil.copy(s.mask_path, masks / f"line_{i}.png")
    run = tmp_path / "run"
    assert train_main([str(synthetic_category), "--out", str(run), "--resize", str(HW), str(HW),
                       "--coreset-ratio", "0.3", "--anomalies-dir", str(defect), "--epochs", "1",
                       "--samples-per-epoch", "8", "--finetune-batch", "4"]) == 0
    assert "3, 2 with a mask (1 without: classification and reconstruction only" in capsys.readouterr().out
    fs = json.loads((run / "run.json").read_text())["few_shot_anomalies"]
    assert fs["folder"] == str(defect.resolve()) and fs["with_mask"] == ["defect/line_0.png", "defect/line_1.png"]
    assert json.loads((run / "run.json").read_text())["config"]["exclude"] == []
    assert train_main([str(synthetic_category), "--out", str(tmp_path / "r2"), "--anomalies-dir", str(defect),
                       "--anomalies", "2"]) == 2
    assert "not both" in capsys.readouterr().err
