"""Evaluation metrics for visual anomaly detection: image level and pixel level.

numpy + OpenCV only (no torch, no scikit-learn), so the evaluation can run on any
box that has the runtime installed.

Conventions
-----------
* ``labels`` are 0 (good) / 1 (defect), or bool.  ``scores`` are larger = more
  anomalous.  A sample is flagged at threshold ``t`` when ``score >= t``.
* ``masks`` / ``maps`` are sequences (or stacked arrays) of 2-D images; a mask
  pixel is anomalous when it is nonzero (bool, 0/1 and 0/255 masks all work;
  resize masks with nearest-neighbour interpolation).
* Every metric needs both classes (at least one good and one defect sample, or
  pixel) and raises ``ValueError`` naming the problem otherwise.
* All metrics return plain Python floats.

Example::

    from apc_edge.calibration import metrics
    metrics.auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])          # 0.75
    f1, t = metrics.best_f1(labels, image_scores)
    t_ok = metrics.threshold_for_false_alarm(good_scores, 0.01)  # <= 1 % false alarms
    metrics.pixel_auroc(masks, maps), metrics.pro_auc(masks, maps, max_fpr=0.3)

Cost
----
Image metrics sort the scores once: O(n log n).  ``pixel_auroc`` is exact and
sorts all pixels once (one copy of the pixels in memory).  ``pixel_f1`` and
``pro_auc`` evaluate a bounded threshold grid (a few thousand resp. ~200
values) with one ``searchsorted`` + ``bincount`` pass per image, so memory
stays at a few image-sized temporaries however many thresholds there are.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import cv2
import numpy as np

__all__ = [
    "roc_curve",
    "auroc",
    "best_f1",
    "f1_at",
    "threshold_for_recall",
    "threshold_for_false_alarm",
    "pixel_auroc",
    "pixel_f1",
    "pro_curve",
    "pro_auc",
]

# Upper bound on the pixel sample used to place thresholds (pixel_f1, pro_auc).
# Only the placement of the grid comes from the sample; counts are always exact.
_GRID_SAMPLE = 1 << 21
# Positives processed per chunk in the exact AUROC (bounds the int64 temporaries).
_AUC_CHUNK = 1 << 22


# --------------------------------------------------------------------------- #
# input checking
# --------------------------------------------------------------------------- #
def _check_scores(scores, name: str) -> np.ndarray:
    s = np.asarray(scores)
    if s.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {s.shape}")
    if s.size == 0:
        raise ValueError(f"{name} is empty")
    if not (np.issubdtype(s.dtype, np.number) or s.dtype == bool) or np.iscomplexobj(s):
        raise ValueError(f"{name} must be real numbers, got dtype {s.dtype}")
    s = s.astype(np.float64, copy=False)
    nan = np.isnan(s)
    if nan.any():
        raise ValueError(f"{name} contains NaN (first at index {int(np.flatnonzero(nan)[0])})")
    inf = np.isinf(s)
    if inf.any():
        raise ValueError(f"{name} contains infinite values (first at index {int(np.flatnonzero(inf)[0])})")
    return s


def _check_binary(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``labels``/``scores``; return (bool positives, float64 scores)."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    s_arr = np.asarray(scores)
    if s_arr.ndim == 1 and y.shape[0] != s_arr.shape[0]:
        raise ValueError(f"labels has {y.shape[0]} elements but scores has {s_arr.shape[0]}")
    if y.size == 0:
        raise ValueError("labels and scores are empty")
    s = _check_scores(s_arr, "scores")
    if y.dtype == bool:
        pos = y
    else:
        if not np.issubdtype(y.dtype, np.number) or np.iscomplexobj(y):
            raise ValueError(f"labels must be 0/1 or bool, got dtype {y.dtype}")
        bad = (y != 0) & (y != 1)
        if bad.any():
            raise ValueError(f"labels must be 0/1 or bool, found value(s) {np.unique(y[bad])[:5].tolist()}")
        pos = y == 1
    n_pos = int(pos.sum())
    if n_pos == 0:
        raise ValueError("labels contain only one class (all 0 = good); need both good (0) and defect (1) samples")
    if n_pos == y.size:
        raise ValueError("labels contain only one class (all 1 = defect); need both good (0) and defect (1) samples")
    return pos, s


def _distinct_counts(pos: np.ndarray, s: np.ndarray):
    """Sort by descending score; per distinct score t return (t, TP(>=t), flagged(>=t))."""
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    ends = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]  # last index of each tie block
    tps = np.cumsum(pos[order], dtype=np.int64)[ends]
    flagged = ends.astype(np.int64) + 1
    return s_sorted[ends], tps, flagged


def _auc_from_split(pos_scores: np.ndarray, neg_scores_sorted: np.ndarray) -> float:
    """Exact AUROC = P(pos > neg) + P(pos == neg) / 2 (Mann-Whitney U)."""
    n_pos, n_neg = pos_scores.size, neg_scores_sorted.size
    u2 = 0  # twice the U statistic: stays an exact integer
    for start in range(0, n_pos, _AUC_CHUNK):
        chunk = pos_scores[start:start + _AUC_CHUNK]
        below = np.searchsorted(neg_scores_sorted, chunk, side="left")
        upto = np.searchsorted(neg_scores_sorted, chunk, side="right")
        u2 += int(below.sum(dtype=np.int64)) + int(upto.sum(dtype=np.int64))
    return float(u2 / (2.0 * n_pos * n_neg))


# --------------------------------------------------------------------------- #
# image level
# --------------------------------------------------------------------------- #
def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve with one point per distinct score (ties form a single point).

    Returns ``(fpr, tpr, thresholds)`` as float64 arrays; ``thresholds`` is
    decreasing and starts with ``inf`` (nothing flagged, point (0, 0)); point i is
    the rate of ``score >= thresholds[i]``.  No collinear points are dropped.

    Example::

        fpr, tpr, thr = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        # fpr [0, 0, .5, .5, 1], tpr [0, .5, .5, 1, 1], thr [inf, .8, .4, .35, .1]
    """
    pos, s = _check_binary(labels, scores)
    thr, tps, flagged = _distinct_counts(pos, s)
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    tpr = np.r_[0, tps] / n_pos
    fpr = np.r_[0, flagged - tps] / n_neg
    return fpr.astype(np.float64), tpr.astype(np.float64), np.r_[np.inf, thr]


