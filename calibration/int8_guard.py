"""INT8 accuracy guard: does the compressed model still see what the FP32 model sees?

On held-out good images (never in the bank) and, when given, anomalies, it
compares the compressed pipeline (graph + its own bank) with the FP32 one:
per-patch embedding cosine (all images), the image scores' rank correlation
(all images) and the largest relative score change on the held-out goods. :func:`guard_failures` lists every tolerance passed,
so the export can refuse with a message naming each.

Example::

    result = compare_pipelines(fp32, int8, pre, images)       # Pipeline(backend, bank, index, b) each
    problems = guard_failures(result.report, GuardTolerance(min_cosine=0.97))
    if problems: raise QuantizationGuardError("; ".join(problems))
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from apc_edge.backends import Backend
from apc_edge.index import NeighbourIndex
from apc_edge.preprocess import Preprocessor, load_image
from apc_edge.scoring import score_embedding

from .agreement import patch_cosines, rank_agreement
from .metrics import auroc


MIN_RANK_IMAGES = 10
KNOWN_SCORE_RTOL = 1e-4     # a known reference score is used only if one recomputed agrees this closely


class QuantizationGuardError(ValueError):
    """The compressed model moved too far from the FP32 one; nothing was written."""


@dataclass(frozen=True)
class GuardTolerance:
    """Limits the compressed pipeline must meet (defaults: see docs/edge-compression.md)."""

    min_cosine: float = 0.97        # mean per-patch embedding cosine, INT8 vs FP32
    min_spearman: float = 0.8       # image-score rank correlation over all guard images (enforced from
                                    # MIN_RANK_IMAGES images on: a handful of similar good scores rank at random)
    max_score_change: float = 0.25  # largest image-score change, relative to max(score, FP32 threshold)
    max_auroc_drop: float = 0.003   # goods-vs-anomalies image AUROC, FP32 minus compressed

    def validate(self) -> "GuardTolerance":
        if not -1.0 <= self.min_cosine <= 1.0:
            raise ValueError(f"--int8-min-cosine must be in [-1, 1], got {self.min_cosine}")
        if not -1.0 <= self.min_spearman <= 1.0:
            raise ValueError(f"--int8-min-spearman must be in [-1, 1], got {self.min_spearman}")
        if self.max_score_change < 0:
            raise ValueError(f"--int8-max-score-change must be >= 0, got {self.max_score_change}")
        if not 0 <= self.max_auroc_drop <= 1:
            raise ValueError(f"--int8-max-auroc-drop must be in [0, 1], got {self.max_auroc_drop}")
        return self


@dataclass
class Pipeline:
    """What turns an image into a score: the graph, its bank and the search over it."""

    backend: Backend
    bank: np.ndarray
    index: NeighbourIndex
    num_neighbours: int = 9
    peak_sigma: float = 0.0           # the model's image-score rule (apc_edge.scoring.score_neighbours)


@dataclass
class GuardResult:
    """What :func:`compare_pipelines` found: the report for the manifest, and the compressed pipeline's
    embeddings and image scores of the guard images (unrounded, for reuse by the export)."""

    report: dict
    embeddings: list[np.ndarray]
    scores: list[float]


def embed_images(backend: Backend, pre: Preprocessor, images: list) -> list[np.ndarray]:
    """One (D, h, w) embedding per image (a file path or a uint8 array as ``load_image`` returns)."""
    return [backend.run(pre(p if isinstance(p, np.ndarray) else load_image(p)))[0] for p in images]


def region_cosines(ref_emb: list[np.ndarray], test_emb: list[np.ndarray], regions: list | None = None) -> np.ndarray:
    """Per-patch cosines between two graphs' embeddings of the same images, over ``regions``' cells."""
    regions = regions if regions is not None else [None] * len(ref_emb)
    return np.concatenate([patch_cosines(a, b)[r.ravel() if r is not None else slice(None)]
                           for a, b, r in zip(ref_emb, test_emb, regions)])


def mean_cosine(ref_emb: list[np.ndarray], test_emb: list[np.ndarray], regions: list | None = None) -> float:
    """The guard's cosine figure: the mean of :func:`region_cosines`."""
    return float(region_cosines(ref_emb, test_emb, regions).mean())


