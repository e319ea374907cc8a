"""How closely a compressed model follows its reference: embeddings, image scores, ranking.

Used by the INT8 accuracy guard (INT8 vs FP32 graph) and the HNSW sweep
(approximate vs exact search). numpy only.

Example::

    cos = patch_cosines(emb_fp32, emb_int8)             # (h*w,) per-patch cosine
    rank_agreement(fp32_scores, int8_scores)            # {"spearman": .., "kendall": .., "max_rel_change": ..}
"""
from __future__ import annotations

import numpy as np


def patch_cosines(ref: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Cosine similarity of each patch embedding, for (D, h, w) or (n, D) arrays of equal shape."""
    if ref.shape != test.shape:
        raise ValueError(f"embeddings differ in shape: {ref.shape} vs {test.shape}")
    a = ref.reshape(ref.shape[0], -1).T if ref.ndim == 3 else ref
    b = test.reshape(test.shape[0], -1).T if test.ndim == 3 else test
    a, b = a.astype(np.float64), b.astype(np.float64)
    num = np.einsum("ij,ij->i", a, b)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, num / np.maximum(den, 1e-300), 1.0)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size, np.float64)
    xs = x[order]
    i = 0
    while i < x.size:
        j = i
        while j + 1 < x.size and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(a, b) -> float:
    """Spearman rank correlation (ties averaged); 1.0 when either side is constant and both agree."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"spearman needs two 1-D arrays of equal length >= 2, got {a.shape} and {b.shape}")
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    if den == 0:
        return 1.0 if np.array_equal(ra, rb) else 0.0
    return float((ra * rb).sum() / den)


def kendall(a, b) -> float:
    """Kendall's tau-b (O(n^2); fine for the few hundred images a guard scores)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"kendall needs two 1-D arrays of equal length >= 2, got {a.shape} and {b.shape}")
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    iu = np.triu_indices(a.size, 1)
    da, db = da[iu], db[iu]
    den = np.sqrt(np.count_nonzero(da) * np.count_nonzero(db))
    return float((da * db).sum() / den) if den > 0 else 1.0


def rank_agreement(ref_scores, test_scores, scale: float | None = None) -> dict:
    """Spearman, Kendall and the largest relative score change ``|test - ref| / max(|ref|, scale)``.

    ``scale`` (e.g. the decision threshold) keeps low scores, whose small absolute
    changes cannot flip a verdict, from dominating the relative change.
    """
    r = np.asarray(ref_scores, np.float64)
    t = np.asarray(test_scores, np.float64)
    floor = 1e-12 if scale is None or not np.isfinite(scale) else max(float(scale), 1e-12)
    rel = np.abs(t - r) / np.maximum(np.abs(r), floor)
    out = {"n_images": int(r.size), "max_rel_change": float(rel.max()), "mean_rel_change": float(rel.mean())}
    if r.size >= 2:
        out["spearman"] = spearman(r, t)
        out["kendall"] = kendall(r, t)
    return out