def auroc(labels, scores) -> float:
    """Area under the ROC curve in [0, 1]; ties count one half (exact, rank based).

    Example::

        auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])   # 0.75
    """
    pos, s = _check_binary(labels, scores)
    return _auc_from_split(s[pos], np.sort(s[~pos]))


def best_f1(labels, scores) -> tuple[float, float]:
    """Best F1 over all thresholds ``score >= t``; returns ``(f1, t)``.

    ``t`` is one of the scores; among thresholds reaching the same best F1 the
    highest (fewest alarms) is returned.

    Example::

        f1, t = best_f1([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])   # (0.8, 0.35)
    """
    pos, s = _check_binary(labels, scores)
    thr, tps, flagged = _distinct_counts(pos, s)
    f1 = 2.0 * tps / (flagged + int(pos.sum()))  # 2TP / (2TP + FP + FN)
    i = int(np.argmax(f1))  # first maximum = highest threshold
    return float(f1[i]), float(thr[i])


def f1_at(labels, scores, threshold) -> float:
    """F1 of the decision ``score >= threshold``.

    Example::

        f1_at([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.35)   # 0.8
    """
    pos, s = _check_binary(labels, scores)
    t = float(threshold)
    if math.isnan(t):
        raise ValueError("threshold is NaN")
    pred = s >= t
    tp = int(np.count_nonzero(pred & pos))
    return float(2.0 * tp / (int(pred.sum()) + int(pos.sum())))


