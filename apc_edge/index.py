"""Nearest-neighbour search over the memory bank, kept outside the exported graph.

:class:`ExactIndex` is chunked numpy brute force (exact, bounded memory).
:class:`HnswIndex` searches an hnswlib graph saved in the model dir
(``index.hnsw``); both return Euclidean distances and bank row ids.

Example::

    index = ExactIndex(bank)                   # bank: (N, D) float32
    dist, ids = index.search(queries, k=1)     # Euclidean distances, (n, k)
    index = HnswIndex.load("models/bottle/index.hnsw", dim=128, size=len(bank), ef=64)

hnswlib compiles its extension with ``-march=native``: a build made on a newer
CPU can crash with "illegal instruction" on an older camera PC. Install it there
with ``HNSWLIB_NO_NATIVE=1 pip install --no-binary hnswlib hnswlib`` for a
portable build.
"""
from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .hnsw_file import check_index
from .model_files import private_copy
from .projected_bound import ProjectedBound


class _ProcessPool:
    """A thread pool for one index, made again for another thread count or in a forked child (which has none
    of its parent's pool threads); the pool it replaces in the same process is shut down."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self._pool: ThreadPoolExecutor | None = None
        self._key = (0, 0)               # (threads, process id) the pool was made for

    def get(self, threads: int) -> ThreadPoolExecutor:
        key = (int(threads), os.getpid())
        if self._key != key:
            if self._pool is not None and self._key[1] == key[1]:
                self._pool.shutdown(wait=False)
            self._pool, self._key = ThreadPoolExecutor(key[0], thread_name_prefix=self.prefix), key
        return self._pool


class MissingLibrary(ImportError):
    """A library this model dir needs is not installed; the message names the extra to install."""


def _hnswlib():
    try:
        import hnswlib
    except ImportError:
        raise MissingLibrary("this model dir searches an HNSW index, but hnswlib is not installed: "
                             "pip install 'apc-edge[hnsw]', or load it with Inspector(index='exact')") from None
    return hnswlib


def found_nearest(ids: np.ndarray, dists: np.ndarray, true_ids: np.ndarray, true_dists: np.ndarray) -> np.ndarray:
    """Per query: did a search find the true nearest bank row, or another one exactly as near (a tie, as between
    the near-duplicate rows a bank of similar images holds)? The mean is recall@1.

    Example::

        recall = found_nearest(hnsw_ids, hnsw_d, exact_ids, exact_d).mean()
    """
    return (np.asarray(ids) == np.asarray(true_ids)) | np.isclose(dists, true_dists, rtol=1e-6, atol=1e-7)


class NeighbourIndex(ABC):
    """k-nearest-neighbour search returning Euclidean distances and bank row ids."""

    name: str = "?"
    approximate: bool = False   # True: distances may exceed the true ones (never fall below)
    exact: "NeighbourIndex | None" = None   # an approximate index's exact search over the same bank, if it has one

    @abstractmethod
    def search(self, queries: np.ndarray, k: int = 1, exclude: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(distances, ids)``, each (n, k), nearest first; rows in ``exclude`` are never returned."""

    @property
    @abstractmethod
    def size(self) -> int:
        """Number of vectors in the index."""


