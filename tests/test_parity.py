"""Runtime FP32 scores equal training-time torch scores on real images (OpenVINO and ONNX Runtime)."""
import numpy as np
import pytest
import torch

from apc_edge import Inspector
from apc_edge.calibration.dataset import MVTecCategory
from apc_edge.export.model_export import export_model
from apc_edge.export.patchcore import TrainConfig, fit_patchcore, load_bank, load_run
from apc_edge.index import ExactIndex
from apc_edge.preprocess import load_image
from apc_edge.scoring import score_embedding

RTOL = 1e-3


def small_category(src, dst, n_train):
    """A view of a real category with only its first ``n_train`` good images (symlinks, nothing copied)."""
    (dst / "train" / "good").mkdir(parents=True)
    for p in sorted((src / "train" / "good").iterdir())[:n_train]:
        (dst / "train" / "good" / p.name).symlink_to(p)
    (dst / "test").symlink_to(src / "test")
    return dst


@pytest.mark.parametrize("category", ["bottle", "magnetic_tile"])
def test_runtime_matches_torch(category, tmp_path, real_data):
    src = real_data(category)
    data = small_category(src, tmp_path / category, n_train=12)
    run = tmp_path / "run"
    fit_patchcore(data, run, TrainConfig(coreset_ratio=0.1))
    embedder, info, pre = load_run(run)
    bank = load_bank(run)
    index = ExactIndex(bank)
    samples = MVTecCategory(src).test_samples()
    picks = [s for s in samples if not s.is_anomalous][:2] + [s for s in samples if s.is_anomalous][::40][:4]
    frames = [load_image(s.path) for s in picks]
    grid = tuple(info["patch_grid"])
    part_only = info["scoring"]["part_only"]           # magnetic_tile's sizes vary: pad mode, the part's cells
    assert part_only == (category == "magnetic_tile") == (pre.mode == "pad")
    with torch.no_grad():
        ref = [score_embedding(embedder(torch.from_numpy(pre(f))).numpy()[0], index, bank,
                               info["scoring"]["num_neighbours"],
                               region=pre.patch_region(f.shape, grid) if part_only else None,
                               peak_sigma=info["scoring"]["peak_sigma"]).image_score
               for f in frames]
    for target in ("openvino", "onnx"):
        inspector = Inspector(export_model(run, tmp_path / target, target) and tmp_path / target)
        got = [inspector.check(f).raw_score for f in frames]
        np.testing.assert_allclose(got, ref, rtol=RTOL, err_msg=f"{target} runtime differs from torch")