def threshold_for_recall(labels, scores, recall) -> float:
    """Largest threshold ``t`` with recall(``score >= t``) >= ``recall``.

    That is the lowest-false-alarm threshold still catching the requested share of
    defects; it is the k-th highest defect score with k = ceil(recall * #defects).
    ``recall`` must be in (0, 1].

    Example::

        threshold_for_recall([0, 0, 1, 1, 1, 1], [.1, .5, .2, .4, .6, .9], 0.75)   # 0.4
    """
    pos, s = _check_binary(labels, scores)
    r = float(recall)
    if not 0.0 < r <= 1.0:
        raise ValueError(f"recall must be in (0, 1], got {recall!r}")
    pos_desc = np.sort(s[pos])[::-1]
    n_pos = pos_desc.size
    k = min(max(math.ceil(r * n_pos), 1), n_pos)
    # fix float rounding of r * n_pos: want the smallest k with k / n_pos >= r
    while k > 1 and (k - 1) / n_pos >= r:
        k -= 1
    while k < n_pos and k / n_pos < r:
        k += 1
    return float(pos_desc[k - 1])


def threshold_for_false_alarm(good_scores, max_false_alarm) -> float:
    """Threshold keeping the false-alarm rate on good parts at most ``max_false_alarm``.

    Precisely: let ``v`` be the (m+1)-th highest good score, where m is the
    largest number of alarms with ``m / n <= max_false_alarm``.  Every ``t > v``
    satisfies ``mean(good >= t) <= max_false_alarm`` and no ``t <= v`` does, so
    the "smallest" such threshold is just above ``v``.  We return the midpoint
    between ``v`` and the next higher distinct good score (a margin on both
    sides), or, when ``v`` is the highest good score, the next float above it.
    ``max_false_alarm`` must be in [0, 1).

    Example::

        threshold_for_false_alarm([.1, .2, .3, .4, .5, .6, .7, .8, .9, 1.], 0.1)   # 0.95
    """
    g = np.sort(_check_scores(good_scores, "good_scores"))
    a = float(max_false_alarm)
    if not 0.0 <= a < 1.0:
        raise ValueError(f"max_false_alarm must be in [0, 1), got {max_false_alarm!r}")
    n = g.size
    m = min(int(math.floor(a * n)), n - 1)
    while m + 1 <= n - 1 and (m + 1) / n <= a:
        m += 1
    while m > 0 and m / n > a:
        m -= 1
    v = g[n - m - 1]
    above = g[g > v]
    if above.size == 0:
        return float(np.nextafter(v, np.inf))
    w = above[0]
    mid = v + (w - v) / 2.0
    return float(mid if v < mid <= w else w)


