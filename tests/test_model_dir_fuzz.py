"""Fuzz: no byte pattern in a model dir may crash the process or score silently wrong.

Each case corrupts one file of a real exported model dir (OpenVINO, ONNX, ONNX +
HNSW) by bit flips, truncation, random overwrites, extension, targeted header
and link-list values, or (manifest.json) one JSON value replaced by an odd one
(wrong type, extreme, NaN, a path), recomputes the sha256 in the manifest (as a buggy tool or
an attacker would, with ``write_manifest``) and, in a subprocess, loads the dir
and checks two frames. Every case must end as one of:

* ``refused``: ``ModelDirError`` at load;
* ``scored``: every score finite (and equal to the untouched dir's where the
  corruption left every field the runtime uses unchanged);
* ``score_refused``: ``ScoreError`` at ``check()`` (a non-finite score, no verdict);

never a signal, a hang or another exception. Cases run in batches, one worker
subprocess each; a batch that dies or hangs is rerun one case per subprocess to
name the culprit. ``APC_FUZZ_CASES`` (default 200) and ``APC_FUZZ_SEED`` set the
run; ``pytest -s`` prints the counts; ``APC_FUZZ_DUMP=FILE`` writes every case and its outcome.

Example::

    APC_FUZZ_CASES=2000 .venv/bin/python -m pytest -q -s tests/test_model_dir_fuzz.py
"""
from __future__ import annotations

import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

CASES = int(os.environ.get("APC_FUZZ_CASES", "200"))
SEED = int(os.environ.get("APC_FUZZ_SEED", "0"))
BATCH = 40
BATCH_TIMEOUT_S = 900
CASE_TIMEOUT_S = 120
# (model dir, file, weight): the index and the bank are what hnswlib and numpy read raw, so they get the most
TARGETS = [("hnsw", "index.hnsw", 30), ("hnsw", "memory_bank.npy", 6), ("hnsw", "manifest.json", 6),
           ("hnsw", "backbone.onnx", 4), ("openvino", "backbone.xml", 10), ("openvino", "backbone.bin", 10),
           ("openvino", "memory_bank.npy", 8), ("openvino", "manifest.json", 6), ("onnx", "backbone.onnx", 10),
           ("onnx", "memory_bank.npy", 4), ("onnx", "manifest.json", 6)]
MUTATIONS = ("bitflip", "truncate", "overwrite", "extend", "header")
HNSW_HEADER = struct.Struct("<QQQQQQiIQQQdQ")