def compare_pipelines(ref: Pipeline, test: Pipeline, pre: Preprocessor, paths: list,
                      n_good: int | None = None, threshold: float | None = None,
                      regions: list | None = None, excludes: list | None = None,
                      n_anomalies: int = 0, anomaly_source: str = "",
                      embeddings: tuple[list, list] | None = None,
                      reference_scores: list | None = None) -> GuardResult:
    """Agreement report of ``test`` vs ``ref`` on ``paths``, with ``test``'s embeddings and scores of them.

    ``regions`` (one per path, or ``None``): the patch cells that are scored (pad mode: the part); cosines
    and scores are taken over those cells only.

    ``excludes`` (one per path, or ``None``): bank rows each image must not match, for bank images
    scored leave-one-out (both banks hold the same coreset patches, so the same rows).
    ``n_good``: how many of ``paths`` (the first ones) are held-out good images;
    their scores are also reported separately. ``threshold`` (the reference
    model's): score changes are relative to ``max(score, threshold)``, the scale
    on which a change can flip a verdict. ``n_anomalies``: how many images right after the goods are
    anomalies (``anomaly_source`` says which kind); the goods-vs-anomalies image AUROC of both
    pipelines is then reported, which is where clipped defect activations show.

    ``paths`` may hold file paths or uint8 image arrays (synthetic anomalies). ``embeddings``: the
    (reference, test) embeddings of ``paths`` when the caller has them already. ``reference_scores``: ``ref``'s
    image scores where already known (``None`` elsewhere), e.g. a training run's own leave-one-out scores;
    the first one is recomputed, and all are ignored unless it agrees (the images may have changed since).
    """
    if not paths:
        raise QuantizationGuardError("the accuracy guard has no images: the run names no good images to "
                                     "measure on and no --guard-images were given")
    ref_emb, test_emb = embeddings if embeddings is not None else (embed_images(ref.backend, pre, paths),
                                                                    embed_images(test.backend, pre, paths))
    regions = regions if regions is not None else [None] * len(paths)
    excludes = excludes if excludes is not None else [None] * len(paths)
    cos = region_cosines(ref_emb, test_emb, regions)
    def ref_score(i: int) -> float:
        return score_embedding(ref_emb[i], ref.index, ref.bank, ref.num_neighbours, region=regions[i],
                               exclude=excludes[i], peak_sigma=ref.peak_sigma).image_score

    known = list(reference_scores) if reference_scores is not None else [None] * len(paths)
    first = next((i for i, k in enumerate(known) if k is not None), None)
    if first is not None:
        check = ref_score(first)
        known = known if abs(check - known[first]) <= KNOWN_SCORE_RTOL * abs(check) else [None] * len(paths)
        known[first] = check
    s_ref = [float(k) if k is not None else ref_score(i) for i, k in enumerate(known)]
    s_test = [score_embedding(e, test.index, test.bank, test.num_neighbours, region=r, exclude=x,
                              peak_sigma=test.peak_sigma).image_score
              for e, r, x in zip(test_emb, regions, excludes)]
    n_good = len(paths) if n_good is None else n_good
    report = {
        "n_images": len(paths), "n_held_out_good": n_good, "n_anomalies": n_anomalies,
        "n_extra": len(paths) - n_good - n_anomalies,
        "embedding_cosine": {"mean": float(cos.mean()), "min": float(cos.min()),
                             "p01": float(np.quantile(cos, 0.01))},
        "image_scores": rank_agreement(s_ref, s_test, threshold),
        "score_change_relative_to": "max(FP32 score, FP32 threshold)" if threshold else "FP32 score",
    }
    if 1 <= n_good < len(paths):
        report["image_scores_held_out_good"] = rank_agreement(s_ref[:n_good], s_test[:n_good], threshold)
        report["image_scores_extra"] = rank_agreement(s_ref[n_good:], s_test[n_good:], threshold)
    if threshold:
        flips = [i for i, (a, c) in enumerate(zip(s_ref, s_test)) if (a >= threshold) != (c >= threshold)]
        report["verdict_flips_at_fp32_threshold"] = len(flips)
    if n_anomalies and n_good:
        labels = [0] * n_good + [1] * n_anomalies
        a_ref = auroc(labels, s_ref[:n_good + n_anomalies])
        a_test = auroc(labels, s_test[:n_good + n_anomalies])
        report["anomaly_auroc"] = {"reference": a_ref, "compressed": a_test, "drop": a_ref - a_test,
                                   "n_good": n_good, "n_anomalies": n_anomalies, "anomalies": anomaly_source}
    report["spearman_enforced"] = len(paths) >= MIN_RANK_IMAGES
    report["scores"] = {"reference": [round(float(s), 6) for s in s_ref],
                        "compressed": [round(float(s), 6) for s in s_test]}
    return GuardResult(report, test_emb, [float(s) for s in s_test])


def guard_failures(report: dict, tol: GuardTolerance) -> list[str]:
    """Human-readable list of the tolerances ``report`` passes (empty: the guard holds)."""
    out = []
    cos = report["embedding_cosine"]["mean"]
    if cos < tol.min_cosine:
        out.append(f"mean embedding cosine INT8 vs FP32 {cos:.4f} < --int8-min-cosine {tol.min_cosine}")
    scores = report["image_scores"]
    rho = scores.get("spearman")
    if rho is not None and scores["n_images"] >= MIN_RANK_IMAGES and rho < tol.min_spearman:
        out.append(f"image-score Spearman rank correlation {rho:.4f} over {scores['n_images']} images "
                   f"< --int8-min-spearman {tol.min_spearman}")
    # score change: judged on the held-out goods, where the threshold sits (anomalies may lose some
    # height to INT8 ranges calibrated on good images; the rank correlation covers them)
    on_goods = report.get("image_scores_held_out_good") or scores
    change = on_goods["max_rel_change"]
    if change > tol.max_score_change:
        out.append(f"largest image-score change on {on_goods['n_images']} held-out good images {change:.4f} "
                   f"(relative to {report.get('score_change_relative_to')}) > --int8-max-score-change "
                   f"{tol.max_score_change}")
    auc = report.get("anomaly_auroc")
    if auc and auc["drop"] > tol.max_auroc_drop:
        out.append(f"goods-vs-anomalies image AUROC fell from {auc['reference']:.4f} (FP32) to {auc['compressed']:.4f} "
                   f"on {auc['n_good']} goods and {auc['n_anomalies']} {auc['anomalies']} anomalies (drop "
                   f"{auc['drop']:.4f} > --int8-max-auroc-drop {tol.max_auroc_drop})")
    return out


def tolerance_dict(tol: GuardTolerance) -> dict:
    return asdict(tol)
