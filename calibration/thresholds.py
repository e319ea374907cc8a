"""Calibrated thresholds: from good images only, or with known anomalies.

* Good images only: the threshold keeps the false-alarm rate on held-out good
  images at most ``max_false_alarm``. With n good images the smallest non-zero
  rate that can be observed is 1/n; a lower target gives the threshold just
  above the highest good score, and the block says so (``resolution``).
* With anomalies: the F1-optimal threshold, or the highest threshold reaching a
  target recall.
* At training, from every good image scored against the bank without its own
  patches (:func:`robust_good_threshold`): no hold-out needed, and one odd image
  cannot move it.

The block also holds the normalization range (``norm_lo``/``norm_hi``, see
:class:`apc_edge.scoring.ScoreNormalizer`): 0.5 is the threshold, 0 the lowest
good score, 1 the highest anomaly score (or as far above the threshold as the
lowest good score is below it).

Example::

    block = good_only_threshold(good_scores, max_false_alarm=0.01)
    block = anomaly_threshold(good_scores, anomaly_scores, target_recall=0.95)
    block["value"], block["achieved"]
"""
from __future__ import annotations

import time
from statistics import NormalDist

import numpy as np

from . import metrics


def normalization_range(good_scores, threshold: float, anomaly_scores=None) -> tuple[float, float]:
    """``(lo, hi)`` for the score normalizer: good minimum, and anomaly maximum or ``2t - lo``."""
    lo = float(np.min(good_scores))
    lo = min(lo, threshold - 1e-6)
    hi = 2 * threshold - lo
    if anomaly_scores is not None and len(anomaly_scores):
        hi = max(hi, float(np.max(anomaly_scores)))
    return lo, max(hi, threshold + 1e-6)


def _rates(threshold: float, good, anomalous=None) -> dict:
    good = np.asarray(good, np.float64)
    out = {"false_alarm_rate": float(np.mean(good >= threshold)), "n_good": int(good.size)}
    if anomalous is not None and len(anomalous):
        anomalous = np.asarray(anomalous, np.float64)
        out.update(recall=float(np.mean(anomalous >= threshold)), n_anomalous=int(anomalous.size))
    return out


def good_only_threshold(good_scores, max_false_alarm: float) -> dict:
    """Threshold block at a target false-alarm rate on good images only."""
    good = np.asarray(good_scores, np.float64)
    if good.size == 0:
        raise ValueError("good-only calibration needs at least one held-out good image")
    t = metrics.threshold_for_false_alarm(good, max_false_alarm)
    lo, hi = normalization_range(good, t)
    block = {"value": t, "method": "good_only_false_alarm", "target_false_alarm": float(max_false_alarm),
             "achieved": _rates(t, good), "resolution": 1.0 / good.size, "norm_lo": lo, "norm_hi": hi,
             "n_images": int(good.size)}
    if max_false_alarm < 1.0 / good.size:
        block["note"] = (f"target {max_false_alarm} is below 1/{good.size}, the smallest false-alarm rate "
                         f"{good.size} good images can show: threshold set just above the highest good score; "
                         f"the real rate is unverified (score more good images)")
    return block


def anomaly_threshold(good_scores, anomaly_scores, target_recall: float | None = None) -> dict:
    """Threshold block from goods and anomalies: F1-optimal, or the highest reaching ``target_recall``."""
    good = np.asarray(good_scores, np.float64)
    bad = np.asarray(anomaly_scores, np.float64)
    if good.size == 0 or bad.size == 0:
        raise ValueError(f"calibration with anomalies needs good and anomalous images, got {good.size} good "
                         f"and {bad.size} anomalous")
    labels = np.r_[np.zeros(good.size), np.ones(bad.size)]
    scores = np.r_[good, bad]
    if target_recall is None:
        f1, t = metrics.best_f1(labels, scores)
        block = {"value": t, "method": "best_f1", "f1": f1}
    else:
        t = metrics.threshold_for_recall(labels, scores, target_recall)
        block = {"value": t, "method": "target_recall", "target_recall": float(target_recall),
                 "f1": metrics.f1_at(labels, scores, t)}
    lo, hi = normalization_range(good, t, bad)
    block.update(achieved=_rates(t, good, bad), image_auroc=metrics.auroc(labels, scores), norm_lo=lo, norm_hi=hi,
                 n_images=int(scores.size))
    return block


def stamp(block: dict, **provenance) -> dict:
    """Add when and on what the threshold was calibrated."""
    return {**block, "calibrated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **provenance}


def robust_good_threshold(good_scores, max_false_alarm: float = 0.01, method: str = "leave_one_image_out") -> dict:
    """Threshold from good images' scores that one odd image cannot move, at a target false-alarm rate.

    The larger of two estimates:

    * **rank**: halfway between the (k+1)-th and k-th largest score, with
      ``k = max(1, floor(max_false_alarm * n))`` goods allowed above it, so the single
      largest score never sets it;
    * **tail**: ``median + z(1 - max_false_alarm) * 1.4826 * MAD``, the Gaussian tail
      from robust statistics, which keeps a handful of images from giving a threshold
      inside the bulk of the scores.

    Needs at least 2 scores. The block states the rate it implies on these scores.

    Example::

        block = robust_good_threshold(loo_scores, max_false_alarm=0.01)
        block["value"], block["implied_false_alarm"]
    """
    s = np.sort(np.asarray(good_scores, np.float64))
    if s.size < 2:
        raise ValueError(f"a threshold from good images needs at least 2 scored images, got {s.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError("good-image scores contain NaN or inf: cannot set a threshold")
    if not 0 < max_false_alarm < 1:
        raise ValueError(f"target false-alarm rate must be in (0, 1), got {max_false_alarm}")
    k = max(1, int(np.floor(max_false_alarm * s.size)))
    rank = float((s[-k - 1] + s[-k]) / 2)
    median = float(np.median(s))
    spread = 1.4826 * float(np.median(np.abs(s - median)))
    tail = median + NormalDist().inv_cdf(1 - max_false_alarm) * spread
    t = max(rank, tail)
    lo, hi = normalization_range(s, t)
    return {"value": t, "method": method, "target_false_alarm": float(max_false_alarm),
            "implied_false_alarm": float(np.mean(s >= t)), "estimates": {"rank": rank, "tail": tail},
            "n_images": int(s.size), "score_range": [float(s[0]), float(s[-1])], "norm_lo": lo, "norm_hi": hi}
