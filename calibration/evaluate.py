"""Evaluate a model dir on an MVTec-layout folder through the runtime (the camera PC's path).

Pixel metrics are computed on the model-input grid (frames and masks go through
the same resize/crop), which keeps them comparable across image sizes and cheap.
``pixel_size`` also computes them with every image's map and mask resized to one
fixed size, the protocol of tools that evaluate at their model's input size (anomalib's
defaults: 256x256): each image then weighs the same, whatever its own size.

Example::

    report = evaluate("models/bottle", "../shared/data/bottle")
    report["image_auroc"], report["pixel_auroc"], report["pro"]
"""
from __future__ import annotations

import contextlib

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from apc_edge import Inspector
from apc_edge.preprocess import load_image

from . import metrics
from .dataset import DatasetError, MVTecCategory, Sample


@dataclass
class ScoredSample:
    sample: Sample
    raw_score: float
    latency_ms: float
    input_map: np.ndarray      # anomaly map on the model-input grid
    input_mask: np.ndarray     # ground truth on the model-input grid


def excluded_keys(inspector: Inspector, extra: list[str] | None = None) -> set[str]:
    """Test images that must not be evaluated: few-shot anomalies used in training, plus ``extra``."""
    used = inspector.manifest.get("few_shot_anomalies", {}).get("images", [])
    return set(used) | set(extra or [])


def score_samples(inspector: Inspector, samples: list[Sample], progress=None) -> list[ScoredSample]:
    pre = inspector.preprocessor
    scored = []
    with progress if progress is not None else contextlib.nullcontext():     # the bar's line ends, error or not
        for s in samples:
            frame = load_image(s.path)
            r = inspector.check(frame)
            mask = s.load_mask(frame.shape[:2])
            scored.append(ScoredSample(s, r.raw_score, r.timings["total"],
                                       pre.to_input_grid(r.anomaly_map), pre.to_input_grid(mask, nearest=True)))
            if progress:
                progress.update(1)
    return scored


def pixel_metrics(masks: list[np.ndarray], maps: list[np.ndarray]) -> dict:
    """Pixel AUROC, best pixel F1 and PRO (FPR up to 0.3) of ground-truth ``masks`` against anomaly ``maps``."""
    return {"pixel_auroc": metrics.pixel_auroc(masks, maps), "pixel_f1": metrics.pixel_f1(masks, maps)[0],
            "pro": metrics.pro_auc(masks, maps)}


def pixel_metrics_at(scored: list[ScoredSample], size: tuple[int, int]) -> dict:
    """:func:`pixel_metrics` with each image's map (bilinear) and mask (nearest) resized to ``size`` (H, W)."""
    h, w = size
    maps = [cv2.resize(s.input_map.astype(np.float32, copy=False), (w, h), interpolation=cv2.INTER_LINEAR)
            for s in scored]
    masks = [cv2.resize(s.input_mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
             for s in scored]
    return {"size": [h, w], **pixel_metrics(masks, maps)}


def summarize(scored: list[ScoredSample], threshold: float) -> dict:
    labels = np.array([s.sample.is_anomalous for s in scored])
    scores = np.array([s.raw_score for s in scored])
    f1, f1_t = metrics.best_f1(labels, scores)
    anomalous = [s for s in scored if s.sample.is_anomalous]
    per_type = {}
    for t in sorted({s.sample.defect_type for s in anomalous}):
        sel = np.array([s.sample.defect_type in ("good", t) for s in scored])
        per_type[t] = metrics.auroc(labels[sel], scores[sel])
    pred = scores >= threshold
    return {
        "image_auroc": metrics.auroc(labels, scores),
        "image_f1": f1,
        "image_f1_threshold": f1_t,
        **pixel_metrics([s.input_mask for s in scored], [s.input_map for s in scored]),
        "per_defect_type_image_auroc": per_type,
        "at_threshold": {
            "threshold": threshold,
            "f1": metrics.f1_at(labels, scores, threshold),
            "false_alarm_rate": float(pred[~labels].mean()) if (~labels).any() else None,
            "recall": float(pred[labels].mean()) if labels.any() else None,
        },
        "n_test": int(len(scored)),
        "n_anomalous": int(labels.sum()),
        "latency_ms": float(np.median([s.latency_ms for s in scored])),
    }


def evaluate(model_dir: str | Path, data_dir: str | Path, device: str = "CPU", exclude: list[str] | None = None,
             progress=None, pixel_size: tuple[int, int] | None = None) -> tuple[dict, list[ScoredSample], Inspector]:
    """Score every test image of ``data_dir`` (minus excluded ones) and compute all metrics; ``pixel_size``
    (H, W) adds ``pixel_metrics_at``, the pixel metrics on maps and masks resized to that size."""
    inspector = Inspector(model_dir, device=device)
    data = MVTecCategory(data_dir)
    skip = excluded_keys(inspector, exclude)
    samples = [s for s in data.test_samples() if s.key not in skip]
    kinds = {s.is_anomalous for s in samples}
    if kinds != {True, False}:
        missing = "good" if True in kinds else "anomalous"
        raise DatasetError(f"{data.root}/test has no {missing} images left to evaluate: image AUROC and F1 "
                           f"need both good and anomalous test images")
    if progress is not None:
        progress = progress(len(samples))
    scored = score_samples(inspector, samples, progress)
    report = summarize(scored, inspector.threshold)
    if pixel_size is not None:
        report["pixel_metrics_at"] = pixel_metrics_at(scored, pixel_size)
    report.update({"model_dir": str(model_dir), "data_dir": str(data_dir), "category": data.name,
                   "excluded": sorted(skip), "backend": inspector.backend.describe(),
                   "index": inspector.manifest["index"].get("type", "exact")})
    return report, scored, inspector
