"""Exact nearest rows for a few queries without a full pass over the bank: a lower bound first.

Distances split over an orthonormal basis: ``|q - b|^2 = |P(q - b)|^2 + |R(q - b)|^2``, with ``P`` the
projection onto the bank's leading principal axes and ``R`` onto the rest. ``|R(q - b)| >= ||Rq| - |Rb||``
(the triangle inequality), so ``|Pq - Pb|^2 + (|Rq| - |Rb|)^2`` bounds the distance from below. It is a
squared distance in ``r + 1`` dimensions, one matrix product with a table of ``r + 2`` floats per row. A
bank row whose bound lies above a distance already reached (the row of the lowest bound, searched
exactly, or an approximate search's answer) cannot be the nearest; only the few others are compared in
full. A refinement's 20 patches against 80 000 rows of 128 floats: the bound reads 50 floats a row and
leaves about 100 rows a patch to compare.

Example::

    bound = ProjectedBound(bank)                          # bank: (N, D) float32
    dist, ids = bound.nearest(queries)                    # (n,) exact distances and rows, or None
    dist, ids = bound.nearest(queries, upper=approx_dist) # tighter with known upper bounds
"""
from __future__ import annotations

import numpy as np

AXES_SHARE = 3 / 8        # of the embedding's dimensions: the bound's principal axes (48 of 128)
MAX_PAIRS_SHARE = 1 / 16  # of queries x rows: beyond that many rows left to compare, a full pass costs less
PRODUCT_BLOCK = 8192      # bank rows per product of a search (64 queries: a 2 MB temporary)
BUILD_BLOCK = 2048        # bank rows at a time while the table is built (8192: 16 MB more peak RSS at load)
MARGIN = 1e-5             # x (|q|^2 + the largest |b|^2): float32 rounding of the bound, with room


