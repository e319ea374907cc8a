"""Each bank row's nearest bank rows, computed once at export: Eq. 7's neighbourhood without a search.

PatchCore's Eq. 7 weighs the most anomalous patch by the ``b`` bank rows nearest to its
nearest bank row ``m*``. That neighbourhood depends on the bank alone, so the export
searches it exactly for every row and stores the table (``bank_neighbours.npy``,
int32 (N, b), each row's own id first, listed in the manifest with a sha256 like every
file). A check then reads one row of it instead of searching the bank once more (an
exact pass over 40 000 rows costs 1.5-2 ms inside ``check()``; HNSW misses some
rows' neighbourhoods).

Example::

    table = compute_bank_neighbours(bank, k=9)             # at export
    table = extend_bank_neighbours(table, grown_bank, old_rows=len(bank), k=9)    # apc-update
    np.save("models/bottle/bank_neighbours.npy", table)
    table = read_bank_neighbours(data, "models/bottle/bank_neighbours.npy", rows=len(bank), k=9)
"""
from __future__ import annotations

import numpy as np

from .bank_file import read_npy_header
from .index import ExactIndex
from .manifest import ModelDirError

FILE_NAME = "bank_neighbours.npy"
DTYPES = {np.dtype("<i4"): "int32"}


def compute_bank_neighbours(bank: np.ndarray, k: int) -> np.ndarray:
    """(N, min(k, N)) int32: each bank row's ``k`` nearest bank rows by exact search, the row itself first."""
    bank = np.ascontiguousarray(bank, np.float32)
    k = min(int(k), bank.shape[0])
    _, ids = ExactIndex(bank).search(bank, k=k)
    return _own_first(ids, np.arange(bank.shape[0]), k)


def extend_bank_neighbours(table: np.ndarray | None, bank: np.ndarray, old_rows: int, k: int) -> np.ndarray:
    """The table of ``bank`` whose first ``old_rows`` rows ``table`` describes (apc-update appends rows): the
    added rows searched against the whole bank, the old rows' lists merged with their nearest added rows, so
    only pairs with an added row are compared (the same table as :func:`compute_bank_neighbours`, up to
    float rounding between equally near rows). Without a fitting ``table`` it is computed afresh."""
    bank = np.ascontiguousarray(bank, np.float32)
    k = min(int(k), bank.shape[0])
    if table is None or table.shape != (old_rows, k) or old_rows < k:
        return compute_bank_neighbours(bank, k)
    if old_rows == bank.shape[0]:
        return table
    old, added = bank[:old_rows], bank[old_rows:]
    _, add_ids = ExactIndex(bank).search(added, k=k)
    add_table = _own_first(add_ids, np.arange(old_rows, bank.shape[0]), k)
    near_d, near_i = ExactIndex(added).search(old, k=min(k, added.shape[0]))
    old_d = np.empty(table.shape, np.float32)
    for a in range(0, old_rows, 4096):           # the listed neighbours' distances, 4096 rows at a time
        rows = old[a:a + 4096]
        old_d[a:a + 4096] = np.linalg.norm(bank[table[a:a + 4096]] - rows[:, None, :], axis=2)
    merged_d = np.concatenate([old_d, near_d], axis=1)
    merged_i = np.concatenate([table.astype(np.int64), near_i + old_rows], axis=1)
    order = np.argsort(merged_d, axis=1, kind="stable")[:, :k]        # the row itself (distance 0) stays first
    old_table = _own_first(np.take_along_axis(merged_i, order, axis=1), np.arange(old_rows), k)
    return np.concatenate([old_table, add_table]).astype(np.int32)


def _own_first(ids: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """(n, k) int32 lists with row ``own[i]`` first, then the others of ``ids[i]`` in their order (an
    identical row may tie with the row itself, or push it out of the k searched)."""
    others = np.where(ids == own[:, None], -1, ids)
    others = np.take_along_axis(others, np.argsort(others < 0, axis=1, kind="stable"), axis=1)
    return np.concatenate([own[:, None], others[:, :k - 1]], axis=1).astype(np.int32)


def read_bank_neighbours(data: bytes | bytearray, where: str, rows: int, k: int) -> np.ndarray:
    """The table from a ``.npy`` file's verified bytes, refused unless it is int32 (``rows``, >= min(k, rows))
    with every id a bank row and each row's own id first."""
    shape, dtype, offset = read_npy_header(data, where, DTYPES, "a neighbour table is little-endian int32",
                                           "the neighbour table")
    need = min(int(k), int(rows))
    if len(shape) != 2 or shape[0] != rows or shape[1] < need:
        raise ModelDirError(f"{where}: neighbour table shape {shape} does not fit a bank of {rows} rows and "
                            f"scoring.num_neighbours {k} (rows, at least {need}); re-export the model dir")
    table = np.frombuffer(data, dtype=dtype, count=shape[0] * shape[1], offset=offset).reshape(shape)
    if table.min() < 0 or table.max() >= rows:
        raise ModelDirError(f"{where}: neighbour ids must be bank rows 0..{rows - 1}, found "
                            f"{int(table.min())}..{int(table.max())}; re-export the model dir")
    if not np.array_equal(table[:, 0], np.arange(rows)):
        bad = int(np.flatnonzero(table[:, 0] != np.arange(rows))[0])
        raise ModelDirError(f"{where}: row {bad} of the neighbour table does not start with its own id; "
                            f"re-export the model dir")
    return table