# --------------------------------------------------------------------------- #
# pixel level
# --------------------------------------------------------------------------- #
class _Pixels:
    """Validated (mask, map) pairs plus global statistics; holds no pixel copies of the maps."""

    def __init__(self, masks, maps):
        masks = masks if hasattr(masks, "__len__") else list(masks)
        maps = maps if hasattr(maps, "__len__") else list(maps)
        if len(masks) != len(maps):
            raise ValueError(f"got {len(masks)} masks but {len(maps)} maps")
        if len(masks) == 0:
            raise ValueError("masks and maps are empty")
        self.masks: list[np.ndarray] = []
        self.maps: list[np.ndarray] = []
        dtype = np.dtype(np.float32)
        for i in range(len(masks)):
            m = np.asarray(masks[i])
            x = np.asarray(maps[i])
            if m.ndim != 2:
                raise ValueError(f"masks[{i}] must be 2-D (H, W), got shape {m.shape}")
            if x.ndim != 2:
                raise ValueError(f"maps[{i}] must be 2-D (H, W), got shape {x.shape}")
            if m.shape != x.shape:
                raise ValueError(f"masks[{i}] has shape {m.shape} but maps[{i}] has {x.shape}")
            if x.size == 0:
                raise ValueError(f"maps[{i}] is empty (shape {x.shape})")
            if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.iscomplexobj(x):
                raise ValueError(f"maps[{i}] must be real numbers, got dtype {x.dtype}")
            if not (np.issubdtype(m.dtype, np.number) or m.dtype == bool) or np.iscomplexobj(m):
                raise ValueError(f"masks[{i}] must be bool or numeric, got dtype {m.dtype}")
            self.masks.append(m if m.dtype == bool else m != 0)
            self.maps.append(x)
            dtype = np.promote_types(dtype, np.result_type(x.dtype, np.float32))
        self.dtype = dtype  # float32 unless some map needs float64
        lo, hi = np.inf, -np.inf
        n_pos = n_neg = 0
        hi_neg = -np.inf
        for i, (m, x) in enumerate(zip(self.masks, self.maps)):
            xmin, xmax = float(x.min()), float(x.max())
            if math.isnan(xmin) or math.isnan(xmax):
                raise ValueError(f"maps[{i}] contains NaN")
            if math.isinf(xmin) or math.isinf(xmax):
                raise ValueError(f"maps[{i}] contains infinite values")
            lo, hi = min(lo, xmin), max(hi, xmax)
            k = int(np.count_nonzero(m))
            n_pos += k
            if k < m.size:
                n_neg += m.size - k
                hi_neg = max(hi_neg, float(x.max() if k == 0 else x[~m].max()))
        if n_pos == 0:
            raise ValueError("all masks are empty: need at least one anomalous (nonzero) mask pixel")
        if n_neg == 0:
            raise ValueError("all mask pixels are anomalous: need at least one normal (zero) mask pixel")
        self.lo, self.hi = lo, hi  # global score range (values of the maps, exact in self.dtype)
        self.hi_neg = hi_neg       # highest normal-pixel score
        self.n_pos, self.n_neg = n_pos, n_neg

    def pairs(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (flat bool mask, flat map in the working dtype) per image."""
        for m, x in zip(self.masks, self.maps):
            yield m.ravel(), np.ascontiguousarray(x, dtype=self.dtype).ravel()

    def sample(self, anomalous: bool) -> np.ndarray:
        """Sorted strided sample (<= ~_GRID_SAMPLE values) of anomalous or normal pixel scores."""
        total = self.n_pos if anomalous else self.n_neg
        step = max(1, total // _GRID_SAMPLE)
        parts = [x[m if anomalous else ~m][::step].copy() for m, x in self.pairs()]  # copy: drop the full selection
        out = np.concatenate(parts)
        out.sort()
        return out


def _tail(hist: np.ndarray) -> np.ndarray:
    """tail[j] = sum(hist[j:])."""
    return np.cumsum(hist[::-1])[::-1]


class _Binner:
    """Exact ``#(thr <= x)`` per pixel for sorted thresholds, faster than a plain searchsorted.

    Pixels are first put in one of ``fine_bins`` uniform buckets over [lo, hi] by a
    monotone float formula.  A bucket holding no threshold decides the index by a
    lookup table; only pixels in buckets that contain a threshold fall back to an
    exact ``searchsorted``.  The result is identical to
    ``np.searchsorted(thr, x, side="right")``.
    """

    def __init__(self, thr: np.ndarray, lo: float, hi: float, fine_bins: int = 1 << 16):
        self.thr = thr
        self.lo = float(lo)
        self.nb = fine_bins
        scale = fine_bins / (float(hi) - self.lo) if hi > lo else 0.0
        self.scale = scale if math.isfinite(scale) else 0.0  # 0: everything in bucket 0 (exact fallback)
        f = self._bucket(thr)  # non-decreasing since thr is sorted and the formula is monotone
        self.below = np.searchsorted(f, np.arange(fine_bins + 1), side="left")  # #(thresholds in lower buckets)
        self.shared = np.zeros(fine_bins + 1, dtype=bool)
        self.shared[f] = True

    def _bucket(self, x: np.ndarray) -> np.ndarray:
        v = (x.astype(np.float64) - self.lo) * self.scale
        return np.clip(v, 0.0, float(self.nb)).astype(np.int64)

    def index(self, x: np.ndarray) -> np.ndarray:
        u = self._bucket(x)
        idx = self.below[u]
        slow = self.shared[u]
        if slow.any():
            idx[slow] = np.searchsorted(self.thr, x[slow], side="right")
        return idx


def pixel_auroc(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> float:
    """Pixel-level AUROC over all pixels of all images (exact, ties count one half).

    Example::

        pixel_auroc(gt_masks, anomaly_maps)   # lists of (H, W) masks and float maps

    Copies the pixels once (grouped by class) and sorts them: O(n log n), about
    3 s for 50M float32 pixels on a 2-core box.
    """
    px = _Pixels(masks, maps)
    pos = np.empty(px.n_pos, dtype=px.dtype)
    neg = np.empty(px.n_neg, dtype=px.dtype)
    ip = ineg = 0
    for m, x in px.pairs():
        a, b = x[m], x[~m]
        pos[ip:ip + a.size] = a
        neg[ineg:ineg + b.size] = b
        ip += a.size
        ineg += b.size
    neg.sort()
    pos.sort()  # sorted keys make searchsorted faster
    return _auc_from_split(pos, neg)


def pixel_f1(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], *,
             num_bins: int = 2000) -> tuple[float, float]:
    """Best pixel-level F1 (over all pixels of all images) and its threshold.

    Approximation: instead of every distinct pixel score, the thresholds are a grid
    of ``num_bins + 1`` evenly spaced values over [min, max] of all maps plus
    ``num_bins`` quantiles of the anomalous-pixel scores (the optimum always sits
    on an anomalous-pixel score, so the quantiles put the grid where it matters,
    even with outliers stretching the range).  Counts per threshold are exact, so
    the returned F1 is exactly the F1 of ``map >= threshold`` and is a lower bound
    of the exact best F1; with the default grid it is typically within ~1e-3 of it.

    Example::

        f1, t = pixel_f1(gt_masks, anomaly_maps)
        defect_pixels = anomaly_map >= t
    """
    if int(num_bins) != num_bins or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}")
    num_bins = int(num_bins)
    px = _Pixels(masks, maps)
    pos_sample = px.sample(anomalous=True)
    q = pos_sample[np.linspace(0, pos_sample.size - 1, num_bins).round().astype(np.int64)]
    grid = np.r_[np.linspace(px.lo, px.hi, num_bins + 1), q.astype(np.float64)]
    thr = np.unique(grid.astype(px.dtype))  # thresholds representable in the maps' dtype
    k = thr.size
    binner = _Binner(thr, px.lo, px.hi)
    hist_all = np.zeros(k + 1, dtype=np.int64)
    hist_pos = np.zeros(k + 1, dtype=np.int64)
    for m, x in px.pairs():
        idx = binner.index(x)  # pixel flagged at thr[j] iff idx > j
        hist_all += np.bincount(idx, minlength=k + 1)
        hist_pos += np.bincount(idx[m], minlength=k + 1)
    tp = _tail(hist_pos)[1:]
    flagged = _tail(hist_all)[1:]
    f1 = 2.0 * tp / (flagged + px.n_pos)
    i = k - 1 - int(np.argmax(f1[::-1]))  # highest threshold among equal maxima
    return float(f1[i]), float(thr[i])


def pro_curve(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], max_fpr: float = 0.3,
              num_thresholds: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-Region-Overlap curve: ``(fpr, pro, thresholds)``, fpr non-decreasing.

    For a threshold t, PRO(t) is the mean over all connected components
    (8-connectivity) of all ground-truth masks of |region & (map >= t)| / |region|;
    FPR(t) is the share of all normal pixels with map >= t.  The first point is
    (0, 0) for ``t = inf``.  Thresholds: just above the highest normal score
    (FPR 0), ``num_thresholds`` normal-pixel scores q giving FPRs evenly spaced
    over [0, max_fpr] plus two just past ``max_fpr``, each used as ``q`` and as the
    next float above ``q`` (the top of the vertical step PRO makes between two
    normal scores), and the global minimum (FPR 1): at most
    ``2 * num_thresholds + 4`` thresholds.  The q are placed from a strided pixel
    sample (<= ~2M pixels); the reported FPR/PRO values are exact counts.

    Example::

        fpr, pro, thr = pro_curve(gt_masks, anomaly_maps)
    """
    mf = float(max_fpr)
    if not 0.0 < mf <= 1.0:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr!r}")
    if int(num_thresholds) != num_thresholds or num_thresholds < 2:
        raise ValueError(f"num_thresholds must be an integer >= 2, got {num_thresholds!r}")
    num_thresholds = int(num_thresholds)
    px = _Pixels(masks, maps)

    neg_sample = px.sample(anomalous=False)
    s = neg_sample.size
    step = mf / (num_thresholds - 1)
    targets = np.r_[np.linspace(0.0, mf, num_thresholds)[1:], mf + step, mf + 2 * step]
    targets = targets[targets < 1.0]
    pick = np.clip(np.round((1.0 - targets) * s).astype(np.int64), 0, s - 1)
    q = neg_sample[pick]
    # Each level is evaluated at the normal score q and just above it: between two
    # normal scores PRO rises at constant FPR, and the point just above q is the
    # top of that vertical step (without it the curve would cut the corner).
    q_up = np.nextafter(q, px.dtype.type(np.inf))
    above_neg = np.nextafter(px.dtype.type(px.hi_neg), px.dtype.type(np.inf))
    grid = np.r_[q.astype(np.float64), q_up.astype(np.float64), float(above_neg), px.lo]
    thr = np.unique(grid.astype(px.dtype))
    k = thr.size
    binner = _Binner(thr, px.lo, px.hi)

    fp_hist = np.zeros(k + 1, dtype=np.int64)
    overlap_hist = np.zeros(k + 1, dtype=np.float64)  # sum over regions of pixel share per bin
    n_regions = 0
    for m2d, (m, x) in zip(px.masks, px.pairs()):
        idx = binner.index(x)  # pixel flagged at thr[j] iff idx > j
        fp_hist += np.bincount(idx[~m], minlength=k + 1)
        if not m.any():
            continue
        n_lab, lab = cv2.connectedComponents(m2d.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        n_reg = n_lab - 1
        region = lab.ravel()[m].astype(np.int64) - 1
        per_region = np.bincount(region * (k + 1) + idx[m], minlength=n_reg * (k + 1)).reshape(n_reg, k + 1)
        overlap_hist += (per_region / per_region.sum(axis=1, keepdims=True)).sum(axis=0)
        n_regions += n_reg

    fpr = _tail(fp_hist)[1:] / px.n_neg      # at thr[j], ascending thresholds
    pro = _tail(overlap_hist)[1:] / n_regions
    fpr = np.r_[0.0, fpr[::-1]]
    pro = np.r_[0.0, np.minimum(pro[::-1], 1.0)]
    return fpr, pro, np.r_[np.inf, thr[::-1].astype(np.float64)]


def pro_auc(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], max_fpr: float = 0.3,
            num_thresholds: int = 200) -> float:
    """Normalized area under the PRO curve up to ``max_fpr`` (MVTec AD style), in [0, 1].

    Integrates PRO over FPR from 0 to ``max_fpr`` with the trapezoid rule (the
    curve is linearly interpolated at exactly ``max_fpr``) and divides by
    ``max_fpr``.  Images with empty masks only contribute normal pixels (FPR).
    See :func:`pro_curve` for the threshold grid.  Approximation: the curve is
    linear between grid points, so with the default 200 thresholds the result is
    typically within ~5e-4 (usually slightly below) of the value over every
    distinct pixel score; raise ``num_thresholds`` to tighten it.

    Example::

        pro_auc(gt_masks, anomaly_maps, max_fpr=0.3)   # perfect maps give 1.0
    """
    fpr, pro, _ = pro_curve(masks, maps, max_fpr=max_fpr, num_thresholds=num_thresholds)
    mf = float(max_fpr)
    i = int(np.searchsorted(fpr, mf, side="right"))  # first point with fpr > max_fpr
    if i < fpr.size:
        x0, x1, y0, y1 = fpr[i - 1], fpr[i], pro[i - 1], pro[i]
        y_at = y0 + (y1 - y0) * (mf - x0) / (x1 - x0)
        x = np.r_[fpr[:i], mf]
        y = np.r_[pro[:i], y_at]
    else:
        x, y = fpr, pro
    area = float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / 2.0)
    return float(min(max(area / mf, 0.0), 1.0))
