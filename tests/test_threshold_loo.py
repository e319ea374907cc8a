"""Every good image in the bank: leave-one-out scores set the threshold, refused when they cannot."""
import json
import shutil

import numpy as np
import pytest

from apc_edge import Inspector
from apc_edge.calibration.thresholds import robust_good_threshold
from apc_edge.export.model_export import ExportOptions, export_model
from apc_edge.export.patchcore import TrainConfig, fit_patchcore, leave_one_out_scores
from apc_edge.index import LEAVE_ONE_OUT_HNSW_FROM, ExactIndex, HnswIndex, leave_one_out_index
from apc_edge.scoring import score_embedding


def test_exact_search_never_returns_excluded_rows():
    bank = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)
    d, i = ExactIndex(bank, chunk=3).search(bank[[2, 7]], k=2, exclude=np.array([2, 7, 3]))
    assert i[0, 0] == 1 and i[1].tolist() == [6, 8]       # 3 and 7 would be nearer, but are excluded
    assert not set(i.ravel().tolist()) & {2, 7, 3}
    assert d[0, 0] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="excluded"):
        ExactIndex(bank[:2]).search(bank[:1], exclude=np.array([0, 1]))


def test_robust_threshold_ignores_one_odd_image_and_states_its_rate():
    rng = np.random.default_rng(0)
    scores = rng.normal(2.0, 0.1, 200)
    odd = np.r_[scores, 50.0]
    a, b = robust_good_threshold(scores, 0.01), robust_good_threshold(odd, 0.01)
    assert b["value"] < 3.0                                 # the odd image does not set it
    assert abs(a["value"] - b["value"]) < 0.1
    assert b["implied_false_alarm"] == pytest.approx(np.mean(odd >= b["value"]))
    assert 0 < b["implied_false_alarm"] <= 0.02
    few = robust_good_threshold([2.0, 2.1, 1.9, 2.05, 1.95], 0.01)
    assert few["value"] > 2.05 and few["value"] == few["estimates"]["tail"] or few["value"] > 2.1
    with pytest.raises(ValueError, match="at least 2"):
        robust_good_threshold([2.0], 0.01)
    with pytest.raises(ValueError, match="NaN"):
        robust_good_threshold([2.0, float("nan")], 0.01)


def test_leave_one_out_equals_scoring_against_the_other_images_rows():
    rng = np.random.default_rng(1)
    grid, dim = (4, 4), 8
    feats = rng.standard_normal((3 * 16, dim)).astype(np.float32)
    ids = np.arange(0, 48, 2)                               # every other patch of each image in the bank
    bank = feats[ids]
    loo = leave_one_out_scores(feats, bank, ids, grid, [1], num_neighbours=3)
    others = ids // 16 != 1
    emb = feats[16:32].T.reshape(dim, *grid)
    ref = score_embedding(emb, ExactIndex(bank[others]), bank[others], 3).image_score
    assert loo[0] == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("peak_sigma", [0.0, 0.645])
