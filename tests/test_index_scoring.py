import numpy as np
import pytest

from apc_edge.index import ExactIndex, found_nearest
from apc_edge.scoring import (ScoreNormalizer, eq7_weight, peak_sigma_cells, score_embedding, score_neighbours,
                               smooth_map)


def brute_force(q, bank, k):
    d = np.linalg.norm(q[:, None, :].astype(np.float64) - bank[None].astype(np.float64), axis=2)
    ids = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, ids, axis=1), ids


@pytest.mark.parametrize("k, chunk", [(1, 7), (1, 10000), (5, 13), (9, 1000)])
def test_exact_index_matches_brute_force(k, chunk):
    rng = np.random.default_rng(k)
    bank = rng.standard_normal((300, 16)).astype(np.float32)
    q = rng.standard_normal((50, 16)).astype(np.float32)
    d, ids = ExactIndex(bank, chunk=chunk).search(q, k)
    ref_d, ref_ids = brute_force(q, bank, k)
    np.testing.assert_allclose(d, ref_d, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(ids, ref_ids)


@pytest.mark.parametrize("k, chunk", [(1, 7), (1, 4096), (5, 13)])
def test_exact_index_many_queries_take_the_one_product_path_and_match_brute_force(k, chunk):
    rng = np.random.default_rng(10 + k)
    bank = rng.standard_normal((300, 16)).astype(np.float32)
    q = rng.standard_normal((ExactIndex.AUGMENT_FROM + 44, 16)).astype(np.float32)
    index = ExactIndex(bank, chunk=chunk)
    d, ids = index.search(q, k)
    assert index._augmented is not None                  # the [b, |b|^2] copy was used
    ref_d, ref_ids = brute_force(q, bank, k)
    np.testing.assert_allclose(d, ref_d, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(ids, ref_ids)
    exclude = np.arange(0, 300, 3)
    d_x, ids_x = index.search(q, k, exclude=exclude)
    assert not np.isin(ids_x, exclude).any()
    few_d, few_ids = ExactIndex(bank, chunk=chunk).search(q[:40], k, exclude=exclude)   # the other path
    np.testing.assert_allclose(d_x[:40], few_d, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(ids_x[:40], few_ids)


def test_found_nearest_counts_a_tie_between_duplicate_rows_and_not_a_farther_row():
    bank = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0]], np.float32)     # rows 0 and 1 are duplicates
    true_d, true_ids = ExactIndex(bank).search(np.array([[0.0, 0.0], [0.0, 0.0]], np.float32), k=1)
    found = found_nearest(np.array([1, 2]), np.array([0.0, 5.0]), true_ids[:, 0], true_d[:, 0])
    assert found.tolist() == [True, False]


def test_exact_index_rejects_empty_bank():
    with pytest.raises(ValueError, match="non-empty"):
        ExactIndex(np.zeros((0, 4), np.float32))


def test_eq7_weight_hand_case():
    # Bank in 1-D: m* = 0 with neighbours at 0, 1, 2 (b = 3). Test patch at 0.5.
    bank = np.array([[0.0], [1.0], [2.0], [10.0]], np.float32)
    w = eq7_weight(np.array([0.5], np.float32), 0, bank, ExactIndex(bank), num_neighbours=3)
    d = np.array([0.5, 0.5, 1.5])
    assert w == pytest.approx(1 - np.exp(d[0]) / np.exp(d).sum())
    assert eq7_weight(np.array([0.5], np.float32), 0, bank, ExactIndex(bank), num_neighbours=1) == 1.0


def test_score_embedding_takes_max_patch_and_reweights():
    rng = np.random.default_rng(3)
    bank = rng.standard_normal((200, 8)).astype(np.float32)
    emb = rng.standard_normal((8, 4, 5)).astype(np.float32) * 0.1
    emb[:, 2, 3] += 6.0                                      # one clearly anomalous patch
    s = score_embedding(emb, ExactIndex(bank), bank, num_neighbours=9)
    ref_d, _ = brute_force(emb.reshape(8, -1).T, bank, 1)
    np.testing.assert_allclose(s.patch_map.ravel(), ref_d[:, 0], rtol=1e-4)
    assert np.unravel_index(np.argmax(s.patch_map), s.patch_map.shape) == (2, 3)
    assert s.max_patch_score == pytest.approx(ref_d.max(), rel=1e-4)
    assert 0 < s.image_score < s.max_patch_score


def test_smooth_map_size_and_blur():
    m = np.zeros((4, 4), np.float32)
    m[1, 1] = 1.0
    out = smooth_map(m, (32, 32), sigma=4.0)
    assert out.shape == (32, 32)
    assert out.max() < 1.0 and out.min() >= 0.0            # blur spreads the peak
    assert smooth_map(m, (32, 32), sigma=0).max() > 2 * out.max()   # sigma=0: upsampling only


