"""Exact search against HNSW (plus the runtime's exact refinement) as the bank grows.

``apc-export --index auto`` keeps exact search below a bank size where it is
faster. This measures where that crossover lies on *this* CPU: random subsets
of the model's own bank, searched with the patches of real frames, timed the way
``Inspector.check`` searches them.

Example::

    apc-bench models/bottle --folder frames/ --index-crossover 1000,4000,16000
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..index import ExactIndex, HnswIndex
from ..scoring import score_patches


def _best_search_ms(index, exact, bank: np.ndarray, patch_sets: Sequence[np.ndarray], refine_top: int,
                    repeats: int = 3) -> float:
    """Median over frames of the best of ``repeats`` search times of the runtime's scorer, in ms."""
    best = []
    for patches in patch_sets:
        grid = (1, len(patches))
        best.append(min(score_patches(patches, grid, index, bank, 1, exact=exact, refine_top=refine_top)
                        .timings["search"] for _ in range(repeats)))
    return float(np.median(best))


def index_crossover(bank: np.ndarray, patch_sets: Sequence[np.ndarray], sizes: Sequence[int],
                    M: int = 16, ef: int = 16, refine_top: int = 16, seed: int = 0) -> list[dict]:
    """Per bank size (capped at the bank's rows): exact and HNSW+refinement search time per frame.

    ``patch_sets``: one (patches, D) float32 array per frame. Returns one dict per size with
    ``rows``, ``exact_ms``, ``hnsw_ms``, ``M`` and ``ef``.
    """
    if not patch_sets:
        raise ValueError("index crossover needs at least one frame's patches")
    rng = np.random.default_rng(seed)
    rows = []
    for size in sorted({min(int(s), bank.shape[0]) for s in sizes if int(s) > 0}):
        subset = bank[np.sort(rng.choice(bank.shape[0], size, replace=False))]
        exact = ExactIndex(subset)
        hnsw = HnswIndex.build(subset, M=M, ef_construction=200, ef=ef)
        rows.append({"rows": size, "exact_ms": round(_best_search_ms(exact, None, subset, patch_sets, refine_top), 3),
                     "hnsw_ms": round(_best_search_ms(hnsw, exact, subset, patch_sets, refine_top), 3),
                     "M": M, "ef": ef})
    return rows