def make_cases(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    weights = np.array([w for *_, w in TARGETS], float)
    cases = []
    for i in range(n):
        kind, name, _ = TARGETS[rng.choice(len(TARGETS), p=weights / weights.sum())]
        mutations = MUTATIONS + {"index.hnsw": ("links", "links"), "manifest.json": ("field",) * 4}.get(name, ())
        cases.append({"id": i, "dir": kind, "file": name, "mutation": str(rng.choice(mutations)),
                      "seed": int(rng.integers(2 ** 31))})
    return cases


# -- the corruption ----------------------------------------------------------------------------------------------

def mutate(data: bytes, case: dict) -> bytes:
    rng = np.random.default_rng(case["seed"])
    b = bytearray(data)
    kind = case["mutation"]
    if kind == "bitflip":
        for _ in range(int(rng.integers(1, 9))):
            pos = int(rng.integers(len(b)))
            b[pos] ^= 1 << int(rng.integers(8))
    elif kind == "truncate":
        b = b[:int(rng.integers(0, len(b)))]
    elif kind == "overwrite":
        n = int(rng.integers(1, 65))
        pos = int(rng.integers(0, max(1, len(b) - n)))
        b[pos:pos + n] = rng.bytes(n)
    elif kind == "extend":
        b += rng.bytes(int(rng.integers(1, 4097)))
    elif kind == "header":
        b = _header_mutation(b, case["file"], rng)
    elif kind == "links":
        b = _link_mutation(b, rng)
    elif kind == "field":
        b = _field_mutation(b, rng)
    return bytes(b)


ODD_VALUES = [None, True, False, 0, -1, 1, 2 ** 63, 10 ** 30, 1e308, -1e308, float("nan"), float("inf"), 0.5, -0.0,
              "", "x", "../outside", "/abs", [], [0], [1, 2, 3], [-5, 60000], {}, {"a": 1}]


def _field_mutation(b: bytearray, rng) -> bytearray:
    """Replace one value anywhere in the manifest's JSON by an odd one (wrong type, extreme, NaN, path)."""
    root = json.loads(bytes(b))
    slots, todo = [], [root]
    while todo:
        node = todo.pop()
        for key in (node if isinstance(node, dict) else range(len(node))):
            slots.append((node, key))
            if isinstance(node[key], (dict, list)):
                todo.append(node[key])
    node, key = slots[int(rng.integers(len(slots)))]
    node[key] = ODD_VALUES[int(rng.integers(len(ODD_VALUES)))]
    return bytearray(json.dumps(root).encode())


def _extreme(rng, old: int, bits: int) -> int:
    choices = [0, 1, old - 1, old + 1, old * 2, 2 ** (bits - 1), 2 ** bits - 1, int(rng.integers(2 ** 31))]
    return int(choices[int(rng.integers(len(choices)))]) % (2 ** bits)


def _header_mutation(b: bytearray, name: str, rng) -> bytearray:
    if name == "index.hnsw" and len(b) >= HNSW_HEADER.size:
        fields = list(HNSW_HEADER.unpack_from(b, 0))
        i = int(rng.integers(len(fields)))
        if i == 6:                                   # max level, int32
            fields[i] = _extreme(rng, fields[i], 31)
        elif i == 7:                                 # entry point, uint32
            fields[i] = _extreme(rng, fields[i], 32)
        elif i == 11:                                # mult, double
            fields[i] = float(rng.choice([0.0, -1.0, float("nan"), float("inf"), fields[i] * 2]))
        else:
            fields[i] = _extreme(rng, fields[i], 64)
        HNSW_HEADER.pack_into(b, 0, *fields)
        return b
    span = {"memory_bank.npy": 128, "backbone.xml": 2048, "backbone.onnx": 256}.get(name, 256)
    n = int(rng.integers(1, 17))
    pos = int(rng.integers(0, max(1, min(span, len(b)) - n)))
    b[pos:pos + n] = rng.bytes(n)
    return b


def _link_mutation(b: bytearray, rng) -> bytearray:
    """Set one level-0 list count or neighbour id of an hnswlib file to a value near or beyond the count."""
    if len(b) < HNSW_HEADER.size:
        return b
    h = HNSW_HEADER.unpack_from(b, 0)
    count, size, max_m0 = h[2], h[3], h[9]
    if not 0 < count < 10 ** 7 or HNSW_HEADER.size + count * size > len(b):
        return b
    element = int(rng.integers(count))
    base = HNSW_HEADER.size + element * size
    if rng.random() < 0.3:
        struct.pack_into("<H", b, base, int(rng.choice([max_m0 + 1, 0xFFFF, int(rng.integers(0xFFFF))])))
    else:
        slot = int(rng.integers(max(1, max_m0)))
        value = int(rng.choice([count, count + 1, 2 ** 31, 2 ** 32 - 1, int(rng.integers(2 ** 32))]))
        struct.pack_into("<I", b, base + 4 + 4 * slot, value)
    return b


def build_case_dir(src: Path, dst: Path, case: dict) -> None:
    """``dst``: hard links to ``src``'s files, the target file replaced by its corruption, hashes recomputed."""
    from apc_edge.manifest import write_manifest

    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.name != case["file"]:
            os.link(p, dst / p.name)
    (dst / case["file"]).write_bytes(mutate((src / case["file"]).read_bytes(), case))
    if case["file"] != "manifest.json":
        raw = json.loads((src / "manifest.json").read_text())
        (dst / "manifest.json").unlink()
        write_manifest(dst, raw)


# -- the worker (a subprocess: a crash here must not take pytest with it) ------------------------------------------

def effective_fields(m) -> tuple:
    return (m.graph, m.preprocessor, m.patch_grid, m.embedding_dim, m.memory_bank, m.index, m.scoring,
            m.threshold)


def run_case(case: dict, dirs: dict, frames: list, work: Path, references: dict) -> dict:
    from apc_edge import Inspector, ModelDirError, ScoreError

    if case["dir"] not in references:
        ref = Inspector(dirs[case["dir"]])
        references[case["dir"]] = (effective_fields(ref.manifest), [ref.check(f).raw_score for f in frames])
    ref_fields, ref_scores = references[case["dir"]]
    case_dir = work / f"case{case['id']:05d}"
    build_case_dir(Path(dirs[case["dir"]]), case_dir, case)
    out = {"id": case["id"]}
    try:
        inspector = Inspector(case_dir)
    except ModelDirError as exc:
        out.update(outcome="refused", message=str(exc)[:400])
    except Exception as exc:
        out.update(outcome="error", message=f"at load: {type(exc).__name__}: {exc}"[:600])
    else:
        try:
            scores = [inspector.check(f).raw_score for f in frames]
            out.update(outcome="scored", scores=scores, reference=ref_scores,
                       same_fields=effective_fields(inspector.manifest) == ref_fields)
        except ScoreError as exc:
            out.update(outcome="score_refused", message=str(exc)[:400])
        except Exception as exc:
            out.update(outcome="error", message=f"at check: {type(exc).__name__}: {exc}"[:600])
    shutil.rmtree(case_dir, ignore_errors=True)
    return out


def worker(job_file: str) -> None:
    from apc_edge.preprocess import load_image

    job = json.loads(Path(job_file).read_text())
    frames = [load_image(p) for p in job["frames"]]
    references: dict = {}
    for case in job["cases"]:
        print(json.dumps(run_case(case, job["dirs"], frames, Path(job["work"]), references)), flush=True)


# -- the test -----------------------------------------------------------------------------------------------------

def run_batch(cases: list, dirs: dict, frames: list, tmp: Path, tag: str, timeout: float) -> tuple[list, str | None]:
    """Run ``cases`` in one worker; (results, None) or (results so far, why the worker ended early)."""
    job = tmp / f"job_{tag}.json"
    job.write_text(json.dumps({"cases": cases, "dirs": dirs, "frames": frames, "work": str(tmp / f"w_{tag}")}))
    try:
        proc = subprocess.run([sys.executable, __file__, "--worker", str(job)], capture_output=True, text=True,
                              timeout=timeout)
        stdout, problem = proc.stdout, None
        if proc.returncode < 0:
            problem = f"killed by signal {-proc.returncode}"
        elif proc.returncode != 0:
            problem = f"exit {proc.returncode}: {proc.stderr[-600:]}"
    except subprocess.TimeoutExpired as exc:
        stdout, problem = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or ""), \
            f"hung for more than {timeout:.0f} s"
    results = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return results, problem


