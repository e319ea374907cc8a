"""Paired comparison of two models' per-image scores on the same test images.

``apc-compare A.csv B.csv`` reads two score files (``image,label,raw_score``, as
``apc-eval --scores-csv`` writes them and as the peer's harness does), keeps the
images both scored, and prints each image AUROC with a paired bootstrap interval
of the difference A - B: the test images are resampled with replacement (goods
and defects separately, so every resample has both), and both models are scored
on the same resample.

Example::

    apc-compare runs/mtd_new.csv ../shared/peer/scores/magnetic_tile-c0.01.csv
    diff = paired_auroc_difference(labels, scores_a, scores_b)   # dict: a, b, difference, low, high
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from apc_edge.cli import args as A

from . import metrics

SCORE_COLUMNS = ("image", "label", "raw_score")


def read_scores(path: str | Path) -> dict[str, tuple[int, float]]:
    """``{image: (label, raw_score)}`` from a scores CSV; ``ValueError`` naming the file if malformed."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not set(SCORE_COLUMNS) <= set(reader.fieldnames):
                raise ValueError(f"{path}: needs the columns {', '.join(SCORE_COLUMNS)}, has {reader.fieldnames}")
            return {row["image"]: (int(row["label"]), float(row["raw_score"])) for row in reader}
    except OSError as exc:
        raise ValueError(f"cannot read scores file {path}: {exc.strerror}") from None
    except (TypeError, KeyError) as exc:
        raise ValueError(f"{path}: malformed row ({exc})") from None


def write_scores(path: str | Path, rows: list[dict]) -> None:
    """Write per-image rows (``image, label, raw_score`` first, then any other keys) as CSV."""
    keys = list(SCORE_COLUMNS) + [k for k in rows[0] if k not in SCORE_COLUMNS] if rows else list(SCORE_COLUMNS)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def paired_auroc_difference(labels, scores_a, scores_b, resamples: int = 2000, seed: int = 0,
                            level: float = 0.95) -> dict:
    """Image AUROC of A and B and a paired bootstrap interval of ``AUROC(A) - AUROC(B)``."""
    y = np.asarray(labels).astype(bool)
    a, b = np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    if not pos.size or not neg.size:
        raise ValueError("a paired AUROC comparison needs good and defect images")
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    for r in range(resamples):
        i = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
        diffs[r] = metrics.auroc(y[i], a[i]) - metrics.auroc(y[i], b[i])
    auc_a, auc_b = metrics.auroc(y, a), metrics.auroc(y, b)
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return {"n_images": int(y.size), "n_defects": int(pos.size), "auroc_a": auc_a, "auroc_b": auc_b,
            "difference": auc_a - auc_b, "low": float(lo), "high": float(hi), "level": level,
            "resamples": resamples}


def main(argv: list[str] | None = None) -> int:
    p = A.ArgumentParser(prog="apc-compare", description="Paired bootstrap of the image-AUROC difference "
                                "of two per-image score files (A - B) on the images both scored.")
    p.add_argument("a", help="scores CSV of model A (image,label,raw_score)")
    p.add_argument("b", help="scores CSV of model B")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="resampling seed (default %(default)s)")
    p.add_argument("--json", dest="json_path", help="also write the result here")
    args = A.parse(p, argv)
    if isinstance(args, int):
        return args
    if args.resamples < 100:
        print(f"apc-compare: --resamples must be at least 100, got {args.resamples}", file=sys.stderr)
        return 2
    try:
        a, b = read_scores(args.a), read_scores(args.b)
        keys = sorted(set(a) & set(b))
        if not keys:
            raise ValueError(f"{args.a} and {args.b} share no image names")
        clash = [k for k in keys if a[k][0] != b[k][0]]
        if clash:
            raise ValueError(f"the files disagree on the label of {len(clash)} images, e.g. {clash[0]}")
        res = paired_auroc_difference([a[k][0] for k in keys], [a[k][1] for k in keys], [b[k][1] for k in keys],
                                      args.resamples, args.seed)
    except ValueError as exc:
        print(f"apc-compare: {exc}", file=sys.stderr)
        return 2
    res.update(a=str(args.a), b=str(args.b), only_in_a=len(set(a) - set(b)), only_in_b=len(set(b) - set(a)))
    A.write_json(args.json_path, res)
    print(f"apc-compare: {res['n_images']} images ({res['n_defects']} defects): image AUROC A {res['auroc_a']:.4f}, "
          f"B {res['auroc_b']:.4f}, A - B {res['difference']:+.4f} ({100 * res['level']:.0f} % interval "
          f"{res['low']:+.4f} to {res['high']:+.4f}, {res['resamples']} paired resamples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
