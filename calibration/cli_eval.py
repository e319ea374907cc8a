"""``apc-eval MODEL_DIR DATA_DIR --json FILE [--report DIR]``: evaluate through the runtime.

Example::

    apc-eval models/bottle ../shared/data/bottle --json bottle.json --report reports/bottle
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from apc_edge.manifest import ModelDirError
from apc_edge.progress import Progress

from .compare import write_scores
from .dataset import DatasetError
from .evaluate import evaluate
from .report import write_report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="apc-eval", description="Evaluate a model dir on an MVTec-layout folder.")
    p.add_argument("model_dir")
    p.add_argument("data_dir")
    p.add_argument("--json", dest="json_path", help="write the metrics here")
    p.add_argument("--report", help="write roc.png, overlays.png and metrics.json into this folder")
    p.add_argument("--scores-csv", help="write per-image scores here: image (relative to DATA_DIR), label, raw_score, "
                                        "verdict at the model's threshold")
    p.add_argument("--device", default="CPU")
    p.add_argument("--exclude", nargs="*", default=[], help="test images to skip, as <type>/<file name>")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report, scored, inspector = evaluate(args.model_dir, args.data_dir, args.device, args.exclude,
                                             progress=lambda n: Progress(n, "scoring"))
    except (ModelDirError, DatasetError) as exc:
        print(f"\napc-eval: {exc}", file=sys.stderr)
        return 2
    print(file=sys.stderr)
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.scores_csv:
        root = Path(args.data_dir)
        write_scores(args.scores_csv, [{"image": s.sample.path.relative_to(root).as_posix(),
                                        "label": int(s.sample.is_anomalous), "raw_score": f"{s.raw_score:.6f}",
                                        "verdict": "NG" if s.raw_score >= inspector.threshold else "OK"}
                                       for s in scored])
    if args.report:
        write_report(args.report, scored, inspector, report)
    print(f"apc-eval: {report['category']}: n_test {report['n_test']}  image AUROC {report['image_auroc']:.4f}  "
          f"image F1 {report['image_f1']:.4f}  pixel AUROC {report['pixel_auroc']:.4f}  "
          f"pixel F1 {report['pixel_f1']:.4f}  PRO {report['pro']:.4f}  latency {report['latency_ms']:.1f} ms/image")
    per = "  ".join(f"{k} {v:.4f}" for k, v in report["per_defect_type_image_auroc"].items())
    print(f"apc-eval: per defect type image AUROC: {per}")
    at = report["at_threshold"]
    print(f"apc-eval: at threshold {at['threshold']:.4f}: false alarms {at['false_alarm_rate']}, recall {at['recall']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
