"""Benchmark the coreset: one pick at a time (the textbook greedy) against apc-edge's batched greedy.

Both run on the same real patch features (extracted from DATA/train/good with the default backbone and
preprocessing, or loaded from ``--features FILE.npy``), at each ``--sizes`` (random subsets) and
``--ratio``. Prints the wall time of each, the share of identical picks and the covering-radius ratio
(largest distance from any patch to its nearest pick, new over old). ``--old-max-picks`` times only the
first picks of the textbook loop and extrapolates (its cost per pick is constant), marked ``~``.

Example::

    .venv/bin/python examples/bench_coreset.py ../shared/data/bottle --sizes 50000 160000 --ratio 0.1
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np


def textbook_greedy(z: np.ndarray, size: int, seed: int, max_picks: int | None) -> tuple[np.ndarray, float, bool]:
    """One matrix-vector product over all N patches per pick; returns (picks, seconds, extrapolated)."""
    n = len(z)
    sq = np.einsum("ij,ij->i", z, z)
    min_d = np.full(n, np.inf, np.float32)
    dots = np.empty(n, np.float32)
    picks = [int(np.random.default_rng(seed).integers(n))]
    limit = size if max_picks is None else min(size, max_picks)
    t0 = time.perf_counter()
    while True:
        np.matmul(z, z[picks[-1]], out=dots)
        d = sq - 2.0 * dots
        d += sq[picks[-1]]
        np.minimum(min_d, d, out=min_d)
        if len(picks) == limit:
            break
        picks.append(int(np.argmax(min_d)))
    seconds = time.perf_counter() - t0
    return np.array(picks), seconds * size / limit, limit < size


def main() -> None:
    from apc_edge.coreset import covering_radius, greedy_coreset

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", nargs="?", help="MVTec-layout category (features of train/good)")
    p.add_argument("--features", help="or a saved (N, D) float32 .npy of patch features")
    p.add_argument("--sizes", type=int, nargs="+", default=[50000, 200000])
    p.add_argument("--ratio", type=float, default=0.1)
    p.add_argument("--old-max-picks", type=int, default=None, help="time only this many textbook picks")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.features:
        feats = np.load(args.features, allow_pickle=False)
    else:
        from apc_edge.calibration.dataset import MVTecCategory
        from apc_edge.export.backbones import build_backbone
        from apc_edge.export.embedder import PatchEmbedder
        from apc_edge.export.patchcore import TrainConfig, collect_patches, make_preprocessor, resolve_input

        backbone = build_backbone("mobilenet_v2")
        embedder = PatchEmbedder(backbone).eval()
        goods = MVTecCategory(args.data).train_good()
        pre = make_preprocessor(resolve_input(TrainConfig(), goods), backbone)    # apc-train's default input
        feats = collect_patches(embedder, pre, goods, 8)
    print(f"features {feats.shape}; load average {os.getloadavg()[0]:.2f}")
    rng = np.random.default_rng(args.seed)
    for n in args.sizes:
        z = np.ascontiguousarray(feats[np.sort(rng.choice(len(feats), min(n, len(feats)), replace=False))])
        size = int(np.ceil(args.ratio * len(z)))
        t0 = time.perf_counter()
        new = greedy_coreset(z, size=size, progress=False, seed=args.seed)
        t_new = time.perf_counter() - t0
        old, t_old, approx = textbook_greedy(z, size, args.seed, args.old_max_picks)
        same = np.isin(old, new).mean()
        ratio = covering_radius(z, new) / covering_radius(z, old) if not approx else float("nan")
        print(f"N={len(z)} picks={size}: textbook {'~' if approx else ''}{t_old:.1f} s, batched {t_new:.1f} s "
              f"({t_old / t_new:.1f}x); identical picks {100 * same:.2f} % of those timed; covering radius "
              f"new/old {ratio:.4f}; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
