"""Greedy k-center coreset on a random projection (PatchCore Sec. 3.2), streaming and memory-bounded.

Memory is O(N * proj_dim): the projected features, one running minimum distance
per patch, and nothing N x N. Each step is one matrix-vector product.

Example::

    ids = greedy_coreset(features, ratio=0.1, proj_dim=128, seed=0)
    bank = features[ids]
"""
from __future__ import annotations

import numpy as np

from apc_edge.progress import Progress


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


def greedy_coreset(features: np.ndarray, ratio: float = 0.1, proj_dim: int = 128, seed: int = 0,
                   size: int | None = None, progress: bool = True) -> np.ndarray:
    """Indices of a k-center coreset of ``features`` (N, D) with ``ceil(ratio*N)`` (or ``size``) points."""
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
    sq = np.einsum("ij,ij->i", z, z)
    rng = np.random.default_rng(seed)
    chosen = np.empty(size, np.int64)
    chosen[0] = rng.integers(n)
    min_d = np.full(n, np.inf, np.float32)
    bar = Progress(size, "coreset") if progress else None
    dots = np.empty(n, np.float32)
    for i in range(size):
        c = chosen[i]
        np.matmul(z, z[c], out=dots)
        d = sq - 2.0 * dots
        d += sq[c]
        np.minimum(min_d, d, out=min_d)
        if i + 1 < size:
            chosen[i + 1] = int(np.argmax(min_d))
        if bar and (i % 256 == 0 or i + 1 == size):
            bar.update(min(256, size - bar.done))
    if bar:
        bar.__exit__()
    return chosen
