"""The projected lower bound finds each query's exact nearest bank row, or declines; never a wrong row."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from apc_edge.index import ExactIndex
from apc_edge.projected_bound import ProjectedBound


def clustered_bank(rows: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Patch-like rows: a few clusters in an 8-d subspace plus small noise in every dimension,
    with duplicate rows (a coreset of real patches holds near-copies)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, 8)))[0].T
    centres = rng.standard_normal((12, 8)) * 4
    latent = centres[rng.integers(0, 12, rows)] + rng.standard_normal((rows, 8))
    bank = (latent @ basis + 0.1 * rng.standard_normal((rows, dim))).astype(np.float32)
    bank[rows - 5] = bank[7]                      # duplicates: the lower row is the answer
    bank[rows // 2] = bank[3]
    return bank


def queries_for(bank: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    near = bank[rng.integers(0, len(bank), n - 3)] + 0.05 * rng.standard_normal((n - 3, bank.shape[1]))
    far = 3 * rng.standard_normal((1, bank.shape[1]))       # an anomaly: far from every cluster
    return np.concatenate([near, far, bank[[7, 3]]]).astype(np.float32)


def brute_force_nearest(q, bank, exclude=None):
    d = np.linalg.norm(q[:, None, :].astype(np.float64) - bank[None].astype(np.float64), axis=2)
    if exclude is not None:
        d[:, exclude] = np.inf
    ids = np.argmin(d, axis=1)                  # the first, i.e. lowest, row on a tie
    return d[np.arange(len(q)), ids], ids


@pytest.fixture(scope="module")
def bank():
    return clustered_bank(10_000)


def test_the_bound_is_below_every_true_distance(bank):
    bound = ProjectedBound(bank)
    q = queries_for(bank, 20)
    projected, rest = bound._split(q)
    table = bound.table.astype(np.float64)
    r = projected.shape[1]
    lower_sq = (np.square(projected[:, :, None] - table[None, :r]).sum(axis=1)
                + np.square(rest[:, None] - table[None, r]))
    true_sq = np.square(np.linalg.norm(q[:, None, :].astype(np.float64) - bank[None], axis=2))
    assert (lower_sq <= true_sq * (1 + 1e-5) + 1e-4).all()
    assert np.median(lower_sq / np.maximum(true_sq, 1e-9)) > 0.5      # and tight enough to rule rows out


def test_nearest_matches_brute_force_with_the_lowest_row_on_a_tie(bank):
    q = queries_for(bank, 30)
    found = ProjectedBound(bank).nearest(q)
    assert found is not None                          # clustered data: the bound rules most rows out
    ref_d, ref_ids = brute_force_nearest(q, bank)
    np.testing.assert_array_equal(found[1], ref_ids)
    np.testing.assert_allclose(found[0], ref_d, rtol=1e-5, atol=1e-3)
    assert found[1][-2:].tolist() == [7, 3]           # the duplicates' own (lower) rows


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_an_upper_bound_too_low_too_high_or_exact_changes_no_answer(bank, scale):
    q = queries_for(bank, 25, seed=2)
    ref_d, ref_ids = brute_force_nearest(q, bank)
    upper = (ref_d * scale).astype(np.float32)
    upper[0] = 0.0                                    # an understated upper bound of zero: searched again
    found = ProjectedBound(bank).nearest(q, upper=upper)
    assert found is not None
    np.testing.assert_array_equal(found[1], ref_ids)
    np.testing.assert_allclose(found[0], ref_d, rtol=1e-5, atol=1e-3)


def test_excluded_rows_and_a_fully_excluded_part_are_never_returned(bank):
    q = queries_for(bank, 20, seed=3)
    half = len(bank) // 2
    parts = [(0, half), (half, len(bank))]
    exclude = np.union1d(np.arange(half), [7, half + 1, len(bank) - 5])    # all of the first part and more
    ref_d, ref_ids = brute_force_nearest(q, bank, exclude)
    bound = ProjectedBound(bank)
    for upper in (None, (ref_d * 1.5).astype(np.float32)):
        found = bound.nearest(q, upper=upper, exclude=exclude, parts=parts)
        assert found is not None
        assert not np.isin(found[1], exclude).any()
        np.testing.assert_array_equal(found[1], ref_ids)
        np.testing.assert_allclose(found[0], ref_d, rtol=1e-5, atol=1e-3)


def test_parts_on_threads_find_what_one_pass_finds(bank):
    q = queries_for(bank, 20, seed=4)
    bound = ProjectedBound(bank)
    parts = [(0, 3333), (3333, 6666), (6666, len(bank))]
    with ThreadPoolExecutor(3) as pool:
        split = bound.nearest(q, parts=parts, pool=pool)
    single = bound.nearest(q)
    np.testing.assert_array_equal(split[1], single[1])
    np.testing.assert_allclose(split[0], single[0], rtol=1e-6)


def test_isotropic_data_declines_and_the_exact_index_still_answers_exactly():
    rng = np.random.default_rng(5)
    bank = rng.standard_normal((ExactIndex.BOUND_MIN_ROWS + 100, 64)).astype(np.float32)
    q = rng.standard_normal((12, 64)).astype(np.float32)
    assert ProjectedBound(bank).nearest(q) is None    # no leading axes: the bound rules out too few rows
    d, ids = ExactIndex(bank).search(q, k=1)
    ref_d, ref_ids = brute_force_nearest(q, bank)
    np.testing.assert_array_equal(ids[:, 0], ref_ids)
    np.testing.assert_allclose(d[:, 0], ref_d, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_exact_index_searches_a_small_batch_through_the_bound(bank, threads):
    index = ExactIndex(bank, threads=threads)
    q = queries_for(bank, 16, seed=6)
    exclude = np.array([3, 7, 100])
    ref_d, ref_ids = brute_force_nearest(q, bank, exclude)
    d, ids = index.search(q, k=1, exclude=exclude, upper=ref_d.astype(np.float32) * 1.01)
    assert index._bound is not None and index.prepare_bound() == index._bound.nbytes > 0
    np.testing.assert_array_equal(ids[:, 0], ref_ids)
    np.testing.assert_allclose(d[:, 0], ref_d, rtol=1e-5, atol=1e-3)
    assert ExactIndex(bank[:ExactIndex.BOUND_MIN_ROWS - 1]).prepare_bound() == 0     # small banks: no table
