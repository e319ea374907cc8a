"""HNSW index: search matches exact search, the runtime loads and verifies index.hnsw, refinement keeps the max exact."""
import json
import os
import shutil
import signal
import time

import numpy as np
import pytest

from apc_edge import Inspector, ModelDirError
from apc_edge.calibration.dataset import MVTecCategory
from apc_edge.export.hnsw_build import HnswTargets, choose_index
from apc_edge.index import ExactIndex, HnswIndex, NeighbourIndex
from apc_edge.preprocess import load_image
from apc_edge.scoring import landmark_index, refine_top_patches, score_patches


def clustered(n, d, seed):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, d)) * 5
    return (centres[rng.integers(0, 20, n)] + rng.standard_normal((n, d))).astype(np.float32)


@pytest.mark.parametrize("k", [1, 9])
def test_hnsw_search_equals_exact_on_small_data(k):
    bank, q = clustered(500, 16, 0), clustered(60, 16, 1)
    hnsw = HnswIndex.build(bank, M=16, ef_construction=200, ef=200)
    d, ids = hnsw.search(q, k=k)
    ref_d, ref_ids = ExactIndex(bank).search(q, k=k)
    assert d.shape == ids.shape == (60, k) and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(d, ref_d, rtol=1e-4, atol=1e-4)      # Euclidean, not squared


def test_a_large_batch_split_over_threads_finds_what_one_call_finds():
    """With threads >= 2 a large batch is searched in contiguous blocks, one per thread: same rows, same order."""
    from apc_edge import index as index_module

    bank, q = clustered(3000, 16, 2), clustered(2 * index_module.SPLIT_MIN_QUERIES + 77, 16, 3)
    one = HnswIndex.build(bank, M=8, ef_construction=100, ef=8, threads=1)
    d1, i1 = one.search(q, k=3)
    one.threads = 2
    d2, i2 = one.search(q, k=3)
    assert one._pool._key[0] == 2                                  # the batch was split
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(d1, d2, rtol=1e-6)
    _, i3 = one.search(q[:10], k=3)                               # a small batch goes to hnswlib whole
    np.testing.assert_array_equal(i3, i1[:10])
    _, i4 = one.search(q, k=3, exclude=np.unique(i1[:, 0]))        # excluded rows hold for every block
    assert not np.isin(i4, np.unique(i1[:, 0])).any()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_searches_with_its_own_threads():
    """A child forked after a split search has none of the parent's pool threads: it must not wait on them."""
    bank = clustered(2000, 16, 4)
    index = HnswIndex.build(bank, M=8, ef_construction=100, ef=8, threads=2)
    q = clustered(600, 16, 5)
    _, expected = index.search(q)
    time.sleep(0.3)                                # the parent's pool threads are idle again: what the child inherits
    pid = os.fork()
    if pid == 0:                                   # the child: exit 0 only if the search returns the same rows
        try:
            os._exit(0 if np.array_equal(index.search(q)[1], expected) else 3)
        finally:
            os._exit(4)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child's search hung waiting on threads it does not have")


def test_hnsw_save_load_and_size_check(tmp_path):
    bank = clustered(300, 8, 2)
    HnswIndex.build(bank, M=8).save(tmp_path / "i.hnsw")
    loaded = HnswIndex.load(tmp_path / "i.hnsw", dim=8, size=300, ef=32)
    assert loaded.size == 300 and loaded.ef == 32 and loaded.approximate
    with pytest.raises(ValueError, match="holds 300 vectors but the memory bank has 301"):
        HnswIndex.load(tmp_path / "i.hnsw", dim=8, size=301)
    with pytest.raises(ValueError, match="missing"):
        HnswIndex.load(tmp_path / "nope.hnsw", dim=8, size=300)
    with pytest.raises(ValueError, match=r"queries must be \(n, 8\)"):
        loaded.search(np.zeros((2, 5), np.float32))


