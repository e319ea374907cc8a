"""Greedy k-center coreset (PatchCore Sec. 3.2): the exact greedy picks, computed in batches.

The textbook greedy adds one centre at a time and then reads the whole N x D
matrix to update every patch's distance to its nearest centre: one
memory-bound matrix-vector product per pick. Here the picks are the same but
far less is computed:

* **Batched picks, still exact.** Take the ``m`` patches farthest from the
  centres so far (``T``) and the largest distance outside them (``tau``). Run the
  greedy inside ``T`` (their distances to each new centre are cheap to compute)
  while the best one is still farther than ``tau``: no patch outside ``T`` can be
  the greedy's next pick before that, so every pick equals the one-at-a-time
  greedy's. Distances to the whole batch are then one compute-bound matrix
  product instead of ``len(batch)`` memory-bound ones.
* **Pruned updates, while they pay.** Rows are stored cluster by cluster
  (k-means). By the triangle inequality a new centre farther than a
  cluster's radius plus the largest distance in it cannot move any of its
  rows, and inside a cluster the same test runs per row. On clustered
  features (bottle) this computes about 10 % of the row-centre distances.
* **Lazy updates, where pruning does not.** In 128 dimensions distances
  often concentrate: on magnetic_tile the pruned updates still computed 75-88 %
  of the distances. When, after 1 % of the picks (and each 1 % after), the
  pruning has computed more than half of the distances, the rows switch to
  lazy bounds; a greedy over a sample of 65 536 rows first decides whether to
  cluster at all. Each row keeps an upper bound of its distance to the
  nearest centre and the number of centres it has been compared with. A row whose
  bound is below a distance some row is known to have cannot be the next
  pick, so it is compared with the new centres only when the greedy's radius
  has come down to its bound (then with all it missed, in blocks of rows
  that have seen about as many centres). On 1.34 M magnetic_tile patches at
  40 000 picks this computes 53 % of the distances.
* **One product per block.** Each row is stored with a trailing 1 and each
  centre as ``[-2c, |c|^2]``, so a single matrix product gives
  ``|p - c|^2 - |p|^2`` for a block of rows against many centres: no
  elementwise passes over the product, which had cost as much as the product.

Features wider than ``proj_dim`` are first reduced by a Gaussian random
projection (Johnson-Lindenstrauss, as in the paper); narrower ones (MobileNetV2's
128) are used as they are: projecting them further loosened the covering radius
by 18-30 % (random) and 14-23 % (PCA to 32-48 dims) in our measurements.

Example::

    ids = greedy_coreset(features, ratio=0.1, proj_dim=128, seed=0)
    bank = features[ids]
    covering_radius(features, ids)          # largest distance of any patch to its nearest pick
"""
from __future__ import annotations

import contextlib

import numpy as np

from apc_edge.progress import Progress

FIRST_BATCH = 256              # candidates per batch at the start; doubled or halved by how many were used
PATCHES_PER_CLUSTER = 2048     # k-means cluster size for pruning
PRUNE_CHECK_PICKS = 0.01       # after this share of the picks, judge the pruning ...
PRUNE_MAX_WORK = 0.5           # ... and leave it for lazy updates if it still computes this share of distances
PRUNE_SAMPLE = 65536           # rows of the sample that decides whether to cluster the features at all,
SAMPLE_ROWS_PER_CLUSTER = 512  # in clusters this size (of 2048, its 32 clusters were too coarse to judge by)
_SLACK = 1.0002                # float32 rounding margin on pruning tests: prune less, never more
ROW_CHUNK = 8192               # rows per distance block
CENTRE_CHUNK = 2048            # centres per distance block: the temporary is at most 64 MB
SEEN_SPAN = 256                # rows in one block differ by at most this many centres seen


def random_projection(features: np.ndarray, proj_dim: int, seed: int) -> np.ndarray:
    """Johnson-Lindenstrauss Gaussian projection to ``proj_dim`` dims (identity if already small)."""
    n, d = features.shape
    if d <= proj_dim:
        return np.ascontiguousarray(features, dtype=np.float32)
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((d, proj_dim)).astype(np.float32) / np.sqrt(proj_dim)
    out = np.empty((n, proj_dim), np.float32)
    for start in range(0, n, 65536):
        out[start:start + 65536] = features[start:start + 65536] @ proj
    return out