def test_leave_one_out_through_hnsw_gives_exact_search_scores(peak_sigma):
    # a bank large enough for leave_one_out_index to build a graph; images whose patches sit in clusters,
    # so that an image's own rows are its patches' nearest ones and excluding them changes the scores
    rng = np.random.default_rng(2)
    grid, dim, n_images = (16, 16), 16, 64
    centres = rng.standard_normal((400, dim)).astype(np.float32) * 4
    feats = (centres[rng.integers(0, 400, n_images * 256)]
             + rng.standard_normal((n_images * 256, dim)).astype(np.float32)).astype(np.float32)
    ids = np.sort(rng.choice(feats.shape[0], LEAVE_ONE_OUT_HNSW_FROM + 500, replace=False))
    bank = feats[ids]
    index = leave_one_out_index(bank)
    assert isinstance(index, HnswIndex) and index.exact is not None
    images = list(range(0, n_images, 4))
    fast = leave_one_out_scores(feats, bank, ids, grid, images, num_neighbours=9, index=index, peak_sigma=peak_sigma)
    exact = leave_one_out_scores(feats, bank, ids, grid, images, num_neighbours=9, index=ExactIndex(bank),
                                 peak_sigma=peak_sigma)
    # float32 rounding of |b|^2 - 2 q.b + |q|^2 differs between the few-query and the many-query product (and
    # with BLAS's thread count): about 1e-6 of a distance here, so not tighter than 1e-5
    assert fast == pytest.approx(exact, rel=1e-5)
    with_own = leave_one_out_scores(feats, bank, np.full_like(ids, -10**9), grid, images, 9, index=ExactIndex(bank),
                                    peak_sigma=peak_sigma)
    assert np.mean(np.asarray(exact) > np.asarray(with_own)) > 0.5      # the exclusion changed most scores
    # the excluded rows come back for the next search
    own = np.flatnonzero(ids // 256 == 0)
    _, found = index.search(bank[own[:5]], k=1)
    assert found[:, 0].tolist() == own[:5].tolist()
    _, found = index.search(bank[own[:5]], k=3, exclude=own)
    assert not set(found.ravel().tolist()) & set(own.tolist())
    assert isinstance(leave_one_out_index(bank[:100]), ExactIndex)          # small banks: exact search


@pytest.fixture(scope="module")
def loo_run(synthetic_category, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "loo"
    info = fit_patchcore(synthetic_category, run, TrainConfig(resize=(160, 160), coreset_ratio=0.25))
    return run, info


def test_training_puts_every_good_image_in_the_bank_and_thresholds_leave_one_out(loo_run, synthetic_category):
    run, info = loo_run
    n_good = len(list((synthetic_category / "train" / "good").iterdir()))
    assert info["training"]["n_bank_images"] == n_good and info["training"]["holdout_images"] == []
    th = info["threshold"]
    assert th["method"] == "leave_one_image_out" and th["n_images"] == n_good
    assert np.isfinite(th["value"]) and th["value"] > 0
    assert len(info["training"]["threshold_images"]) == n_good


def test_exports_of_a_leave_one_out_run_measure_and_threshold_on_its_bank_images(loo_run, synthetic_category,
                                                                               tmp_path):
    run, info = loo_run
    m = export_model(run, tmp_path / "int8", options=ExportOptions(precision="int8", index="exact",
                                                                   calibration_images=6))
    assert m["quantization"]["guard"]["n_held_out_good"] == len(info["training"]["threshold_images"])
    assert m["threshold"]["method"] == "leave_one_image_out"
    assert m["threshold"]["computed_with"]["precision"] == "int8"
    assert set(m["export"]["stage_seconds"]) >= {"graph and quantization", "bank re-embedding", "threshold"}
    # the guard's FP32 scores of these goods are the run's own leave-one-out scores
    stored = info["holdout_scores"]
    assert m["quantization"]["guard"]["scores"]["reference"][:len(stored)] == pytest.approx(stored, rel=1e-5)
    inspector = Inspector(tmp_path / "int8")
    # the threshold is the rule on the INT8 dir's own leave-one-out scores, recomputed here from its files
    from apc_edge.calibration.imagesets import threshold_image_indexes, training_images
    from apc_edge.export.patchcore import own_rows
    from apc_edge.preprocess import load_image
    bank_paths, _ = training_images(info["training"])
    loo = threshold_image_indexes(info["training"], bank_paths)
    bank = np.load(tmp_path / "int8" / "memory_bank.npy", allow_pickle=False)
    ids = np.load(run / "coreset_ids.npy", allow_pickle=False)
    grid = m["patch_grid"]
    scores = [score_embedding(inspector.embed(load_image(bank_paths[j])), ExactIndex(bank),
                              bank, m["scoring"]["num_neighbours"], exclude=rows,
                              peak_sigma=m["scoring"]["peak_sigma"]).image_score
              for j, rows in zip(loo, own_rows(ids, loo, grid))]
    want = robust_good_threshold(scores, m["threshold"]["target_false_alarm"])["value"]
    assert m["threshold"]["value"] == pytest.approx(want, rel=1e-5)
    goods = sorted((synthetic_category / "test" / "good").iterdir())
    assert all(not inspector.check(load_image(p)).is_anomalous for p in goods)
    h = export_model(run, tmp_path / "hnsw", options=ExportOptions(index="hnsw"))
    assert h["index"]["type"] == "hnsw"


def test_one_good_image_gives_a_low_threshold_from_shifted_copies(tmp_path, synthetic_category):
    """One good image: nothing can be left out, so its copies shifted by a quarter of a patch stride set the threshold. It is
    finite, the rule's one copy at most lies above it (k = 1 of 8), and every defect of the test set still scores
    above it."""
    import shutil

    from apc_edge import Inspector
    from apc_edge.export.model_export import ExportOptions, export_model
    from apc_edge.export.patchcore import ONE_IMAGE_METHOD, shifted_copies
    from apc_edge.preprocess import load_image

    one = tmp_path / "one"
    one.mkdir()
    first = sorted((synthetic_category / "train" / "good").iterdir())[0]
    shutil.copy(first, one / first.name)
    info = fit_patchcore(one, tmp_path / "run", TrainConfig(resize=(160, 160)))
    th = info["threshold"]
    assert th["method"] == ONE_IMAGE_METHOD and th["n_images"] == 8
    copies_above = np.sum(np.asarray(info["holdout_scores"]) >= th["value"])
    assert np.isfinite(th["value"]) and th["value"] > np.median(info["holdout_scores"]) > 0 and copies_above <= 1
    export_model(tmp_path / "run", tmp_path / "model", options=ExportOptions(index="exact"))
    inspector = Inspector(tmp_path / "model")
    spots = sorted((synthetic_category / "test" / "spot").glob("*.png"))
    assert all(inspector.check(load_image(p)).is_anomalous for p in spots)
    frame = load_image(first)
    copies = shifted_copies(frame, (160, 160), 8)
    assert len(copies) == 8 and all(c.shape == frame.shape and not np.array_equal(c, frame) for c in copies)


def test_int8_guard_recomputes_stale_leave_one_out_scores_of_the_run(loo_run, tmp_path):
    """Stored scores that no longer hold (images changed since; here the stored scores doubled) are recomputed,
    so the guard never compares against numbers that are wrong."""
    run, info = loo_run
    stored = info["holdout_scores"]
    stale = tmp_path / "stale_run"
    shutil.copytree(run, stale)
    doubled = json.loads((stale / "run.json").read_text())
    doubled["holdout_scores"] = [2.0 * s for s in stored]
    (stale / "run.json").write_text(json.dumps(doubled))
    m = export_model(stale, tmp_path / "int8_stale",
                     options=ExportOptions(precision="int8", index="exact", calibration_images=6))
    assert m["quantization"]["guard"]["scores"]["reference"][:len(stored)] == pytest.approx(stored, rel=1e-5)
