"""Measure what the HNSW file checks buy: corrupt ``index.hnsw`` (recomputed hashes) and load each case in its
own subprocess, once with the full checks of ``apc_edge.hnsw_file`` and once with only its header checks.

    .venv/bin/python docs/measure_hnsw_checks.py MODEL_DIR_WITH_HNSW FRAME.png [FRAME.png ...] --cases 200

Prints, per mutation, how each case ended: refused (ModelDirError), scored, error (another exception) or the
signal that killed the process. Used for docs/model_dir_fuzz.md; the worker reuses the fuzz test's corruptions.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_model_dir_fuzz as fuzz  # noqa: E402


def header_only() -> None:
    """Replace the loader's HNSW check by the header check alone (the measurement's baseline)."""
    import apc_edge.hnsw_file as hnsw_file
    import apc_edge.model_dir as model_dir
    from apc_edge.index import HnswIndex

    def open_hnsw(m, data, bank):
        hnsw_file._header(data, bank.shape[0], bank.shape[1], m.index.M, str(m.model_dir / m.index.file))
        return HnswIndex.from_bytes(data, bank.shape[1], ef=m.index.ef)

    model_dir._open_hnsw = open_hnsw


def one(mode: str, case: dict, model: str, frames: list[str], work: str) -> None:
    from apc_edge.preprocess import load_image

    if mode == "header-only":
        header_only()
    result = fuzz.run_case(case, {"hnsw": model}, [load_image(f) for f in frames], Path(work), {})
    print(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("frames", nargs="+")
    p.add_argument("--cases", type=int, default=200)
    p.add_argument("--work", default="/tmp/measure_hnsw_checks")
    p.add_argument("--one", nargs=2, metavar=("MODE", "CASE_JSON"), help=argparse.SUPPRESS)
    args = p.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    if args.one:
        return one(args.one[0], json.loads(args.one[1]), args.model_dir, args.frames, args.work)
    import numpy as np

    rng = np.random.default_rng(5)
    cases = [{"id": i, "dir": "hnsw", "file": "index.hnsw", "seed": int(rng.integers(2 ** 31)),
              "mutation": str(rng.choice(["links", "bitflip", "overwrite", "header"]))} for i in range(args.cases)]
    for mode in ("header-only", "full"):
        counts = Counter()
        for case in cases:
            proc = subprocess.run([sys.executable, __file__, args.model_dir, *args.frames, "--work", args.work,
                                   "--one", mode, json.dumps(case)], capture_output=True, text=True, timeout=300)
            if proc.returncode < 0:
                outcome = f"signal {-proc.returncode}"
            else:
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                outcome = r["outcome"] + (f" ({r['message'].split(':')[1].strip()})" if r["outcome"] == "error" else "")
            counts[(case["mutation"], outcome)] += 1
        for (mutation, outcome), n in sorted(counts.items()):
            print(f"{mode:<12} {mutation:<10} {outcome:<40} {n}")


if __name__ == "__main__":
    main()
