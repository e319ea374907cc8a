"""Time ``apc-update`` on a real model dir: 10 and 100 added good images, bank growth and seconds.

The images are DATA's good training images, optionally under a changed light (``--blue B`` adds B to the
blue channel, the kind of drift that makes good parts false alarms), so the update has something to learn.

Example::

    .venv/bin/python examples/bench_update.py models/bottle ../shared/data/bottle --counts 10 100 --blue 80
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from apc_edge.calibration.dataset import MVTecCategory
from apc_edge.model_update import update_model
from apc_edge.preprocess import load_image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir")
    p.add_argument("data")
    p.add_argument("--counts", type=int, nargs="+", default=[10, 100])
    p.add_argument("--blue", type=int, default=0, help="add this to the blue channel of every image")
    args = p.parse_args()
    goods = MVTecCategory(args.data).train_good()
    for n in args.counts:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "good"
            folder.mkdir()
            for path in goods[:n]:
                img = load_image(path)
                if args.blue:
                    img = cv2.add(img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR),
                                  np.full((*img.shape[:2], 3), (args.blue, 0, 0), np.uint8))
                cv2.imwrite(str(folder / path.name), img)
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            r = update_model(args.model_dir, Path(tmp) / "model_v2", good=[folder])
            seconds = time.perf_counter() - t0
            print(f"{n} images (blue +{args.blue}): {seconds:.1f} s, bank {r['bank_rows'][0]} -> {r['bank_rows'][1]} "
                  f"(+{r['rows_added']}), index {r['index']['type']}, threshold {r['threshold']['value']:.4f}"
                  f"{' (raised)' if 'raised_from' in r['threshold'] else ''}, load {load:.2f} -> {os.getloadavg()[0]:.2f}",
                  flush=True)
            measured = r["index"].get("measured_after_update")
            if measured:
                print(f"  index check on the new images: recall@1 {measured['recall_at_1']:.4f}, image-score change "
                      f"{measured['image_score_max_rel_change']:.5f}", flush=True)
            shutil.rmtree(Path(tmp) / "model_v2", ignore_errors=True)


if __name__ == "__main__":
    main()