def test_normalizer_puts_threshold_at_half():
    n = ScoreNormalizer(threshold=2.0, lo=1.0, hi=3.0)
    assert n(2.0) == pytest.approx(0.5)
    assert n(1.0) == pytest.approx(0.0) and n(3.0) == pytest.approx(1.0)
    assert n(100.0) == 1.0 and n(-5.0) == 0.0
    assert n.with_threshold(2.5)(2.5) == pytest.approx(0.5)


def test_exact_search_keeps_a_column_major_bank_and_finds_the_same_rows():
    rng = np.random.default_rng(11)
    bank = rng.standard_normal((9000, 32)).astype(np.float32)
    queries = rng.standard_normal((20, 32)).astype(np.float32)
    by_rows, by_columns = ExactIndex(bank), ExactIndex(np.asfortranarray(bank))
    assert by_columns.bank.flags.f_contiguous                     # no row-major copy made
    (d_r, i_r), (d_c, i_c) = by_rows.search(queries, k=3), by_columns.search(queries, k=3)
    assert np.array_equal(i_r, i_c) and np.allclose(d_r, d_c, rtol=1e-5)


@pytest.mark.parametrize("threads, k", [(2, 1), (2, 9), (3, 1), (3, 5)])
def test_exact_search_split_over_threads_finds_what_one_thread_finds(threads, k):
    rng = np.random.default_rng(20 + threads + k)
    bank = rng.standard_normal((ExactIndex.SPLIT_MIN_ROWS + 3000, 24)).astype(np.float32)
    bank[-7] = bank[5]                               # a duplicate row in the first and in the last part
    queries = np.concatenate([rng.standard_normal((15, 24)).astype(np.float32), bank[[5]]])
    split, single = ExactIndex(np.asfortranarray(bank), threads=threads), ExactIndex(bank)
    assert len(split._split_rows(len(queries))) == threads and len(single._split_rows(len(queries))) == 1
    assert len(split._split_rows(ExactIndex.AUGMENT_FROM)) == 1      # large batches stay on BLAS
    for exclude in (None, np.array([5, 17, len(bank) - 1])):
        (d_s, i_s), (d_1, i_1) = split.search(queries, k, exclude), single.search(queries, k, exclude)
        np.testing.assert_array_equal(i_s, i_1)
        # |b|^2 - 2 q.b rounds differently at another position in a block: near 0 its square root shows it
        np.testing.assert_allclose(d_s, d_1, rtol=1e-5, atol=1e-2)
    assert i_1[-1, 0] in (5, len(bank) - 7) and d_1[-1, 0] < 1e-2     # the duplicate's own row, or its twin
    assert split.search(queries[-1:], 1, np.array([5]))[1][0, 0] == len(bank) - 7


def test_the_map_peak_ranks_a_defect_over_a_lone_hot_patch():
    """A 3 x 3 defect at 2.5 against a lone patch at 3.0: the paper's maximum ranks the lone patch higher,
    the map's peak (the anomaly map's own blur) ranks the defect higher; b = 1, so no reweighting."""
    bank = np.zeros((4, 2), np.float32)
    patches, ids = np.zeros((64, 2), np.float32), np.zeros(64, np.int64)
    lone, defect = np.ones((8, 8), np.float32), np.ones((8, 8), np.float32)
    lone[3, 3] = 3.0
    defect[2:5, 2:5] = 2.5
    sigma = peak_sigma_cells(4.0, 8)
    assert sigma == pytest.approx(np.sqrt(16 + 64 / 6) / 8)

    def score(m, s):
        return score_neighbours(patches, m.ravel(), ids, (8, 8), ExactIndex(bank), bank, 1, peak_sigma=s)

    assert score(lone, 0).image_score == 3.0 > score(defect, 0).image_score == 2.5
    assert score(defect, sigma).image_score > score(lone, sigma).image_score
    w = np.exp(-0.5 / sigma ** 2)           # the 3 x 3 Gaussian's edge weight, the centre's being 1
    expected = 1 + 2.0 / (1 + 2 * w) ** 2   # the lone patch's smoothed value: 1 + 2 x the centre's share
    assert score(lone, sigma).image_score == pytest.approx(expected, rel=1e-5)
    assert score(lone, sigma).max_patch_score == 3.0


def test_the_map_peak_is_read_on_the_scored_cells_only():
    """Pad mode: the peak lies on the part's cells; the canvas outside is never the peak."""
    bank = np.zeros((4, 2), np.float32)
    cells = np.array([r * 8 + c for r in range(2, 6) for c in range(2, 6)])
    dist = np.linspace(1.0, 2.0, cells.size).astype(np.float32)
    s = score_neighbours(np.zeros((cells.size, 2), np.float32), dist, np.zeros(cells.size, np.int64), (8, 8),
                         ExactIndex(bank), bank, 1, cells=cells, peak_sigma=0.645)
    assert 1.0 < s.image_score <= 2.0