class ProjectedBound:
    """The bound's table for ``bank`` (which it keeps a reference to, for the full comparisons)."""

    def __init__(self, bank: np.ndarray):
        bank = np.asarray(bank, np.float32)
        n, d = bank.shape
        self.bank = bank
        blocks = [(a, min(n, a + BUILD_BLOCK)) for a in range(0, n, BUILD_BLOCK)]   # no temporary of the bank's size
        centre = sum(bank[a:b].sum(axis=0, dtype=np.float64) for a, b in blocks) / n
        scatter = np.zeros((d, d))
        for a, b in blocks:
            block = bank[a:b] - centre
            scatter += block.T @ block
        rank = max(1, min(d - 1, round(d * AXES_SHARE)))
        _, vectors = np.linalg.eigh(scatter)      # ascending eigenvalues: the leading axes are the last
        self.centre = centre.astype(np.float32)
        self.axes = np.ascontiguousarray(vectors[:, ::-1][:, :rank], np.float32)
        self.table = np.empty((rank + 2, n), np.float32)     # rows: Pb, |Rb|, |Pb|^2 + |Rb|^2
        for a, b in blocks:
            projected, rest = self._split(bank[a:b])
            self.table[:rank, a:b] = projected.T
            self.table[rank, a:b] = rest
            self.table[rank + 1, a:b] = np.einsum("ij,ij->i", projected, projected) + rest * rest
        self._slack = MARGIN * float(self.table[rank + 1].max())

    def _split(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P x, |R x|) of centred ``rows``; the rest's norm computed from the rest, not as |x|^2 - |Px|^2."""
        centred = rows - self.centre
        projected = centred @ self.axes
        return projected, np.linalg.norm(centred - projected @ self.axes.T, axis=1)

    @property
    def nbytes(self) -> int:
        return self.table.nbytes

    def nearest(self, queries: np.ndarray, upper: np.ndarray | None = None, exclude: np.ndarray | None = None,
                parts: list[tuple[int, int]] | None = None, pool=None) -> tuple[np.ndarray, np.ndarray] | None:
        """Each query's exact nearest bank row (lowest row on a tie) as ``(distances, rows)``, both (n,);
        ``None`` when the bound leaves so many rows to compare that a full pass is cheaper.

        ``upper``: distances no query's nearest row lies beyond (an approximate search's answers); a query
        it understates is searched again without it. ``exclude``: sorted unique rows never returned.
        ``parts``: contiguous row ranges searched side by side on ``pool``'s threads (default: all rows)."""
        q = np.ascontiguousarray(queries, np.float32)
        projected, rest = self._split(q)
        q_rows = np.empty((q.shape[0], self.table.shape[0]), np.float32)
        np.multiply(projected, -2.0, out=q_rows[:, :-2])
        q_rows[:, -2] = -2.0 * rest
        q_rows[:, -1] = 1.0
        q_sq = np.einsum("ij,ij->i", projected, projected) + rest * rest
        slack = MARGIN * q_sq + self._slack
        upper_sq = None if upper is None else np.square(np.asarray(upper, np.float32))
        parts = parts or [(0, self.table.shape[1])]
        args = (q, q_rows, q_sq, slack, upper_sq, exclude)
        if len(parts) == 1 or pool is None:
            found = [self._part(*args, lo, hi) for lo, hi in parts]
        else:
            found = [f.result() for f in [pool.submit(self._part, *args, lo, hi) for lo, hi in parts]]
        if any(f is None for f in found):
            return None
        query_of = np.concatenate([f[0] for f in found])
        row_of = np.concatenate([f[1] for f in found])
        dist_sq = np.concatenate([f[2] for f in found])
        best_sq = np.full(q.shape[0], np.inf, np.float32)
        best_row = np.zeros(q.shape[0], np.int64)
        order = np.lexsort((row_of, dist_sq, query_of))    # by query, then distance, then row
        first = np.ones(order.size, bool)
        first[1:] = query_of[order[1:]] != query_of[order[:-1]]
        best_sq[query_of[order[first]]] = dist_sq[order[first]]
        best_row[query_of[order[first]]] = row_of[order[first]]
        if upper_sq is not None:      # an understated upper bound ruled out the true nearest row: search again
            missed = np.flatnonzero(~(best_sq <= upper_sq * (1 + 4 * MARGIN) + slack))
            if missed.size:
                again = self.nearest(q[missed], None, exclude, parts, pool)
                if again is None:
                    return None
                best_sq[missed], best_row[missed] = np.square(again[0]), again[1]
        return np.sqrt(best_sq), best_row

    def _part(self, q, q_rows, q_sq, slack, upper_sq, exclude, lo: int, hi: int):
        """(query, row, squared distance) of the rows ``lo:hi`` the bound leaves for each query, or None.

        Taken ``PRODUCT_BLOCK`` rows at a time, so the bound's temporary stays a few MB for any batch; each
        block's lowest-bound row, compared in full, can only lower the reach the next blocks are held to."""
        reach = np.full(q.shape[0], np.inf, np.float32) if upper_sq is None else upper_sq.copy()
        budget = MAX_PAIRS_SHARE * q.shape[0] * (hi - lo)
        kept: list[tuple[np.ndarray, np.ndarray]] = []
        count = 0
        for start in range(lo, hi, PRODUCT_BLOCK):
            stop = min(hi, start + PRODUCT_BLOCK)
            bound = q_rows @ self.table[:, start:stop]           # lower bound^2 - |q|^2 (centred)
            if exclude is not None:
                bound[:, exclude[(exclude >= start) & (exclude < stop)] - start] = np.inf
            lowest = np.argmin(bound, axis=1)
            diff = q - self.bank[lowest + start]
            lowest_sq = np.einsum("ij,ij->i", diff, diff)
            lowest_sq[~np.isfinite(bound[np.arange(q.shape[0]), lowest])] = np.inf    # whole block excluded
            np.minimum(reach, lowest_sq, out=reach)
            limit = np.where(np.isfinite(reach), reach - q_sq + slack, -np.inf)
            flat = np.flatnonzero(bound <= limit[:, None])
            count += flat.size
            if count > budget:
                return None
            kept.append(np.divmod(flat, stop - start))
            kept[-1][1][:] += start
        query_of = np.concatenate([k[0] for k in kept])
        row_of = np.concatenate([k[1] for k in kept])
        diff = q[query_of] - self.bank[row_of]
        return query_of, row_of, np.einsum("ij,ij->i", diff, diff)
