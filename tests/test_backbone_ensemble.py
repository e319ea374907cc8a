"""The concatenated backbone ensemble: members' features side by side, each with its own normalization."""
import pytest
import torch

from apc_edge.export.backbones import BackboneError, build_backbone
from apc_edge.export.embedder import PatchEmbedder

ENSEMBLE = "mobilenet_v2+efficientnet_lite0"


def test_stages_are_the_members_outputs_concatenated():
    ens = build_backbone(ENSEMBLE).eval()
    mobile, lite = build_backbone("mobilenet_v2").eval(), build_backbone("efficientnet_lite0").eval()
    raw = torch.rand(1, 3, 96, 128) * 255
    def normalized(bb):
        mean, std = torch.tensor(bb.input_mean).view(1, 3, 1, 1), torch.tensor(bb.input_std).view(1, 3, 1, 1)
        return (raw / 255 - mean) / std
    with torch.no_grad():
        got = ens(normalized(ens))
        want_m, want_l = mobile(normalized(mobile)), lite(normalized(lite))
    assert ens.input_mean == mobile.input_mean and ens.input_mean != lite.input_mean
    for stage, m, l in zip(got, want_m, want_l):
        assert stage.shape[1] == m.shape[1] + l.shape[1]
        torch.testing.assert_close(stage[:, :m.shape[1]], m)
        torch.testing.assert_close(stage[:, m.shape[1]:], l, rtol=1e-4, atol=1e-4)
    assert "mobilenet_v2" in ens.weights_source and "efficientnet-lite0" in ens.weights_source


def test_embedder_reads_both_members_at_stride_8(tmp_path):
    ens = build_backbone(ENSEMBLE, weights="random").eval()
    emb = PatchEmbedder(ens)
    assert emb.dim == 72 + 208 and emb.stride == 8
    assert emb.grid((64, 96)) == (8, 12)
    path = tmp_path / "ens.pt"
    torch.save(ens.state_dict(), path)
    again = build_backbone(ENSEMBLE, weights=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(ens(x), again(x)))
    assert again.weights_source == str(path)


def test_balancing_gives_every_member_the_first_ones_variance():
    """Lite0's activations are several times MobileNetV2's: unbalanced, its half of the embedding carries most
    of the variance; balanced, both halves carry the same, and the first member's features are untouched."""
    emb = PatchEmbedder(build_backbone(ENSEMBLE)).eval()
    torch.manual_seed(0)
    images = torch.randn(3, 3, 96, 128)
    channels = emb.backbone.member_channels(emb.levels)

    def shares():
        with torch.no_grad():
            out = emb(images)
        var = out.transpose(0, 1).reshape(out.shape[1], -1).double().var(dim=1)
        return [float(var[c].sum()) for c in channels], out

    (before_m, before_l), unbalanced = shares()
    assert before_l > 4 * before_m
    scales = emb.balance_ensemble(images)
    (after_m, after_l), balanced = shares()
    assert scales[0] == 1.0 and abs(scales[1] - (before_m / before_l) ** 0.5) < 1e-6
    assert abs(after_l - after_m) < 1e-4 * after_m
    torch.testing.assert_close(balanced[:, channels[0]], unbalanced[:, channels[0]])
    torch.testing.assert_close(balanced[:, channels[1]], unbalanced[:, channels[1]] * scales[1], rtol=1e-5, atol=1e-6)


def test_a_checkpoint_without_member_scales_loads_with_unit_scales(tmp_path):
    ens = build_backbone(ENSEMBLE, weights="random")
    ens.member_scales[1] = 0.5
    state = {k: v for k, v in ens.state_dict().items() if k != "member_scales"}
    torch.save(state, tmp_path / "old.pt")
    assert build_backbone(ENSEMBLE, weights=tmp_path / "old.pt").member_scales.tolist() == [1.0, 1.0]
    torch.save(ens.state_dict(), tmp_path / "new.pt")
    assert build_backbone(ENSEMBLE, weights=tmp_path / "new.pt").member_scales.tolist() == [1.0, 0.5]


def test_a_members_checkpoint_is_not_an_ensembles(tmp_path):
    path = tmp_path / "mobile.pt"
    torch.save(build_backbone("mobilenet_v2", weights="random").state_dict(), path)
    with pytest.raises(BackboneError):
        build_backbone(ENSEMBLE, weights=path)


@pytest.mark.parametrize("name, message", [("mobilenet_v2+mobilenet_v2", "twice"),
                                           ("mobilenet_v2+vgg16", "unknown backbone 'vgg16'")])
def test_bad_ensemble_names(name, message):
    with pytest.raises(BackboneError, match=message):
        build_backbone(name, weights="random")


def test_ensemble_trains_exports_int8_and_flags_defects(synthetic_category, tmp_path):
    """The whole path with the ensemble as one graph: fit, INT8 OpenVINO export, torch-free Inspector."""
    import numpy as np

    from apc_edge import Inspector
    from apc_edge.export.model_export import ExportOptions, export_model
    from apc_edge.export.patchcore import TrainConfig, fit_patchcore
    from apc_edge.preprocess import load_image

    run = tmp_path / "run"
    info = fit_patchcore(synthetic_category, run, TrainConfig(backbone=ENSEMBLE, resize=(128, 128),
                                                              coreset_ratio=0.25))
    assert info["backbone"]["name"] == ENSEMBLE
    scales = info["backbone"]["member_scales"]
    assert scales[0] == 1.0 and 0 < scales[1] < 1
    assert build_backbone(ENSEMBLE, weights=run / "backbone.pt").member_scales.tolist() == pytest.approx(scales)
    manifest = export_model(run, tmp_path / "model", options=ExportOptions(precision="int8", index="exact",
                                                                          guard_synthetic=8))
    assert manifest["backbone"]["name"] == ENSEMBLE and manifest["embedding_dim"] == 280
    inspector = Inspector(tmp_path / "model")
    test = synthetic_category / "test"
    good = [inspector.check(load_image(p)).raw_score for p in sorted((test / "good").glob("*.png"))]
    spot = [inspector.check(load_image(p)).raw_score for p in sorted((test / "spot").glob("*.png"))]
    assert np.isfinite(good + spot).all()
    assert min(spot) > max(good)
