"""apc-bench: how fast is ``Inspector.check`` on this machine? (torch-free; run it on the camera PC)

Examples::

    apc-bench models/bottle                              # 100 synthetic frames of the model's input size
    apc-bench models/bottle --frames 300 --folder frames/ --json bench.json
    apc-bench models/bottle --index exact                # ignore the model dir's HNSW index
    apc-bench models/bottle --index-crossover 1000,4000,16000   # where HNSW starts to beat exact search
    apc-bench models/bottle --compare models/bottle_fp32  # two model dirs in alternating rounds: B / A
    apc-bench models/bottle --compare models/bottle --compare-threads-plan library   # what the thread plan buys

Prints the median and p95 latency of each stage (preprocess, backbone, search,
scoring, map) and end to end; throughput with several frames in flight (threads
sharing one Inspector, and the backbone alone through an OpenVINO
AsyncInferQueue or ONNX Runtime threads); peak RSS; the CPU, its flags and the
load average before and after, since numbers taken on a busy machine mislead.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from ..inspector import Inspector
from ..scoring import embedding_patches
from ..manifest import ModelDirError
from ..preprocess import load_image
from ..sysinfo import peak_rss_mb, resident_mb, system_info
from ..threads import ThreadPlan, apply_thread_plan, library_default_threads, plan_threads
from . import args as A
from .index_crossover import index_crossover

PROG = "apc-bench"
STAGES = ("preprocess", "backbone", "search", "scoring", "map", "total")


def synthetic_frames(hw: tuple[int, int], n: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random BGR textures of size ``hw`` (not white noise, which no camera sees)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    frames = []
    for _ in range(n):
        base = rng.normal(128, 40, (h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
        img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 4, (h, w, 3))
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


def folder_frames(folder: Path, n: int) -> list[np.ndarray]:
    from ..preprocess import validate_frame

    exts = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in exts) if Path(folder).is_dir() else []
    if not paths:
        raise ValueError(f"--folder {folder} does not exist or holds no images")
    return [validate_frame(load_image(p)) for p in paths[:n]]


def stats(values) -> dict:
    v = np.asarray(values, np.float64)
    return {"median": round(float(np.median(v)), 3), "p95": round(float(np.quantile(v, 0.95)), 3),
            "mean": round(float(v.mean()), 3), "min": round(float(v.min()), 3)}


def sequential(inspector: Inspector, frames, n: int, with_map: bool, start: int = 0) -> dict:
    """Per-stage lists of ``n`` timed checks (frames from ``start`` on)."""
    per_stage = {s: [] for s in STAGES}
    for i in range(start, start + n):
        r = inspector.check(frames[i % len(frames)], with_map=with_map)
        for s in STAGES:
            per_stage[s].append(r.timings.get(s, 0.0))
    return per_stage


def alternating_rounds(sides: list[tuple[Inspector, ThreadPlan | None]], frames, n: int, rounds: int,
                       with_map: bool) -> list[dict]:
    """Time ``n`` checks per side in ``rounds`` rounds, the sides' order flipped every round (A B, B A, ...),
    each side's process-wide thread pools applied before its turn. Per side: stage stats over every
    frame and the median end to end of each round (their spread shows how steady the machine was)."""
    per_round = [max(1, n // rounds)] * rounds
    per_round[-1] += max(0, n - sum(per_round))
    timings = [{s: [] for s in STAGES} for _ in sides]
    round_medians: list[list[float]] = [[] for _ in sides]
    start = 0
    for r, count in enumerate(per_round):
        order = range(len(sides)) if r % 2 == 0 else reversed(range(len(sides)))
        for k in order:
            inspector, plan = sides[k]
            if plan is not None:
                apply_thread_plan(plan)
            got = sequential(inspector, frames, count, with_map, start)
            for s in STAGES:
                timings[k][s] += got[s]
            round_medians[k].append(round(float(np.median(got["total"])), 3))
        start += count
    return [{"latency_ms": {s: stats(v) for s, v in t.items()}, "round_medians_ms": m,
             "round_spread": round(max(m) / max(min(m), 1e-9), 3)} for t, m in zip(timings, round_medians)]


def run_threaded(task, n: int, threads: int) -> float:
    """Run ``task(i)`` for i in 0..n-1 on ``threads`` threads; wall seconds. Re-raises the first error."""
    counter = iter(range(n))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                task(i)
            except BaseException as exc:  # reported after the run
                errors.append(exc)
                return

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return wall


def threaded_throughput(inspector: Inspector, frames, n: int, threads: int, with_map: bool) -> dict:
    """Frames per second with ``threads`` threads calling ``check`` on one shared Inspector."""
    wall = run_threaded(lambda i: inspector.check(frames[i % len(frames)], with_map=with_map), n, threads)
    return {"threads": threads, "frames": n, "fps": round(n / wall, 2)}


def backbone_throughput(inspector: Inspector, frames, n: int, threads: int) -> dict:
    """Backbone-only frames per second with several requests in flight."""
    xs = [inspector.preprocessor(f) for f in frames[:8]]
    backend = inspector.backend
    if backend.name == "openvino":
        import openvino as ov

        config = {**backend.compile_config, "PERFORMANCE_HINT": "THROUGHPUT"}
        compiled = backend.core.compile_model(backend.model, backend.device, config)   # the verified graph
        queue = ov.AsyncInferQueue(compiled, 0)
        for i in range(len(queue)):                    # warm up every request
            queue.start_async({0: xs[i % len(xs)]})
        queue.wait_all()
        t0 = time.perf_counter()
        for i in range(n):
            queue.start_async({0: xs[i % len(xs)]})
        queue.wait_all()
        wall = time.perf_counter() - t0
        streams = compiled.get_property("NUM_STREAMS")
        return {"method": "OpenVINO AsyncInferQueue, PERFORMANCE_HINT=THROUGHPUT", "in_flight": len(queue),
                "streams": int(streams), "frames": n, "fps": round(n / wall, 2)}
    wall = run_threaded(lambda i: backend.run(xs[i % len(xs)]), n, threads)
    return {"method": f"{backend.name}, {threads} threads on one session", "in_flight": threads, "frames": n,
            "fps": round(n / wall, 2)}


def _thread_plan(policy: str) -> ThreadPlan:
    return plan_threads() if policy == "auto" else library_default_threads()


def _model_facts(inspector: Inspector) -> dict:
    m = inspector.manifest
    return {"backbone": m.get("backbone", {}).get("name"), "graph_format": m.graph.format,
            "precision": m.graph.precision, "index": inspector.index.name,
            "bank": [int(inspector.bank.shape[0]), int(inspector.bank.shape[1])],
            "input_hw": list(inspector.preprocessor.input_hw), "patch_grid": list(inspector.patch_grid)}


def run_bench(args) -> dict:
    sys_before = system_info()
    index = "exact" if args.index == "exact" else None
    plan = _thread_plan(args.threads_plan)
    t0 = time.perf_counter()
    inspector = Inspector(args.model_dir, device=args.device, index=index, threads=plan)
    load_s = time.perf_counter() - t0
    after_load = resident_mb()
    sides = [(inspector, inspector.thread_plan)]
    if args.compare:
        other_plan = _thread_plan(args.compare_threads_plan)
        other = Inspector(args.compare, device=args.device, index=index, threads=other_plan)
        if other.preprocessor.input_hw != inspector.preprocessor.input_hw and not args.folder:
            raise ValueError(f"--compare {args.compare} has input {other.preprocessor.input_hw}, not "
                             f"{inspector.preprocessor.input_hw}: give both the same frames with --folder")
        sides.append((other, other.thread_plan))
    frames = folder_frames(args.folder, args.frames) if args.folder else \
        synthetic_frames(inspector.preprocessor.input_hw, min(args.frames, 16))
    with_map = not args.no_map
    for inspector_k, plan_k in sides:
        apply_thread_plan(plan_k)
        for i in range(args.warmup):
            inspector_k.check(frames[i % len(frames)], with_map=with_map)
    measured = alternating_rounds(sides, frames, args.frames, args.rounds, with_map)
    latency = measured[0]["latency_ms"]
    threads = args.threads or max(2, os.cpu_count() or 2)
    result = {
        "model_dir": str(args.model_dir),
        "model": _model_facts(inspector),
        "backend": inspector.backend.describe(),
        "threads": inspector.threads,
        "frames": {"source": str(args.folder) if args.folder else "synthetic", "distinct": len(frames),
                   "frame_shape": list(frames[0].shape), "frame_shapes": len({f.shape for f in frames}),
                   "measured": args.frames, "warmup": args.warmup,
                   "with_map": with_map, "rounds": args.rounds},
        "load_seconds": round(load_s, 3),
        "latency_ms": latency,
        "round_medians_ms": measured[0]["round_medians_ms"],
        "round_spread": measured[0]["round_spread"],
        "check_over_backbone": round(latency["total"]["median"] / max(latency["backbone"]["median"], 1e-9), 3),
        # the floor a check cannot go below: its graph plus the frame's resize and normalization
        "check_over_floor": round(latency["total"]["median"]
                                  / max(latency["backbone"]["median"] + latency["preprocess"]["median"], 1e-9), 3),
    }
    if args.compare:
        other_latency = measured[1]["latency_ms"]
        result["compare"] = {
            "model_dir": str(args.compare), "model": _model_facts(sides[1][0]), "threads": sides[1][0].threads,
            "latency_ms": other_latency, "round_medians_ms": measured[1]["round_medians_ms"],
            "round_spread": measured[1]["round_spread"],
            "median_ratio": round(other_latency["total"]["median"] / max(latency["total"]["median"], 1e-9), 3),
            "p95_ratio": round(other_latency["total"]["p95"] / max(latency["total"]["p95"], 1e-9), 3),
        }
        apply_thread_plan(inspector.thread_plan)
    if not args.no_throughput:
        result["throughput"] = {
            "end_to_end": threaded_throughput(inspector, frames, args.frames, threads, with_map),
            "backbone": backbone_throughput(inspector, frames, args.frames, threads),
        }
    if args.index_crossover:
        patch_sets = [embedding_patches(inspector.embed(f)) for f in frames[:8]]
        result["index_crossover"] = index_crossover(inspector.bank, patch_sets, args.index_crossover)
    peak = peak_rss_mb()
    result["peak_rss_mb"] = round(peak, 1) if peak is not None else None
    # the bench holds its frames decoded (a line holds one or two): they are part of its RSS, not the runtime's
    result["memory_mb"] = {"after_load": after_load, "end": resident_mb(),
                           "frames_held": round(sum(f.nbytes for f in frames) / 2**20, 1)}
    sys_after = system_info()
    system = dict(sys_before)
    system["load_avg_before"] = system.pop("load_avg", None)
    system["load_avg_after"] = sys_after.get("load_avg")
    result["system"] = system
    return result


def print_report(r: dict, out=None) -> None:
    out = out or sys.stdout
    m, s = r["model"], r["system"]
    print(f"{PROG}: {r['model_dir']}: {m['backbone']} {m['graph_format']} {m['precision']}, index {m['index']}, "
          f"bank {m['bank'][0]} x {m['bank'][1]}, input {m['input_hw'][0]}x{m['input_hw'][1]}", file=out)
    print(f"{PROG}: {s['cpu']} ({s['logical_cores']} logical cores; {' '.join(s['cpu_flags'])}); backend "
          f"{r['backend']}; load average before {s['load_avg_before']} after {s['load_avg_after']}", file=out)
    f = r["frames"]
    print(f"{PROG}: threads {_threads_line(r['threads'])}", file=out)
    print(f"{PROG}: {f['measured']} frames ({f['source']}, {f['distinct']} distinct, shape {f['frame_shape']}), "
          f"{f['warmup']} warm-up, anomaly map {'on' if f['with_map'] else 'off'}", file=out)
    c = r.get("compare")
    if c:
        print(f"{PROG}: B = {c['model_dir']}: {c['model']['backbone']} {c['model']['precision']}, index "
              f"{c['model']['index']}, threads {_threads_line(c['threads'])}; timed in alternating rounds", file=out)
        print(f"{PROG}: {'stage':<11}{'A median':>10}{'A p95':>10}{'B median':>10}{'B p95':>10}", file=out)
        for stage, v in r["latency_ms"].items():
            w = c["latency_ms"][stage]
            print(f"{PROG}: {stage:<11}{v['median']:>10.2f}{v['p95']:>10.2f}{w['median']:>10.2f}{w['p95']:>10.2f}",
                  file=out)
    else:
        print(f"{PROG}: {'stage':<11}{'median ms':>10}{'p95 ms':>10}", file=out)
        for stage, v in r["latency_ms"].items():
            print(f"{PROG}: {stage:<11}{v['median']:>10.2f}{v['p95']:>10.2f}", file=out)
    if f.get("frame_shapes", 1) > 1:
        print(f"{PROG}: the frames come in {f['frame_shapes']} sizes, so the p95 holds the larger frames' extra work "
              f"(pad mode scores the part's cells only), not only jitter: time one repeated frame (a --folder "
              f"holding one image) for the jitter alone", file=out)
    print(f"{PROG}: end to end / backbone = {r['check_over_backbone']:.2f}, / (backbone + preprocess) = "
          f"{r['check_over_floor']:.2f}; p95 / median = "
          f"{r['latency_ms']['total']['p95'] / max(r['latency_ms']['total']['median'], 1e-9):.2f}; round medians "
          f"{r['round_medians_ms']} ms (max / min {r['round_spread']:.2f})", file=out)
    if c:
        print(f"{PROG}: B / A end to end: median {c['median_ratio']:.2f}x, p95 {c['p95_ratio']:.2f}x; B round medians "
              f"{c['round_medians_ms']} ms (max / min {c['round_spread']:.2f})", file=out)
    if "throughput" in r:
        e, b = r["throughput"]["end_to_end"], r["throughput"]["backbone"]
        print(f"{PROG}: throughput end to end {e['fps']:.1f} frames/s ({e['threads']} threads, one Inspector); "
              f"backbone alone {b['fps']:.1f} frames/s ({b['method']}, {b['in_flight']} in flight)", file=out)
    if r.get("index_crossover"):
        print(f"{PROG}: search per frame as the bank grows (random subsets of this bank, this model's patches):",
              file=out)
        print(f"{PROG}: {'rows':>8}{'exact ms':>10}{'HNSW+refine ms':>16}", file=out)
        for row in r["index_crossover"]:
            print(f"{PROG}: {row['rows']:>8}{row['exact_ms']:>10.2f}{row['hnsw_ms']:>16.2f}"
                  f"  (M={row['M']}, ef={row['ef']})", file=out)
    peak = "not reported here" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f} MB"
    print(f"{PROG}: peak RSS {peak}; model load {r['load_seconds']:.2f} s", file=out)
    mem = r.get("memory_mb") or {}
    if mem.get("end"):
        load, end = mem["after_load"], mem["end"]
        print(f"{PROG}: resident after load {load['rss']:.0f} MB, at the end {end['rss']:.0f} MB (of it "
              f"{end['file']:.0f} MB mapped library files, {end['anon']:.0f} MB heap and buffers, "
              f"{mem['frames_held']:.0f} MB of them the bench's decoded frames)", file=out)


def _threads_line(t: dict) -> str:
    if t.get("plan", True) is None:
        return "left to each library"
    effect = t.get("in_effect", {})
    graph = t.get("backend") or "library default"
    refinement = f" (its exact refinement {t['refinement']})" if "refinement" in t else ""
    return (f"{t.get('policy', '')}: graph {graph}, HNSW {t.get('hnsw')}{refinement}, BLAS {effect.get('blas')}, "
            f"OpenCV {effect.get('opencv')} ({t.get('cores')} cores)")


def build_parser() -> argparse.ArgumentParser:
    p = A.ArgumentParser(prog=PROG, description="Benchmark Inspector.check on this machine.")
    p.add_argument("model_dir", type=A.existing_dir)
    p.add_argument("--frames", type=A.int_range(1, 1_000_000), default=100,
                   help="frames to time (default %(default)s)")
    p.add_argument("--warmup", type=A.int_range(0, 10_000), default=5)
    p.add_argument("--folder", type=Path, help="time these images instead of synthetic frames")
    p.add_argument("--device", type=A.device, default="CPU")
    p.add_argument("--index", choices=("manifest", "exact"), default="manifest",
                   help="search the model dir's index (default) or force exact search")
    p.add_argument("--threads", type=A.int_range(0, 1024), default=0,
                   help="threads for the throughput runs (default: cores, >= 2)")
    p.add_argument("--rounds", type=A.int_range(1, 1000), default=4,
                   help="split the timed frames into this many rounds, alternating with --compare (default %(default)s)")
    p.add_argument("--compare", type=A.existing_dir, metavar="OTHER_MODEL_DIR",
                   help="also time this model dir in alternating rounds and print B / A")
    p.add_argument("--threads-plan", choices=("auto", "library"), default="auto",
                   help="auto (default): the runtime sizes every thread pool; library: each library's own default")
    p.add_argument("--compare-threads-plan", choices=("auto", "library"), default="auto",
                   help="the same for --compare (e.g. --compare SAME_DIR --compare-threads-plan library)")
    p.add_argument("--no-map", action="store_true", help="time the verdict-only path (no anomaly map)")
    p.add_argument("--no-throughput", action="store_true", help="skip the throughput runs")
    p.add_argument("--index-crossover", type=A.int_list(1), metavar="N,N,...",
                   help="also time exact against HNSW search on subsets of the bank of these sizes")
    p.add_argument("--json", dest="json_path", type=A.output_file, help="write all numbers here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = A.parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        result = run_bench(args)
    except (ModelDirError, ValueError) as exc:
        print(f"{PROG}: {A.one_line(exc)}", file=sys.stderr)
        return 2
    print_report(result)
    A.write_json(args.json_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
