"""A plain ``Inspector.check`` loop: per-frame latency and the process's peak memory.

This is the camera PC's whole job without a camera: one Inspector, frames read
from disk one at a time (so only one frame is held, as with a camera), and
``check()`` timed alone. It prints the median and p95 latency, the peak
resident memory after loading the model and after the loop, and the thread
plan, and how much of the resident memory is mapped library files (code pages that other processes can share)
against heap. Run it once per setting; it never holds two model dirs, so its peak RSS
is that of one Inspector.

Usage:
    python examples/check_loop.py MODEL_DIR ../shared/data/bottle/test/broken_large --frames 60
    python examples/check_loop.py MODEL_DIR FOLDER --threads library   # each library's own thread defaults
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from apc_edge import Inspector
from apc_edge.calibration.dataset import list_images
from apc_edge.preprocess import load_image
from apc_edge.sysinfo import peak_rss_mb, resident_mb


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir")
    p.add_argument("folder", help="folder of frames, replayed in a loop")
    p.add_argument("--frames", type=int, default=60, help="checks to time (default 60)")
    p.add_argument("--warmup", type=int, default=3, help="checks before timing (default 3)")
    p.add_argument("--threads", choices=("auto", "library"), default="auto",
                   help="the runtime's thread plan (default) or every library's own defaults")
    args = p.parse_args(argv)
    paths = list_images(Path(args.folder))
    if not paths:
        p.error(f"{args.folder}: no images found")
    inspector = Inspector(args.model_dir, threads="auto" if args.threads == "auto" else None)
    rss_loaded = peak_rss_mb()
    seconds = []
    for i in range(args.warmup + args.frames):
        frame = load_image(paths[i % len(paths)])
        t0 = time.perf_counter()
        result = inspector.check(frame)
        if i >= args.warmup:
            seconds.append(time.perf_counter() - t0)
        if not np.isfinite(result.raw_score):
            print(f"check_loop: {paths[i % len(paths)]}: score is not finite", file=sys.stderr)
            return 1
    ms = np.asarray(seconds) * 1000
    now = resident_mb()
    median, p95 = float(np.median(ms)), float(np.percentile(ms, 95))
    print(f"{args.model_dir}: {args.frames} checks, median {median:.1f} ms, p95 {p95:.1f} ms "
          f"(p95/median {p95 / median:.2f}); peak RSS {rss_loaded:.0f} MB after loading, {peak_rss_mb():.0f} MB "
          f"after the loop"
          + (f" (resident now {now['rss']:.0f} MB: {now['file']:.0f} MB mapped library files, which other "
             f"processes can share, {now['anon']:.0f} MB heap and buffers)" if now else "")
          + f"; threads {inspector.threads}; "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
