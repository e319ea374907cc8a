"""The low-shot curve: PatchCore trained on n random good images (several draws), image AUROC on the test set.

Each draw copies n images of DATA/train/good into a plain folder, trains with the defaults (the input plan,
every image in the bank, the leave-one-out threshold), exports FP32 with exact search and scores every test
image with ``Inspector.raw_score`` (no maps: image AUROC, and the false-alarm rate and recall at the
model's own threshold). Prints one row per draw and the mean per n; ``--json`` keeps everything.

Example::

    .venv/bin/python examples/lowshot_curve.py ../shared/data/bottle --sizes 2 5 10 20 50 --draws 3 --json b.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from apc_edge import Inspector
from apc_edge.calibration import metrics
from apc_edge.calibration.dataset import MVTecCategory
from apc_edge.export.model_export import ExportOptions, export_model
from apc_edge.export.patchcore import TrainConfig, fit_patchcore
from apc_edge.preprocess import load_image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data")
    p.add_argument("--sizes", type=int, nargs="+", default=[2, 5, 10, 20, 50])
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--json", dest="json_path")
    args = p.parse_args()
    data = MVTecCategory(args.data)
    goods, tests = data.train_good(), data.test_samples()
    labels = np.array([int(s.is_anomalous) for s in tests])
    frames = [load_image(s.path) for s in tests]
    rows = []
    for n in args.sizes:
        for draw in range(args.draws):
            pick = sorted(np.random.default_rng(1000 * n + draw).choice(len(goods), n, replace=False).tolist())
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp) / "good"
                folder.mkdir()
                for i in pick:
                    shutil.copy(goods[i], folder / goods[i].name)
                t0 = time.perf_counter()
                info = fit_patchcore(folder, Path(tmp) / "run", TrainConfig())
                train_s = time.perf_counter() - t0
                export_model(Path(tmp) / "run", Path(tmp) / "model", options=ExportOptions(index="exact"))
                inspector = Inspector(Path(tmp) / "model")
                scores = np.array([inspector.raw_score(f) for f in frames])
            t = inspector.threshold
            row = {"n": n, "draw": draw, "image_auroc": metrics.auroc(labels, scores),
                   "false_alarms": float(np.mean(scores[labels == 0] >= t)),
                   "recall": float(np.mean(scores[labels == 1] >= t)), "threshold": t,
                   "bank_rows": info["training"]["bank_size"], "train_s": round(train_s, 1),
                   "load": round(os.getloadavg()[0], 2)}
            rows.append(row)
            print(f"n={n:3d} draw {draw}: image AUROC {row['image_auroc']:.4f}, at the threshold false alarms "
                  f"{100 * row['false_alarms']:.1f} %, recall {100 * row['recall']:.1f} % (bank {row['bank_rows']}, "
                  f"train {row['train_s']} s, load {row['load']})", flush=True)
        mine = [r for r in rows if r["n"] == n]
        print(f"n={n:3d} mean of {len(mine)}: image AUROC {np.mean([r['image_auroc'] for r in mine]):.4f} "
              f"(min {min(r['image_auroc'] for r in mine):.4f}), false alarms "
              f"{100 * np.mean([r['false_alarms'] for r in mine]):.1f} %, recall "
              f"{100 * np.mean([r['recall'] for r in mine]):.1f} %", flush=True)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"data": str(args.data), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