class InflatingIndex(NeighbourIndex):
    """A bad approximate index: exact ids but some distances inflated (never deflated)."""

    name, approximate = "bad", True

    def __init__(self, bank, factor):
        self.exact, self.factor = ExactIndex(bank), factor

    @property
    def size(self):
        return self.exact.size

    def search(self, queries, k=1):
        d, i = self.exact.search(queries, k)
        return d * self.factor[: len(d), None], i


def test_refinement_makes_the_maximum_exact():
    bank, q = clustered(400, 8, 3), clustered(200, 8, 4) * 1.5
    factor = np.ones(200, np.float32)
    factor[np.random.default_rng(5).choice(200, 60, replace=False)] = 3.0     # 60 inflated patches
    approx = InflatingIndex(bank, factor)
    d0, i0 = approx.search(q)
    d, i, n = refine_top_patches(q, d0[:, 0], i0[:, 0], ExactIndex(bank), top=4)
    ref_d, _ = ExactIndex(bank).search(q)
    assert d.max() == pytest.approx(ref_d.max(), rel=1e-5)
    assert int(np.argmax(d)) == int(np.argmax(ref_d[:, 0]))
    assert 4 <= n < 200                     # doubled until certain, without searching everything
    # any first pass finds the same, true maximum
    for top in (1, 16, 80):
        assert refine_top_patches(q, d0[:, 0], i0[:, 0], ExactIndex(bank), top=top)[0].max() == \
            pytest.approx(ref_d.max(), rel=1e-5)


