"""Eq. 7's neighbour table: exact search's lists, the row itself first, and apc-update's extension of it."""
import numpy as np

from apc_edge.bank_neighbours import compute_bank_neighbours, extend_bank_neighbours
from apc_edge.index import ExactIndex


def spread(n, d, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((20, d))[rng.integers(0, 20, n)] * 4 + rng.standard_normal((n, d))).astype(np.float32)


def test_table_lists_each_rows_exact_nearest_rows_itself_first():
    bank = spread(5000, 16, 0)                      # more than one block of the exact search
    table = compute_bank_neighbours(bank, 9)
    _, ids = ExactIndex(bank).search(bank, k=9)
    assert table.dtype == np.int32 and table.shape == (5000, 9)
    np.testing.assert_array_equal(table[:, 0], np.arange(5000))
    np.testing.assert_array_equal(table, ids)


def test_an_identical_row_never_pushes_a_row_out_of_its_own_list():
    bank = spread(300, 8, 1)
    bank[7] = bank[3]
    table = compute_bank_neighbours(bank, 5)
    assert table[3, 0] == 3 and table[7, 0] == 7 and 7 in table[3] and 3 in table[7]


def listed_distances(bank, table):
    b = bank.astype(np.float64)
    return np.sort(np.linalg.norm(b[table] - b[:, None, :], axis=2), axis=1)


def test_extending_the_table_for_added_rows_equals_computing_it_afresh():
    bank = spread(6000, 16, 2)
    fresh = compute_bank_neighbours(bank, 9)
    extended = extend_bank_neighbours(compute_bank_neighbours(bank[:4500], 9), bank, 4500, 9)
    np.testing.assert_array_equal(extended[:, 0], np.arange(6000))
    # the same lists, but for the order of rows equally near to float32 rounding (|b|^2 - 2 q.b + |q|^2)
    assert (extended == fresh).all(axis=1).mean() > 0.99
    np.testing.assert_allclose(listed_distances(bank, extended), listed_distances(bank, fresh), rtol=1e-5)
    np.testing.assert_array_equal(extend_bank_neighbours(None, bank, 4500, 9), fresh)