def _squared_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _nearest_centroid(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    c_sq = _squared_norms(centroids)
    out = np.empty(len(x), np.int64)
    for a in range(0, len(x), 32768):
        out[a:a + 32768] = np.argmin(c_sq[None, :] - 2.0 * (x[a:a + 32768] @ centroids.T), axis=1)
    return out


def kmeans_labels(x: np.ndarray, n_clusters: int, seed: int, iterations: int = 4,
                  sample: int = 32768) -> tuple[np.ndarray, np.ndarray]:
    """Cluster label of every row of ``x`` and the centroids: a few Lloyd steps on a random sample."""
    rng = np.random.default_rng(seed)
    s = x[rng.choice(len(x), min(len(x), sample), replace=False)]
    centroids = s[rng.choice(len(s), min(n_clusters, len(s)), replace=False)].copy()
    for _ in range(iterations):
        labels = _nearest_centroid(s, centroids)
        order = np.argsort(labels, kind="stable")
        used, first = np.unique(labels[order], return_index=True)
        sums = np.add.reduceat(s[order].astype(np.float64), first, axis=0)
        centroids[used] = (sums / np.bincount(labels)[used, None]).astype(np.float32)
    return _nearest_centroid(x, centroids), centroids


class _LazyDistances:
    """Each row's squared distance to its nearest centre, as an upper bound (``bound``) that is exact for
    the rows compared with every centre so far (``seen == k``; while ``pruning``, every row). Rows are
    stored cluster by cluster (``order`` maps a stored row to the caller's)."""

    def __init__(self, z: np.ndarray, max_centres: int, bound: np.ndarray | None = None, seed: int = 0,
                 prune: bool = True, rows_per_cluster: int = PATCHES_PER_CLUSTER):
        n, d = z.shape
        self.augmented = np.empty((n, d + 1), np.float32)      # [p, 1]
        self.augmented[:, -1] = 1.0
        if prune:
            labels, centroids = kmeans_labels(z, int(np.clip(n // rows_per_cluster, 1, 4096)), seed)
            self.order = np.argsort(labels, kind="stable")
            labels = labels[self.order]
            used = np.unique(labels)
            self.starts, self.ends = np.searchsorted(labels, used), np.searchsorted(labels, used, "right")
            self.centroids = np.ascontiguousarray(centroids[used])
            self.augmented[:, :-1] = z[self.order]
        else:
            self.order = np.arange(n)
            self.augmented[:, :-1] = z
        self.points = self.augmented[:, :-1]
        self.sq = _squared_norms(self.points)
        self.centres = np.empty((max_centres, d + 1), np.float32)   # [-2c, |c|^2]
        self.k = 0
        self.bound = np.full(n, np.inf, np.float32) if bound is None else np.array(bound, np.float32)[self.order]
        self.seen = np.zeros(n, np.int64)
        if prune:
            member_of = np.repeat(np.arange(len(used)), self.ends - self.starts)
            to_centroid = self.sq - 2.0 * np.einsum("ij,ij->i", self.points, self.centroids[member_of]) \
                + _squared_norms(self.centroids)[member_of]
            self.member_r = (np.sqrt(np.maximum(to_centroid, 0.0)) * _SLACK + 1e-5).astype(np.float32)
            self.cluster_r = np.maximum.reduceat(self.member_r, self.starts)
            self.cluster_max = np.maximum.reduceat(self.bound, self.starts)
        # pruning until it is seen to compute most distances anyway, then lazy updates
        self.pruning = prune
        self.check_every = max(FIRST_BATCH, int(np.ceil(PRUNE_CHECK_PICKS * max_centres)))
        self.next_check, self.work, self.pairs = self.check_every, 0, 0

    def add(self, rows: np.ndarray) -> None:
        end = self.k + len(rows)
        self.centres[self.k:end, :-1] = -2.0 * self.points[rows]
        self.centres[self.k:end, -1] = self.sq[rows]
        if self.pruning:
            self._update_pruned(rows, self.centres[self.k:end])
        self.k = end
        self.bound[rows] = 0.0
        self.seen[rows] = end
        if self.pruning and end >= self.next_check:
            self.pruning = self.work <= PRUNE_MAX_WORK * self.pairs
            self.next_check, self.work, self.pairs = end + self.check_every, 0, 0
            if not self.pruning:
                self.seen[:] = end        # the pruned updates left every bound exact

    def _update_pruned(self, rows: np.ndarray, centres: np.ndarray) -> None:
        """Lower every row's bound by its distances to the new centres (stored rows ``rows``), skipping the
        clusters and rows a centre cannot reach (triangle inequality). Every bound must be exact before."""
        c_sq = self.sq[rows]
        to_centroid = np.sqrt(np.maximum(_squared_norms(self.centroids)[:, None]
                                         - 2.0 * (self.centroids @ self.points[rows].T) + c_sq[None, :], 0.0))
        gap = np.maximum(to_centroid - self.cluster_r[:, None], 0.0)
        reaches = gap * gap < self.cluster_max[:, None] * _SLACK + 1e-6
        self.pairs += len(self.bound) * len(rows)
        for cluster in np.flatnonzero(reaches.any(axis=1)):
            sel = np.flatnonzero(reaches[cluster])
            near = centres if sel.size == len(rows) else centres[sel]
            lo, hi = int(self.starts[cluster]), int(self.ends[cluster])
            # a row can come nearer to a centre only if |p - centroid| + its distance > |centre - centroid|
            closest = float(to_centroid[cluster, sel].min()) / _SLACK - 1e-5
            reach = np.flatnonzero(self.member_r[lo:hi] + np.sqrt(np.maximum(self.bound[lo:hi], 0.0)) * _SLACK
                                   > closest)
            if reach.size * 2 < hi - lo:       # few rows reachable: gather those
                blocks = [lo + reach[i:i + ROW_CHUNK] for i in range(0, reach.size, ROW_CHUNK)]
                self.work += reach.size * len(near)
            else:
                blocks = [slice(a, min(hi, a + ROW_CHUNK)) for a in range(lo, hi, ROW_CHUNK)]
                self.work += (hi - lo) * len(near)
            for r in blocks:
                nearest = (self.augmented[r] @ near.T).min(axis=1)
                nearest += self.sq[r]
                self.bound[r] = np.minimum(self.bound[r], nearest)
            self.bound[rows[(rows >= lo) & (rows < hi)]] = 0.0
            self.cluster_max[cluster] = self.bound[lo:hi].max()

    def refresh(self, rows: np.ndarray) -> None:
        """Make ``bound`` exact for ``rows``: compare each with the centres it has not seen yet (nothing to do
        while pruning: the pruned updates keep every bound exact)."""
        if self.pruning:
            return
        rows = rows[self.seen[rows] < self.k]
        if not rows.size:
            return
        rows = rows[np.argsort(self.seen[rows], kind="stable")]
        seen = self.seen[rows]
        # blocks of rows that have seen about as many centres: each block is gathered once and compared with
        # every centre from its first row's count on; a row may meet up to SEEN_SPAN centres it had seen
        # (harmless: a bound is the minimum), in exchange for few, large products
        starts = [0]
        while starts[-1] < len(rows):
            a = starts[-1]
            b = min(len(rows), a + ROW_CHUNK, int(np.searchsorted(seen, seen[a] + SEEN_SPAN, side="left")))
            starts.append(max(b, a + 1))
        for a, b in zip(starts[:-1], starts[1:]):
            r = rows[a:b]
            block = self.augmented[r]
            nearest = np.full(len(r), np.inf, np.float32)
            for c in range(int(seen[a]), self.k, CENTRE_CHUNK):
                np.minimum(nearest, (block @ self.centres[c:min(self.k, c + CENTRE_CHUNK)].T).min(axis=1),
                           out=nearest)
            nearest += self.sq[r]
            self.bound[r] = np.minimum(self.bound[r], nearest)
        self.seen[rows] = self.k

    def next_batch(self, floor: float, candidates: int, limit: int, stop_at: float = 0.0) -> tuple[np.ndarray, float]:
        """Up to ``limit`` next greedy picks, exactly as one-at-a-time greedy would choose them, none whose
        squared distance is ``stop_at`` or less; and the new ``floor``. ``floor``: a squared distance some
        row is known to have (the next pick is at least that far)."""
        self.refresh(np.flatnonzero(self.bound > floor))       # the rest cannot be the next pick
        n = len(self.bound)
        if candidates >= n:
            top, tau = np.arange(n), -np.inf
        else:
            part = np.argpartition(self.bound, n - candidates - 1)
            top, tau = part[n - candidates:], float(self.bound[part[n - candidates - 1]])
        self.refresh(top)
        z, z_sq = self.points[top], self.sq[top]
        dist = self.bound[top].copy()
        picked: list[int] = []
        while len(picked) < limit:
            j = int(np.argmax(dist))
            if picked and not dist[j] > tau:      # a row outside `top` might be next: stop here
                break
            if not dist[j] > stop_at:             # everything left is covered
                break
            picked.append(j)
            row = z @ z[j]
            row *= -2.0
            row += z_sq
            row += z_sq[j]
            np.minimum(dist, row, out=dist)
            dist[j] = 0.0
        batch = top[np.array(picked, np.int64)]
        self.bound[top] = dist                    # exact against the centres so far and the batch
        self.add(batch)
        self.seen[top] = self.k
        return batch, float(dist.max())


def _next_candidates(candidates: int, used: int) -> int:
    if used > candidates // 2:
        return candidates * 2
    if used < candidates // 8:
        return max(64, candidates // 2)
    return candidates


def greedy_coreset(features: np.ndarray, ratio: float = 0.1, proj_dim: int = 128, seed: int = 0,
                   size: int | None = None, progress: bool = True) -> np.ndarray:
    """Indices of a k-center coreset of ``features`` (N, D) with ``ceil(ratio*N)`` (or ``size``) points,
    fewer only when every other row is a copy of a pick (each index appears once).

    The first pick is random (``seed``); each next one is the patch farthest from
    the picks so far, in the projected space.
    """
    n = features.shape[0]
    if n == 0:
        raise ValueError("cannot build a coreset of an empty feature set")
    if size is None:
        if not 0 < ratio <= 1:
            raise ValueError(f"coreset ratio must be in (0, 1], got {ratio}")
        size = int(np.ceil(ratio * n))
    size = max(1, min(size, n))
    if size == n:
        return np.arange(n)
    z = random_projection(features, proj_dim, seed)
    state = _LazyDistances(z, size, seed=seed, prune=_pruning_pays(z, size, seed))
    stored = np.empty(n, np.int64)
    stored[state.order] = np.arange(n)
    with Progress(size, "coreset") if progress else contextlib.nullcontext() as bar:
        chosen = _run_greedy(state, int(stored[np.random.default_rng(seed).integers(n)]), size, bar)
    return state.order[chosen]


def _run_greedy(state: _LazyDistances, first: int, size: int, bar=None) -> np.ndarray:
    """The greedy's picks (stored rows of ``state``), ``first`` first, until there are ``size``."""
    chosen = [first]
    state.add(np.array(chosen))
    floor, candidates = -np.inf, FIRST_BATCH
    while len(chosen) < size:
        batch, floor = state.next_batch(floor, candidates, size - len(chosen))
        if not batch.size:        # every row is a copy of a pick: covered, and nothing left to add
            break
        chosen += batch.tolist()
        if bar:
            bar.update(len(batch))
        candidates = _next_candidates(candidates, len(batch))
    return np.array(chosen, np.int64)


def _pruning_pays(z: np.ndarray, size: int, seed: int) -> bool:
    """Whether cluster pruning is worth clustering all of ``z``: judged by the greedy over a random sample of
    ``PRUNE_SAMPLE`` rows with as large a share of picks, which starts pruned and keeps it only while it
    pays. (Clustering magnetic_tile's 1.34 M rows and the pruned picks before the switch cost 15 s; the
    sample about 1 s. Either way the picks are the same: only the time differs.)"""
    n = len(z)
    if n <= PRUNE_SAMPLE:
        return True          # the run's own check decides, cheaply
    rng = np.random.default_rng(seed)
    sample = np.ascontiguousarray(z[np.sort(rng.choice(n, PRUNE_SAMPLE, replace=False))])
    picks = max(2, int(round(size * PRUNE_SAMPLE / n)))
    state = _LazyDistances(sample, picks, seed=seed, rows_per_cluster=SAMPLE_ROWS_PER_CLUSTER)
    _run_greedy(state, int(rng.integers(PRUNE_SAMPLE)), picks)
    return state.pruning


def extend_coreset(features: np.ndarray, nearest_sq: np.ndarray, radius: float, limit: int) -> np.ndarray:
    """Rows of ``features`` to add to an existing bank so that every row lies within ``radius`` of it:
    the greedy k-center rule continued, farthest first, in batches as :func:`greedy_coreset` (no projection:
    exact distances). ``nearest_sq``: each row's squared distance to its nearest bank row. At most
    ``limit`` rows; the caller checks whether that was enough.

    Example::

        d, _ = ExactIndex(bank).search(new, k=1)
        add = extend_coreset(new, d[:, 0] ** 2, radius=0.8, limit=len(bank))
    """
    if len(features) == 0 or limit < 1:
        return np.zeros(0, np.int64)
    state = _LazyDistances(np.ascontiguousarray(features, np.float32), min(limit, len(features)), nearest_sq)
    stop_at = float(radius) ** 2
    chosen: list[int] = []
    floor, candidates = -np.inf, FIRST_BATCH
    while len(chosen) < limit and float(state.bound.max()) > stop_at:
        batch, floor = state.next_batch(floor, candidates, limit - len(chosen), stop_at=stop_at)
        if not batch.size:
            break
        chosen += batch.tolist()
        candidates = _next_candidates(candidates, len(batch))
    return state.order[np.array(chosen, np.int64)]


def covering_radius(features: np.ndarray, ids: np.ndarray, chunk: int = 16384) -> float:
    """Largest distance from any row of ``features`` to its nearest row in ``features[ids]`` (coreset quality)."""
    centres = np.ascontiguousarray(features[ids], np.float32)
    c_sq = _squared_norms(centres)
    worst = 0.0
    for a in range(0, len(features), chunk):
        q = np.asarray(features[a:a + chunk], np.float32)
        d2 = (q @ centres.T) * -2.0 + c_sq[None, :]
        worst = max(worst, float((d2.min(axis=1) + _squared_norms(q)).max()))
    return float(np.sqrt(max(worst, 0.0)))