@pytest.mark.parametrize("part", [False, True])
def test_the_maps_peak_is_exact_with_an_approximate_index(part):
    """The smoothed peak reads the patches around the hottest one, which the top-patch refinement may leave
    approximate: those are searched exactly too, so the image score is exact search's (pad mode's part too)."""
    bank, q = clustered(400, 8, 21), clustered(256, 8, 22) * 1.5
    cells = np.array([r * 16 + c for r in range(3, 13) for c in range(2, 14)]) if part else None
    q = q[cells] if part else q
    factor = np.ones(len(q), np.float32)
    factor[np.random.default_rng(23).choice(len(q), len(q) // 2, replace=False)] = 1.3
    approx_index = InflatingIndex(bank, factor)
    exact = score_patches(q, (16, 16), ExactIndex(bank), bank, 9, cells, peak_sigma=0.645)
    approx = score_patches(q, (16, 16), approx_index, bank, 9, cells, refine_top=1, peak_sigma=0.645)
    assert approx.image_score == pytest.approx(exact.image_score, rel=1e-5)
    assert approx.refined < len(q)          # not everything searched again
    assert approx.image_score < approx.max_patch_score


def test_the_maps_peak_is_settled_with_few_exact_searches_when_the_graph_overestimates_most_patches():
    """A flat map (every patch as near the bank as the others) from a poor real HNSW graph that overestimates
    most patches: the peak is still exact, and only a few percent of the patches are searched exactly.
    Searching every open cell's patches exactly at once searched 868 of these 1024."""
    bank, q = clustered(6000, 16, 1), clustered(32 * 32, 16, 2)
    index = HnswIndex.build(bank, M=6, ef_construction=20, ef=2, threads=1)
    overestimated = index.search(q)[0][:, 0] > ExactIndex(bank).search(q)[0][:, 0] * (1 + 1e-5)
    assert overestimated.mean() > 0.5
    exact = score_patches(q, (32, 32), ExactIndex(bank), bank, 9, peak_sigma=0.645)
    approx = score_patches(q, (32, 32), index, bank, 9, peak_sigma=0.645)
    assert approx.image_score == pytest.approx(exact.image_score, rel=1e-5)
    assert approx.max_patch_score == pytest.approx(exact.max_patch_score, rel=1e-5)
    assert approx.refined <= 0.1 * len(q)


def test_the_banks_first_rows_settle_patches_an_approximate_index_reports_far_too_far():
    bank, q = clustered(3000, 8, 11), clustered(400, 8, 12)
    factor = np.ones(400, np.float32)
    factor[np.random.default_rng(13).choice(400, 40, replace=False)] = 6.0     # 40 patches reported far too far
    d0, i0 = InflatingIndex(bank, factor).search(q)
    exact = ExactIndex(bank)
    plain = refine_top_patches(q, d0[:, 0], i0[:, 0], exact, top=16)
    helped = refine_top_patches(q, d0[:, 0], i0[:, 0], exact, top=16, landmarks=landmark_index(bank))
    true_max = exact.search(q)[0].max()
    assert plain[0].max() == pytest.approx(true_max, rel=1e-5) and helped[0].max() == pytest.approx(true_max, rel=1e-5)
    assert helped[2] < plain[2]              # fewer patches searched against the whole bank


class StrayNeighbourhoodIndex(InflatingIndex):
    """A bad approximate index that finds each query's nearest row but returns the farthest rows as the
    rest of its k neighbours (what an HNSW graph does for a row in a poorly connected part of the bank)."""

    def __init__(self, bank):
        super().__init__(bank, np.ones(len(bank), np.float32))
        self.bank = bank

    def search(self, queries, k=1):
        d, i = self.exact.search(queries, 1)
        if k == 1:
            return d, i
        far_d, far_i = ExactIndex(-self.bank).search(-queries, k - 1)     # not what the real distance says
        return np.concatenate([d, far_d], 1), np.concatenate([i, far_i], 1)


def test_eq7_neighbourhood_is_searched_exactly_with_an_approximate_index():
    bank, q = clustered(400, 8, 6), clustered(64, 8, 7) * 1.3
    exact = score_patches(q, (8, 8), ExactIndex(bank), bank, num_neighbours=9)
    approx = score_patches(q, (8, 8), StrayNeighbourhoodIndex(bank), bank, num_neighbours=9)
    assert approx.max_patch_score == pytest.approx(exact.max_patch_score, rel=1e-5)
    assert approx.image_score == pytest.approx(exact.image_score, rel=1e-5)


def test_the_exported_neighbour_table_is_exact_search_and_scores_as_the_search_does(model_dir_hnsw,
                                                                                    synthetic_category):
    inspector = Inspector(model_dir_hnsw)
    table, bank = inspector.bank_neighbours, inspector.bank
    assert table is not None and table.shape == (len(bank), 9) and table.dtype == np.int32
    _, ids = ExactIndex(np.ascontiguousarray(bank)).search(bank[:200], k=9)
    np.testing.assert_array_equal(np.sort(table[:200], axis=1), np.sort(ids, axis=1))
    frames = [load_image(s.path) for s in MVTecCategory(synthetic_category).test_samples()[::3]]
    with_table = [inspector.raw_score(f) for f in frames]
    inspector.bank_neighbours = None                    # Eq. 7 searched exactly instead
    assert [inspector.raw_score(f) for f in frames] == pytest.approx(with_table, rel=1e-6)


def test_hnsw_model_dir_lists_index_and_measurement(model_dir_hnsw):
    m = json.loads((model_dir_hnsw / "manifest.json").read_text())
    assert set(m["files"]) == {"backbone.onnx", "memory_bank.npy", "index.hnsw", "bank_neighbours.npy"}
    idx = m["index"]
    assert idx["type"] == "hnsw" and idx["file"] == "index.hnsw" and idx["space"] == "l2"
    for key in ("M", "ef_construction", "ef", "refine_top"):
        assert isinstance(idx[key], int)
    assert idx["measured"]["recall_at_1"] >= 0.9
    assert idx["measurement"]["sweep"] and "exact_search_ms_per_image" in idx["measurement"]
    assert m["threshold"]["computed_with"]["index"] == "hnsw"


def test_hnsw_threshold_equals_exact_threshold(model_dir_hnsw, model_dir_onnx):
    hnsw = json.loads((model_dir_hnsw / "manifest.json").read_text())["threshold"]["value"]
    exact = json.loads((model_dir_onnx / "manifest.json").read_text())["threshold"]["value"]
    assert hnsw == pytest.approx(exact, rel=1e-3)


def test_hnsw_inspector_scores_like_exact(model_dir_hnsw, synthetic_category):
    hnsw, exact = Inspector(model_dir_hnsw), Inspector(model_dir_hnsw, index="exact")
    assert hnsw.index.name == "hnsw" and exact.index.name == "exact"
    for s in MVTecCategory(synthetic_category).test_samples()[::2]:
        frame = load_image(s.path)
        a, b = hnsw.check(frame), exact.check(frame)
        assert a.raw_score == pytest.approx(b.raw_score, rel=1e-4)      # the maximum and Eq. 7 searched exactly
        assert a.anomaly_map.shape == frame.shape[:2]


def test_tampered_index_is_refused_by_name(model_dir_hnsw, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(model_dir_hnsw, copy)
    with open(copy / "index.hnsw", "r+b") as fh:
        fh.seek(200)
        byte = fh.read(1)
        fh.seek(200)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelDirError, match=r"index\.hnsw was altered"):
        Inspector(copy)
    (copy / "index.hnsw").unlink()
    with pytest.raises(ModelDirError, match=r"index\.hnsw is missing"):
        Inspector(copy)


def test_unknown_index_type_and_bad_index_argument(model_dir_hnsw, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(model_dir_hnsw, copy)
    path = copy / "manifest.json"
    m = json.loads(path.read_text())
    m["index"]["type"] = "faiss"
    path.write_text(json.dumps(m))
    with pytest.raises(ModelDirError, match="index type 'faiss'"):
        Inspector(copy)
    with pytest.raises(ValueError, match="index must be"):
        Inspector(model_dir_hnsw, index="annoy")


def test_choose_index_modes():
    bank = clustered(2000, 16, 6)
    emb = [clustered(64, 16, 7 + i).T.reshape(16, 8, 8) for i in range(3)]
    assert choose_index(bank, emb, mode="exact").kind == "exact"
    hnsw = choose_index(bank, emb, mode="hnsw", m_grid=(8,), ef_grid=(16, 64))
    assert hnsw.kind == "hnsw" and hnsw.report["ef"] in (16, 64)
    auto = choose_index(bank, emb, mode="auto", m_grid=(8,), ef_grid=(16, 64))
    assert auto.kind in ("exact", "hnsw") and "auto" in auto.report["chosen_by"]      # decided by timing
    with pytest.raises(ValueError, match="no HNSW setting reached"):
        choose_index(bank, emb, mode="hnsw", m_grid=(8,), ef_grid=(8,), targets=HnswTargets(min_recall=1.01))
    with pytest.raises(ValueError, match="unknown index mode"):
        choose_index(bank, emb, mode="lsh")


def test_auto_keeps_exact_for_small_banks(model_dir_openvino):
    m = json.loads((model_dir_openvino / "manifest.json").read_text())
    assert m["index"]["type"] == "exact" and "bank below" in m["index"]["chosen_by"]


def test_distance_error_stays_meaningful_when_exact_distances_are_near_zero():
    import numpy as np

    from apc_edge.export.hnsw_build import _accuracy, _SearchPass

    d_ex = np.array([1e-9, 2.0, 2.0, 2.0], np.float32)            # one patch equals a bank row
    d_ap = d_ex + np.float32(1e-4)                                 # rounding-sized differences
    ids = np.arange(4)
    report = _accuracy(_SearchPass(d_ex, ids, ids, np.ones(1), 1.0, 0.0), _SearchPass(d_ap, ids, ids, np.ones(1), 1.0, 0.0))
    assert report["rel_dist_error_max"] < 1e-3                     # not 1e5
    assert report["recall_at_1"] == 1.0
