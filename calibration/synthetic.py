"""A small synthetic inspection data set in MVTec layout, generated on the spot.

It is the embedded default of the quickstart and the tests' fallback where the
real data is absent: machined washers (textured discs with small pose and light
variation) and two defect types with exact masks, ``scratch`` and ``spot``.

Example::

    root = write_synthetic_category("demo/washer", n_train=40, n_test_good=10, n_test_defect=10)
    # demo/washer/train/good/000.png, demo/washer/test/scratch/000.png, demo/washer/ground_truth/scratch/000_mask.png
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

SIZE = 256
DEFECT_TYPES = ("scratch", "spot")


def _washer(rng: np.random.Generator) -> np.ndarray:
    """One good part: a brushed ring on a dark belt, with pose, light and sensor-noise variation."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    cx = SIZE / 2 + rng.uniform(-4, 4)
    cy = SIZE / 2 + rng.uniform(-4, 4)
    r = np.hypot(xx - cx, yy - cy)
    angle = np.arctan2(yy - cy, xx - cx) + rng.uniform(0, 2 * np.pi)
    brushed = 12 * np.sin(r * 0.9) + 6 * np.sin(angle * 24)
    ring = (r > 38) & (r < 100)
    belt = 40 + 6 * np.sin(xx * 0.3) * np.sin(yy * 0.3)
    img = np.where(ring, 150 + brushed, belt) * rng.uniform(0.93, 1.07)
    img += rng.normal(0, 3, img.shape)
    grey = np.clip(img, 0, 255).astype(np.uint8)
    return cv2.merge([grey, (grey * 0.97).astype(np.uint8), (grey * 0.92).astype(np.uint8)])


def _ring_point(rng: np.random.Generator) -> tuple[int, int]:
    a, rad = rng.uniform(0, 2 * np.pi), rng.uniform(50, 88)
    return int(SIZE / 2 + rad * np.cos(a)), int(SIZE / 2 + rad * np.sin(a))


def _add_defect(img: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros(img.shape[:2], np.uint8)
    x0, y0 = _ring_point(rng)
    if kind == "scratch":
        a = rng.uniform(0, np.pi)
        length = rng.uniform(18, 35)
        x1, y1 = int(x0 + length * np.cos(a)), int(y0 + length * np.sin(a))
        thickness = int(rng.integers(2, 4))
        cv2.line(img, (x0, y0), (x1, y1), (25, 25, 25), thickness, cv2.LINE_AA)
        cv2.line(mask, (x0, y0), (x1, y1), 255, thickness + 2)
    elif kind == "spot":
        radius = int(rng.integers(5, 10))
        cv2.circle(img, (x0, y0), radius, (235, 225, 90), -1, cv2.LINE_AA)
        cv2.circle(mask, (x0, y0), radius + 1, 255, -1)
    else:
        raise ValueError(f"unknown synthetic defect type {kind!r}; known: {', '.join(DEFECT_TYPES)}")
    return img, mask


def write_synthetic_category(root: str | Path, n_train: int = 40, n_test_good: int = 10, n_test_defect: int = 10,
                             seed: int = 0) -> Path:
    """Write the data set under ``root`` (MVTec layout) and return ``root``. Deterministic for a seed."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    good_train = root / "train" / "good"
    good_train.mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        cv2.imwrite(str(good_train / f"{i:03d}.png"), _washer(rng))
    (root / "test" / "good").mkdir(parents=True, exist_ok=True)
    for i in range(n_test_good):
        cv2.imwrite(str(root / "test" / "good" / f"{i:03d}.png"), _washer(rng))
    for kind in DEFECT_TYPES:
        (root / "test" / kind).mkdir(parents=True, exist_ok=True)
        (root / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n_test_defect):
            img, mask = _add_defect(_washer(rng), kind, rng)
            cv2.imwrite(str(root / "test" / kind / f"{i:03d}.png"), img)
            cv2.imwrite(str(root / "ground_truth" / kind / f"{i:03d}_mask.png"), mask)
    return root


def main(argv: list[str] | None = None) -> int:
    """``python -m apc_edge.calibration.synthetic OUT_DIR``: write the demo data set."""
    import argparse

    p = argparse.ArgumentParser(description="Write the synthetic washer data set in MVTec layout.")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    root = write_synthetic_category(args.out_dir, seed=args.seed)
    print(f"synthetic data set written to {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