class ExactIndex(NeighbourIndex):
    """Exact search: ``|b|^2 - 2 q.b`` (plus ``|q|^2`` for the picked rows) in blocks that fit the cache.

    From ``AUGMENT_FROM`` queries on, the bank is kept once more as rows ``[b, |b|^2]`` and the queries as
    ``[-2q, 1]``, so one matrix product per block gives ``|b|^2 - 2 q.b`` with no elementwise passes over
    it (1.7x on 4096 queries against 40 000 rows, 1.4x on a leave-one-out image). A check with an HNSW
    index refines at most a few dozen patches exactly and never builds that copy.

    A batch of fewer than ``AUGMENT_FROM`` queries with ``k`` = 1 against ``BOUND_MIN_ROWS`` bank rows or more
    (the refinement of an approximate search, :mod:`apc_edge.scoring`) is searched through a lower bound
    from the bank's principal axes (:class:`~apc_edge.projected_bound.ProjectedBound`, built on first use
    or by :meth:`prepare_bound`; 50 floats a row beside the bank's 128): the rows it cannot rule out are
    compared in full, and ``upper`` (an approximate search's distances) tightens it. The answers are exact.

    ``threads`` >= 2: a batch of fewer than ``AUGMENT_FROM`` queries (an HNSW check's refinement) against
    ``SPLIT_MIN_ROWS`` bank rows or more is searched in that many contiguous parts of the bank at once, one
    thread each (numpy releases the GIL in the product), for the Inspector, whose BLAS stays on one thread
    beside an HNSW index (:mod:`apc_edge.threads`). Such a product reads the whole bank for few queries and
    is bound by memory: 16 queries against a 40 000 x 128 column-major bank took 2.9-3.7 ms on one thread
    and 1.8-2.5 ms on two (alternating in one process). The bound's product is split the same way. The
    answers are the same.
    """

    name = "exact"
    AUGMENT_FROM = 256      # queries
    QUERY_CHUNK = 2048      # queries per pass
    BANK_CHUNK = 4096       # bank rows per block: the temporary is at most 32 MB
    SPLIT_MIN_ROWS = 8192   # bank rows from which ``threads`` split a small batch
    BOUND_MIN_ROWS = 8192   # bank rows from which a small batch's nearest rows are found through the bound

    def __init__(self, bank: np.ndarray, chunk: int | None = None, threads: int = 1):
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ValueError(f"memory bank must be a non-empty (N, D) array, got shape {bank.shape}")
        bank = np.asarray(bank, dtype=np.float32)
        # kept as given when contiguous either way (a column-major bank makes each block of rows a contiguous
        # (D, rows) operand); the Inspector's is row-major, as the bound's full comparisons gather rows
        self.bank = bank if bank.flags.c_contiguous or bank.flags.f_contiguous else np.ascontiguousarray(bank)
        self.bank_sq = np.einsum("ij,ij->i", self.bank, self.bank)
        self.chunk = int(chunk or self.BANK_CHUNK)
        self.threads = max(1, int(threads))
        self._augmented: np.ndarray | None = None
        self._bound: ProjectedBound | None = None
        self._bound_lock = threading.Lock()
        self._pool = _ProcessPool("exact")

    @property
    def size(self) -> int:
        return self.bank.shape[0]

    def _augmented_bank(self) -> np.ndarray:
        if self._augmented is None:
            rows = np.empty((self.size, self.bank.shape[1] + 1), np.float32)
            rows[:, :-1] = self.bank
            rows[:, -1] = self.bank_sq
            self._augmented = rows
        return self._augmented

    def prepare_bound(self) -> int:
        """Build the lower bound's table now (not at the first small search); returns its bytes, 0 if none."""
        if self.size < self.BOUND_MIN_ROWS:
            return 0
        with self._bound_lock:
            if self._bound is None:
                self._bound = ProjectedBound(self.bank)
        return self._bound.nbytes

    def search(self, queries: np.ndarray, k: int = 1, exclude: np.ndarray | None = None,
               upper: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest bank rows; rows listed in ``exclude`` are never returned (leave-one-out scoring).
        ``upper`` (k = 1): distances each query's nearest row is known to lie within, e.g. an approximate
        search's answers; they only speed the search up."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.shape[0] > self.QUERY_CHUNK:
            parts = [self.search(q[a:a + self.QUERY_CHUNK], k, exclude) for a in range(0, q.shape[0], self.QUERY_CHUNK)]
            return np.concatenate([d for d, _ in parts]), np.concatenate([i for _, i in parts])
        exclude = np.unique(np.asarray(exclude, np.int64)) if exclude is not None else None
        k = min(k, self.size - (0 if exclude is None else exclude.size))
        if k < 1:
            raise ValueError("nothing left to search: every bank row is excluded")
        if k == 1 and q.shape[0] < self.AUGMENT_FROM and self.prepare_bound():
            parts = self._split_rows(q.shape[0])
            found = self._bound.nearest(q, upper, exclude, parts, self._pool.get(self.threads) if len(parts) > 1
                                        else None)
            if found is not None:
                return found[0][:, None], found[1][:, None]
        q_sq = np.einsum("ij,ij->i", q, q)[:, None]
        if q.shape[0] >= self.AUGMENT_FROM:
            bank_rows = self._augmented_bank()
            q_rows = np.empty((q.shape[0], q.shape[1] + 1), np.float32)
            np.multiply(q, -2.0, out=q_rows[:, :-1])
            q_rows[:, -1] = 1.0

            def partial_d2(start: int, stop: int) -> np.ndarray:
                return q_rows @ bank_rows[start:stop].T
        else:
            def partial_d2(start: int, stop: int) -> np.ndarray:
                d2 = np.matmul(q, self.bank[start:stop].T)
                d2 *= -2.0
                d2 += self.bank_sq[None, start:stop]
                return d2
        parts = self._split_rows(q.shape[0])
        if len(parts) == 1:
            best_d, best_i = self._scan(partial_d2, q_sq, k, exclude, 0, self.size)
        else:
            pool = self._pool.get(self.threads)
            done = [pool.submit(self._scan, partial_d2, q_sq, k, exclude, lo, hi) for lo, hi in parts]
            found = [f.result() for f in done]
            merged_d = np.concatenate([d for d, _ in found], axis=1)
            merged_i = np.concatenate([i for _, i in found], axis=1)
            order = np.argsort(merged_d, axis=1, kind="stable")[:, :k]   # stable: the lower row wins a tie
            best_d, best_i = np.take_along_axis(merged_d, order, 1), np.take_along_axis(merged_i, order, 1)
        return np.sqrt(np.maximum(best_d, 0.0)), best_i

    def _split_rows(self, queries: int) -> list[tuple[int, int]]:
        """The bank row ranges to scan side by side: the whole bank, or ``threads`` parts of whole blocks."""
        if self.threads < 2 or queries >= self.AUGMENT_FROM or self.size < self.SPLIT_MIN_ROWS:
            return [(0, self.size)]
        blocks = -(-self.size // self.chunk)
        edges = [min(self.size, round(blocks * t / self.threads) * self.chunk) for t in range(self.threads + 1)]
        return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]

    def _scan(self, partial_d2, q_sq: np.ndarray, k: int, exclude: np.ndarray | None, lo: int, hi: int
              ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest of bank rows ``lo:hi`` as (squared distances, ids), block by block."""
        best_d = np.full((q_sq.shape[0], k), np.inf, np.float32)
        best_i = np.zeros((q_sq.shape[0], k), np.int64)
        for start in range(lo, hi, self.chunk):
            d2 = partial_d2(start, min(hi, start + self.chunk))     # |b|^2 - 2 q.b
            if exclude is not None:
                cols = exclude[(exclude >= start) & (exclude < start + d2.shape[1])] - start
                d2[:, cols] = np.inf
            if k > 1 and start > lo and d2.shape[1] > k:     # after the first block: only what beats the k-th
                best_d, best_i = _merge_below(best_d, best_i, d2, q_sq, start, k)
                continue
            if k == 1:
                j = np.argmin(d2, axis=1)[:, None]
            else:
                j = np.argpartition(d2, min(k, d2.shape[1] - 1), axis=1)[:, :k] if d2.shape[1] > k else \
                    np.broadcast_to(np.arange(d2.shape[1]), (q_sq.shape[0], d2.shape[1]))
            cand_d = np.take_along_axis(d2, j, axis=1) + q_sq
            if start == lo and k == 1:
                best_d, best_i = cand_d, j.astype(np.int64) + start
                continue
            if k == 1:
                better = cand_d[:, 0] < best_d[:, 0]
                best_d[better], best_i[better] = cand_d[better], j[better] + start
                continue
            merged_d = np.concatenate([best_d, cand_d], axis=1)
            merged_i = np.concatenate([best_i, j + start], axis=1)
            order = np.argsort(merged_d, axis=1, kind="stable")[:, :k]
            best_d = np.take_along_axis(merged_d, order, axis=1)
            best_i = np.take_along_axis(merged_i, order, axis=1)
        return best_d, best_i


def _merge_below(best_d: np.ndarray, best_i: np.ndarray, d2: np.ndarray, q_sq: np.ndarray, start: int,
                 k: int) -> tuple[np.ndarray, np.ndarray]:
    """``best`` (n, k squared distances and ids, ascending) merged with the entries of block ``d2``
    (``|b|^2 - 2 q.b`` of rows ``start...``) that lie below each query's k-th best: once a first block has
    set the bound few do, so this costs a comparison per entry instead of a selection (9 nearest of
    40 000 rows for 4096 queries: 1.47 -> 1.0 s)."""
    rows, cols = np.nonzero(d2 < best_d[:, -1:] - q_sq)
    if rows.size == 0:
        return best_d, best_i
    active, first, counts = np.unique(rows, return_index=True, return_counts=True)
    where, slot = np.repeat(np.arange(active.size), counts), np.arange(rows.size) - np.repeat(first, counts)
    cand_d = np.full((active.size, int(counts.max())), np.inf, np.float32)
    cand_i = np.zeros(cand_d.shape, np.int64)
    cand_d[where, slot], cand_i[where, slot] = d2[rows, cols] + q_sq[rows, 0], cols + start
    merged_d, merged_i = np.concatenate([best_d[active], cand_d], 1), np.concatenate([best_i[active], cand_i], 1)
    order = np.argsort(merged_d, axis=1, kind="stable")[:, :k]
    best_d, best_i = best_d.copy(), best_i.copy()
    best_d[active], best_i[active] = np.take_along_axis(merged_d, order, 1), np.take_along_axis(merged_i, order, 1)
    return best_d, best_i


class HnswIndex(NeighbourIndex):
    """Approximate search in an hnswlib graph (``l2`` space, ids = bank rows).

    ``ef`` is the search breadth (larger: slower, closer to exact); hnswlib
    searches with ``max(ef, k)``. ``threads`` is the query parallelism (-1: hnswlib's own, all cores).
    With ``threads`` >= 2 a large batch is split into that many contiguous blocks, each searched by one
    thread: neighbouring patches then stay on one core and reuse its cache. A check of a bottle frame
    (4096 patches, 2 threads) searched 0.5-1.4 ms faster than with hnswlib spreading the patches over its
    threads one at a time (alternating in one process; the same results); magnetic_tile within 0.5 ms.

    Example::

        index = HnswIndex.build(bank, M=16, ef_construction=200, ef=48)
        index.save("index.hnsw")
        dist, ids = HnswIndex.load("index.hnsw", dim=bank.shape[1], size=len(bank)).search(q, k=9)
    """

    name = "hnsw"
    approximate = True

    def __init__(self, index, ef: int = 64, threads: int = -1):
        self._index = index
        self.threads = int(threads)
        self.ef = int(ef)
        self._pool = _ProcessPool("hnsw")

    @property
    def ef(self) -> int:
        return self._ef

    @ef.setter
    def ef(self, value: int) -> None:
        value = int(value)
        if value < 1:
            raise ValueError(f"HNSW ef must be a positive integer, got {value}")
        self._ef = value
        self._index.set_ef(value)

    @property
    def size(self) -> int:
        return int(self._index.get_current_count())

    @property
    def dim(self) -> int:
        return int(self._index.dim)

    @classmethod
    def build(cls, bank: np.ndarray, M: int = 16, ef_construction: int = 200, ef: int = 64,
              threads: int = -1, seed: int = 0) -> "HnswIndex":
        """Index the rows of ``bank`` (N, D); row i gets id i."""
        hnswlib = _hnswlib()

        bank = np.ascontiguousarray(bank, dtype=np.float32)
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ValueError(f"memory bank must be a non-empty (N, D) array, got shape {bank.shape}")
        index = hnswlib.Index(space="l2", dim=int(bank.shape[1]))
        index.init_index(max_elements=int(bank.shape[0]), M=int(M), ef_construction=int(ef_construction),
                         random_seed=int(seed))
        index.add_items(bank, np.arange(bank.shape[0]), num_threads=int(threads))
        return cls(index, ef=ef, threads=threads)

    @classmethod
    def load(cls, path: str | Path, dim: int, size: int, ef: int = 64, threads: int = -1) -> "HnswIndex":
        """Load ``path`` and check it holds ``size`` vectors of dimension ``dim``; ``ValueError`` if not.

        The file is checked by :func:`apc_edge.hnsw_file.check_index` before hnswlib reads it.
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"HNSW index file {path} is missing")
        data = path.read_bytes()
        check_index(data, size, dim, None, str(path))
        return cls.from_bytes(data, dim, ef=ef, threads=threads)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray, dim: int, ef: int = 64, threads: int = -1) -> "HnswIndex":
        """Load an index from the bytes of its file, already checked by :func:`apc_edge.hnsw_file.check_index`
        (hnswlib reads only files: it reads a private copy of these bytes)."""
        hnswlib = _hnswlib()

        index = hnswlib.Index(space="l2", dim=int(dim))
        with private_copy({"index.hnsw": data}) as tmp:
            try:
                index.load_index(str(tmp / "index.hnsw"), max_elements=0)
            except RuntimeError as exc:
                raise ValueError(f"hnswlib cannot read the index: {exc}") from None
        return cls(index, ef=ef, threads=threads)

    def save(self, path: str | Path) -> None:
        self._index.save_index(str(path))

    def search(self, queries: np.ndarray, k: int = 1,
               exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Approximate k nearest bank rows. Rows in ``exclude`` are marked deleted for this search (still
        walked through, never returned; leave-one-out scoring): not thread-safe against other searches."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be (n, {self.dim}), got shape {q.shape}")
        hidden = [] if exclude is None else np.unique(np.asarray(exclude, np.int64)).tolist()
        k = min(int(k), self.size - len(hidden))
        if k < 1:
            raise ValueError("nothing left to search: every bank row is excluded")
        for row in hidden:
            self._index.mark_deleted(row)
        try:
            # hnswlib searches with max(ef, k), so k neighbours need no ef change (and stay thread-safe)
            ids, d2 = self._query(q, k)
        finally:
            for row in hidden:
                self._index.unmark_deleted(row)
        # 'l2' space returns squared distances
        return np.sqrt(np.maximum(d2, 0.0)), ids.astype(np.int64)

    def _query(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """hnswlib's ``knn_query``, in contiguous blocks on ``threads`` threads for a large batch."""
        threads = self.threads
        if threads < 2 or len(q) < SPLIT_MIN_QUERIES * threads:
            return self._index.knn_query(q, k=k, num_threads=threads)
        pool = self._pool.get(threads)
        blocks = np.array_split(q, threads)
        done = [pool.submit(self._index.knn_query, block, k, 1) for block in blocks]
        parts = [f.result() for f in done]        # knn_query releases the GIL: the blocks run side by side
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


SPLIT_MIN_QUERIES = 256          # per thread: smaller batches go to hnswlib whole
LEAVE_ONE_OUT_HNSW_FROM = 8192   # bank rows from which leave-one-out scoring searches an HNSW graph first


def leave_one_out_index(bank: np.ndarray) -> NeighbourIndex:
    """The search for scoring bank images with their own rows excluded (thresholds, the INT8 guard).

    A large bank gets an HNSW graph with ``exact`` set: :func:`apc_edge.scoring.score_patches` then
    searches it with the image's rows marked deleted and searches the top patches again exactly, so the
    image score equals exact search's at a fraction of its cost; a small bank (or no hnswlib) is searched
    exactly. Example::

        index = leave_one_out_index(bank)
        score_embedding(emb, index, bank, 9, exclude=own_rows).image_score   # == exact search's
    """
    exact = ExactIndex(bank)
    if bank.shape[0] < LEAVE_ONE_OUT_HNSW_FROM:
        return exact
    try:
        index = HnswIndex.build(bank, M=16, ef_construction=100, ef=16)
    except MissingLibrary:
        return exact
    index.exact = exact
    return index