def describe(case: dict) -> str:
    return f"case {case['id']}: {case['mutation']} of {case['dir']}/{case['file']} (seed {case['seed']})"


def test_model_dir_fuzz(model_dir_openvino, model_dir_onnx, model_dir_hnsw, synthetic_category, tmp_path,
                        record_property):
    dirs = {"openvino": str(model_dir_openvino), "onnx": str(model_dir_onnx), "hnsw": str(model_dir_hnsw)}
    test = synthetic_category / "test"
    frames = [str(sorted((test / "good").glob("*.png"))[0]), str(sorted((test / "spot").glob("*.png"))[0])]
    cases = make_cases(CASES, SEED)
    by_id = {c["id"]: c for c in cases}
    results, failures = {}, []
    t0 = time.perf_counter()
    for start in range(0, len(cases), BATCH):
        batch = cases[start:start + BATCH]
        got, problem = run_batch(batch, dirs, frames, tmp_path, f"b{start}", BATCH_TIMEOUT_S)
        if problem is None and len(got) == len(batch):
            results.update((r["id"], r) for r in got)
            continue
        for case in batch:                   # isolate: one case per subprocess names the one that crashed
            one, why = run_batch([case], dirs, frames, tmp_path, f"c{case['id']}", CASE_TIMEOUT_S)
            if why is not None or not one:
                results[case["id"]] = {"id": case["id"], "outcome": "crashed", "message": why}
            else:
                results[case["id"]] = one[0]
    seconds = time.perf_counter() - t0
    counts = Counter(r["outcome"] for r in results.values())
    deviation = []
    for r in results.values():
        case = by_id[r["id"]]
        if r["outcome"] in ("crashed", "error"):
            failures.append(f"{describe(case)} -> {r['outcome']}: {r['message']}")
        elif r["outcome"] == "scored":
            scores, ref = np.array(r["scores"]), np.array(r["reference"])
            if not np.isfinite(scores).all():
                failures.append(f"{describe(case)} -> scored non-finite {scores.tolist()} without ScoreError")
            rel = float(np.max(np.abs(scores - ref) / np.abs(ref))) if np.isfinite(scores).all() else math.inf
            deviation.append((rel, case["file"]))
            if r["same_fields"] and case["file"] in ("manifest.json", "index.hnsw") and rel > 1e-4:
                failures.append(f"{describe(case)} -> scores {scores.tolist()} differ from the untouched dir's "
                                f"{ref.tolist()} although every field the runtime uses is unchanged")
    per_file = Counter((by_id[i]["dir"] + "/" + by_id[i]["file"], r["outcome"]) for i, r in results.items())
    summary = {"cases": len(cases), "seed": SEED, "seconds": round(seconds, 1), **{
        k: counts.get(k, 0) for k in ("refused", "scored", "score_refused", "crashed", "error")}}
    print(f"\nmodel-dir fuzz: {summary}")
    for (target, outcome), n in sorted(per_file.items()):
        print(f"  {target:<28} {outcome:<14} {n}")
    if deviation:
        print(f"  scored cases: largest relative score change {max(deviation)[0]:.3g} "
              f"({max(deviation)[1]}); unchanged scores in {sum(d < 1e-6 for d, _ in deviation)} of {len(deviation)}")
    record_property("model_dir_fuzz", json.dumps(summary))
    if os.environ.get("APC_FUZZ_DUMP"):             # every case and its outcome, one JSON line each
        Path(os.environ["APC_FUZZ_DUMP"]).write_text(
            "".join(json.dumps({**by_id[i], **r}) + "\n" for i, r in sorted(results.items())))
    assert len(results) == len(cases)
    assert not failures, "\n".join(failures[:20])
    assert counts["refused"] > 0 and counts["scored"] > 0      # the corruptions reach both ends


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker(sys.argv[2])
