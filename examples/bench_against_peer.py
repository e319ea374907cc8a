"""Our ``Inspector.check`` against anomalib's exported OpenVINO PatchCore, on the same frames, in alternating rounds.

Two worker processes, one per side, each load its model once and hold every frame as an array in memory;
then each round times one pass over all frames on one side and then the other, the order reversed every
round (A B, B A, ...), so that the machine's drift falls on both. Each call is timed from a decoded array
to the side's full answer (score and map). It prints each round's medians and their ratio, the median and
p95 over all rounds, and the load average before and after. The peer side runs in anomalib's own venv
(``../shared/peer/README.md`` builds it and exports the model with ``run_anomalib.py --export fp32``).

Usage:
    python examples/bench_against_peer.py MODEL_DIR ../shared/data/bottle/test/* \\
        --peer-python /tmp/peer/venv/bin/python --peer-model /tmp/peer/work/bottle/.../model.xml --rounds 6
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

def _our_side(model_dir: str, paths: list[Path]):
    from apc_edge import Inspector
    from apc_edge.preprocess import load_image

    inspector = Inspector(model_dir)
    frames = [load_image(p) for p in paths]
    return lambda frame: inspector.check(frame), frames


def _peer_side(model_xml: str, paths: list[Path]):
    from anomalib.data.utils import read_image
    from anomalib.deploy import OpenVINOInferencer

    inferencer = OpenVINOInferencer(path=model_xml, device="CPU")
    frames = [read_image(str(p)) for p in paths]
    return lambda frame: inferencer.predict(frame), frames


def worker(side: str, model: str, warmup: int) -> int:
    """Read the frames' paths (one JSON line on stdin), load one side, then answer each ``go`` line with one
    JSON line of per-frame seconds. The peer's venv has no apc_edge, so the parent lists the frames."""
    paths = [Path(p) for p in json.loads(sys.stdin.readline())]
    run, frames = (_our_side if side == "ours" else _peer_side)(model, paths)
    for i in range(warmup):
        run(frames[i % len(frames)])
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        seconds = []
        for frame in frames:
            t0 = time.perf_counter()
            run(frame)
            seconds.append(time.perf_counter() - t0)
        print(json.dumps(seconds), flush=True)
    return 0


def _start(python: str, side: str, model: str, paths: list[Path], args) -> subprocess.Popen:
    cmd = [python, os.path.abspath(__file__), "--worker", side, os.path.abspath(model), "-", "--warmup",
           str(args.warmup)]
    # a scratch working folder: anomalib's inferencer leaves an openvino_cache folder in it
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir())
    proc.stdin.write(json.dumps([str(p.resolve()) for p in paths]) + "\n")
    proc.stdin.flush()
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise SystemExit(f"bench_against_peer: the {side} worker did not start ({' '.join(cmd)})")
    return proc


def _round(proc: subprocess.Popen) -> list[float]:
    proc.stdin.write("go\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise SystemExit("bench_against_peer: a worker stopped during a round")
    return [1000.0 * s for s in json.loads(line)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="our model dir (or, with --worker peer, the peer's model.xml)")
    p.add_argument("folders", type=Path, nargs="+", help="folders of frames (their images, sorted)")
    p.add_argument("--peer-python", help="the python of anomalib's venv")
    p.add_argument("--peer-model", help="anomalib's exported OpenVINO model.xml")
    p.add_argument("--frames", type=int, default=0, help="the first N frames (default: all)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--warmup", type=int, default=5, help="calls per side before timing (default 5)")
    p.add_argument("--worker", choices=("ours", "peer"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.model, args.warmup)
    if not (args.peer_python and args.peer_model):
        p.error("--peer-python and --peer-model are required")
    from apc_edge.calibration.dataset import list_images
    from apc_edge.cli.bench import stats

    paths = [path for folder in args.folders for path in list_images(folder)][:args.frames or None]
    if not paths:
        p.error(f"no images found in {' '.join(map(str, args.folders))}")
    print(f"{len(paths)} frames, {args.rounds} rounds; load before: {os.getloadavg()}")
    sides = {"ours": _start(sys.executable, "ours", args.model, paths, args),
             "peer": _start(args.peer_python, "peer", args.peer_model, paths, args)}
    times: dict[str, list[float]] = {"ours": [], "peer": []}
    try:
        for r in range(args.rounds):
            order = ("ours", "peer") if r % 2 == 0 else ("peer", "ours")
            medians = {}
            for side in order:
                ms = _round(sides[side])
                times[side] += ms
                medians[side] = stats(ms)["median"]
            print(f"round {r + 1} ({' then '.join(order)}): ours {medians['ours']:.1f} ms, peer "
                  f"{medians['peer']:.1f} ms, ratio {medians['peer'] / medians['ours']:.2f}x")
    finally:
        for proc in sides.values():
            proc.stdin.close()
            proc.wait(timeout=60)
    ours, peer = stats(times["ours"]), stats(times["peer"])
    print(f"ours: median {ours['median']:.1f} ms, p95 {ours['p95']:.1f} ms; peer: median {peer['median']:.1f} ms, "
          f"p95 {peer['p95']:.1f} ms; ratio {peer['median'] / ours['median']:.2f}x "
          f"(p95 {peer['p95'] / ours['p95']:.2f}x)")
    print(f"load after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
