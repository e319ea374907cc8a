"""``apc-eval MODEL_DIR DATA_DIR --json FILE [--report DIR]``: evaluate through the runtime.

Every test image is checked to be a readable image before scoring starts: a file
that is not (a text file named ``.png``) is refused by name, exit 2, since an
evaluation that skips images silently is not the evaluation asked for.

Example::

    apc-eval models/bottle ../shared/data/bottle --json bottle.json --report reports/bottle
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import cv2

from apc_edge.cli import args as A
from apc_edge.manifest import ModelDirError
from apc_edge.progress import Progress

from .compare import write_scores
from .dataset import DatasetError, MVTecCategory
from .evaluate import evaluate
from .report import write_report

PROG = "apc-eval"


def sample_key(text: str) -> str:
    """A test image named as ``<type>/<file name>`` (``--exclude``)."""
    if not re.fullmatch(r"[^/\\]+/[^/\\]+", text):
        raise A.ArgumentValueError(f"must be <type>/<file name> (e.g. crack/003.png), got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = A.ArgumentParser(prog=PROG, description="Evaluate a model dir on an MVTec-layout folder.")
    A.add_quiet(p)
    p.add_argument("model_dir", type=A.existing_dir)
    p.add_argument("data_dir", type=A.existing_dir)
    p.add_argument("--json", dest="json_path", type=A.output_file, help="write the metrics here")
    p.add_argument("--report", type=A.output_dir,
                   help="write roc.png, overlays.png and metrics.json into this folder")
    p.add_argument("--scores-csv", type=A.output_file,
                   help="write per-image scores here: image (relative to DATA_DIR), label, raw_score, "
                        "verdict at the model's threshold")
    p.add_argument("--device", type=A.device, default="CPU")
    p.add_argument("--exclude", nargs="*", type=sample_key, default=[],
                   help="test images to skip, as <type>/<file name>")
    p.add_argument("--pixel-size", type=A.int_range(8, 4096), nargs=2, default=None, metavar=("H", "W"),
                   help="also compute pixel AUROC, pixel F1 and PRO with every map and mask resized to HxW: the "
                        "protocol of tools that evaluate at a fixed size (256 256 for anomalib's defaults)")
    return p


def check_test_set(data_dir: Path, exclude: list[str]) -> None:
    """Refuse (``DatasetError``) an ``--exclude`` naming no test image, and a test file that is not a readable
    image (its header is read, not the whole image), naming the first one."""
    samples = MVTecCategory(data_dir).test_samples()
    keys = {s.key for s in samples}
    unknown = [k for k in exclude if k not in keys]
    if unknown:
        raise DatasetError(f"--exclude {unknown[0]}: no such test image in {data_dir}/test "
                           f"({len(unknown)} of {len(exclude)} unknown)")
    bad = [s.path for s in samples if s.key not in exclude and not cv2.haveImageReader(str(s.path))]
    if bad:
        raise DatasetError(f"{bad[0]} is not a readable image ({len(bad)} such file(s) in {data_dir}/test); "
                           f"remove it or pass --exclude {bad[0].parent.name}/{bad[0].name}")


def main(argv: list[str] | None = None) -> int:
    args = A.parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        check_test_set(args.data_dir, args.exclude)
        report, scored, inspector = evaluate(args.model_dir, args.data_dir, args.device, args.exclude,
                                             progress=lambda n: Progress(n, "scoring"), pixel_size=args.pixel_size)
    except (ModelDirError, DatasetError, ValueError) as exc:          # ValueError: an image that does not decode
        print(f"{PROG}: {A.one_line(exc)}", file=sys.stderr)
        return 2
    A.write_json(args.json_path, report)
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
    fixed = report.get("pixel_metrics_at")
    if fixed:
        print(f"apc-eval: maps and masks resized to {fixed['size'][0]}x{fixed['size'][1]}: pixel AUROC "
              f"{fixed['pixel_auroc']:.4f}  pixel F1 {fixed['pixel_f1']:.4f}  PRO {fixed['pro']:.4f}")
    per = "  ".join(f"{k} {v:.4f}" for k, v in report["per_defect_type_image_auroc"].items())
    print(f"apc-eval: per defect type image AUROC: {per}")
    at = report["at_threshold"]
    rate = lambda v: "n/a" if v is None else f"{100 * v:.1f} %"  # noqa: E731
    print(f"apc-eval: at threshold {at['threshold']:.4f}: false alarms {rate(at['false_alarm_rate'])}, "
          f"recall {rate(at['recall'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
