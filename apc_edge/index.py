"""Nearest-neighbour search over the memory bank, kept outside the exported graph.

:class:`ExactIndex` is chunked numpy brute force (exact, bounded memory).
Other indexes (HNSW) implement the same :class:`NeighbourIndex` interface.

Example::

    index = ExactIndex(bank)                   # bank: (N, D) float32
    dist, ids = index.search(queries, k=1)     # Euclidean distances, (n, k)
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class NeighbourIndex(ABC):
    """k-nearest-neighbour search returning Euclidean distances and bank row ids."""

    name: str = "?"

    @abstractmethod
    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(distances, ids)``, each (n, k), nearest first."""

    @property
    @abstractmethod
    def size(self) -> int:
        """Number of vectors in the index."""


class ExactIndex(NeighbourIndex):
    """Exact search: ``|q|^2 - 2 q.b + |b|^2`` in bank chunks of ``chunk`` rows."""

    name = "exact"

    def __init__(self, bank: np.ndarray, chunk: int = 16384):
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ValueError(f"memory bank must be a non-empty (N, D) array, got shape {bank.shape}")
        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.bank_sq = np.einsum("ij,ij->i", self.bank, self.bank)
        self.chunk = chunk

    @property
    def size(self) -> int:
        return self.bank.shape[0]

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.size)
        q_sq = np.einsum("ij,ij->i", q, q)[:, None]
        best_d = np.full((q.shape[0], k), np.inf, np.float32)
        best_i = np.zeros((q.shape[0], k), np.int64)
        for start in range(0, self.size, self.chunk):
            block = self.bank[start:start + self.chunk]
            d2 = q_sq - 2.0 * (q @ block.T) + self.bank_sq[None, start:start + self.chunk]
            if k == 1:
                j = np.argmin(d2, axis=1)[:, None]
            else:
                j = np.argpartition(d2, min(k, d2.shape[1] - 1), axis=1)[:, :k] if d2.shape[1] > k else \
                    np.broadcast_to(np.arange(d2.shape[1]), (q.shape[0], d2.shape[1]))
            cand_d = np.take_along_axis(d2, j, axis=1)
            merged_d = np.concatenate([best_d, cand_d], axis=1)
            merged_i = np.concatenate([best_i, j + start], axis=1)
            order = np.argsort(merged_d, axis=1, kind="stable")[:, :k]
            best_d = np.take_along_axis(merged_d, order, axis=1)
            best_i = np.take_along_axis(merged_i, order, axis=1)
        return np.sqrt(np.maximum(best_d, 0.0)), best_i
