"""``apc-calibrate MODEL_DIR [--max-false-alarm A | --target-recall R | --f1]``: set a defensible threshold.

Scores the run's held-out good images (``DATA/train/good``, never in the memory
bank) and any ``--good``/``--anomalies`` images through the runtime, picks the
threshold and rewrites the manifest's ``threshold`` block (only ``manifest.json``
changes; the file digests verified at load are kept, never recomputed). The new
block passes the runtime's load-time check before it is written. A model dir
whose threshold is missing or unsound loads here, so that it can get one.
``--dry-run`` only reports.

Examples::

    apc-calibrate models/bottle --max-false-alarm 0.01
    apc-calibrate models/bottle --good more_good_parts/ --max-false-alarm 0.005
    apc-calibrate models/bottle --anomalies known_defects/ --target-recall 0.95
    apc-calibrate models/bottle --anomalies known_defects/ --f1 --json calib.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from apc_edge import Inspector
from apc_edge.cli import args as A
from apc_edge.manifest import ModelDirError, parse_threshold, write_manifest
from apc_edge.preprocess import load_image
from apc_edge.progress import Progress

from .dataset import DatasetError
from .imagesets import collect_images, training_images
from .thresholds import anomaly_threshold, good_only_threshold, stamp


def build_parser() -> argparse.ArgumentParser:
    p = A.ArgumentParser(prog="apc-calibrate", description="Calibrate a model dir's threshold.")
    A.add_quiet(p)
    p.add_argument("model_dir", type=A.existing_dir)
    p.add_argument("--data", type=A.existing_dir, help="training data dir (default: the one recorded in the manifest)")
    p.add_argument("--good", nargs="+", type=A.existing_path, default=[], metavar="PATH",
                   help="more good images or folders, never used for the memory bank (e.g. recent production)")
    p.add_argument("--no-holdout", action="store_true", help="do not use the run's held-out good images")
    p.add_argument("--anomalies", nargs="+", type=A.existing_path, default=[], metavar="PATH",
                   help="anomalous images or folders")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--max-false-alarm", type=A.float_range(0.0, 1.0, low_open=True, high_open=True),
                      help="good-only: false-alarm rate target (default 0.01)")
    mode.add_argument("--target-recall", type=A.float_range(0.0, 1.0, low_open=True),
                      help="with --anomalies: lowest-alarm threshold at this recall")
    mode.add_argument("--f1", action="store_true", help="with --anomalies: F1-optimal threshold")
    p.add_argument("--device", type=A.device, default="CPU")
    p.add_argument("--json", dest="json_path", type=A.output_file,
                   help="write the threshold block and the scores here")
    p.add_argument("--dry-run", action="store_true", help="report, do not rewrite the manifest")
    return p


def combination_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the combination of flags, or None."""
    if (args.target_recall is not None or args.f1) and not args.anomalies:
        return "--target-recall and --f1 need --anomalies"
    if args.no_holdout and not args.good:
        return "--no-holdout leaves no good images to calibrate on: give --good PATH"
    return None


def score_paths(inspector: Inspector, paths: list[Path], label: str) -> list[float]:
    out = []
    with Progress(len(paths), label) as bar:
        for p in paths:
            out.append(inspector.raw_score(load_image(p)))
            bar.update(1)
    return out


def calibrate(args) -> dict:
    # a model dir whose threshold is missing or unsound still loads here: calibrating is how it gets one
    inspector = Inspector(args.model_dir, device=args.device, require_threshold=False)
    m = inspector.manifest
    training = m.get("training", {})
    training = training if isinstance(training, dict) else {}
    goods = [] if args.no_holdout else training_images(training, args.data)[1]
    n_holdout = len(goods)
    goods += collect_images(args.good)
    anomalies = collect_images(args.anomalies)
    if not goods:
        raise DatasetError("no good images to calibrate on: the run holds out none (every training good is in the "
                           "bank; its threshold came from leave-one-out scores): give --good DIR of production goods")
    if (args.target_recall is not None or args.f1) and not anomalies:
        raise ValueError("--target-recall and --f1 need --anomalies")
    good_scores = score_paths(inspector, goods, "good")
    bad_scores = score_paths(inspector, anomalies, "anomalies") if anomalies else []
    if args.target_recall is not None or args.f1:
        block = anomaly_threshold(good_scores, bad_scores, args.target_recall)
    else:
        block = good_only_threshold(good_scores, 0.01 if args.max_false_alarm is None else args.max_false_alarm)
        if bad_scores:
            block["achieved"]["recall"] = float(sum(s >= block["value"] for s in bad_scores) / len(bad_scores))
    block = stamp(block, images={"held_out_good": n_holdout, "extra_good": len(goods) - n_holdout,
                                 "anomalies": len(anomalies)},
                  index=m.index.type, precision=m.graph.precision)
    # the same check the runtime makes at load, before anything is written
    parse_threshold(block, f"{m.path} (new threshold block)", inspector.threshold_limit)
    return {"block": block, "previous": m.get("threshold"), "previous_problem": m.threshold_problem,
            "manifest": m.raw, "good_scores": good_scores, "anomaly_scores": bad_scores}


def main(argv: list[str] | None = None) -> int:
    args = A.parse(build_parser(), argv, check=combination_problem)
    if isinstance(args, int):
        return args
    try:
        out = calibrate(args)
    except (ModelDirError, DatasetError, ValueError) as exc:
        print(f"apc-calibrate: {A.one_line(exc)}", file=sys.stderr)
        return 2
    block, prev = out["block"], out["previous"]
    if not args.dry_run:
        manifest = dict(out["manifest"])
        manifest["threshold"] = block
        write_manifest(args.model_dir, manifest, rehash=False)      # the digests verified at load
    A.write_json(args.json_path, {"threshold": block, "good_scores": out["good_scores"],
                                  "anomaly_scores": out["anomaly_scores"]})
    a = block["achieved"]
    target = (f"target false alarms {block['target_false_alarm']}" if "target_false_alarm" in block else
              f"target recall {block['target_recall']}" if "target_recall" in block else "best F1")
    was = (f"was {prev['value']:.4f} ({prev.get('method', '?')})" if out["previous_problem"] is None else
           f"was unusable: {out['previous_problem']}")
    print(f"apc-calibrate: threshold {block['value']:.4f} ({block['method']}, {target}); {was}")
    line = f"apc-calibrate: on {a['n_good']} good images false alarms {a['false_alarm_rate']:.4f}"
    if "recall" in a:
        line += f"; on {a.get('n_anomalous', len(out['anomaly_scores']))} anomalies recall {a['recall']:.4f}"
    print(line)
    if "note" in block:
        print(f"apc-calibrate: note: {block['note']}")
    print(f"apc-calibrate: {'dry run, manifest unchanged' if args.dry_run else 'manifest threshold rewritten'} "
          f"({args.model_dir}/manifest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
