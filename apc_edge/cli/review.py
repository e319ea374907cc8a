"""apc-review: mark the frames an apc-inspect run kept as false alarms, defects or good (torch-free).

Examples::

    apc-review out                                     # list the kept frames and their labels
    apc-review out --mark 00000003.frame.png false_alarm
    apc-review out --mark 00000007.frame.png defect --mask scratch_mask.png --note "scratch, left rim"
    apc-review out --export reviewed                   # reviewed/good, reviewed/defect(_masks) for apc-update

The labels are ``OUT/review/labels.csv`` (see :mod:`apc_edge.review`); any tool may write it.
"""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from .. import review
from . import args as A

PROG = "apc-review"


def build_parser():
    p = A.ArgumentParser(prog=PROG, description="Label the frames an apc-inspect run kept, and export them as "
                                                 "folders of good and defect images.")
    p.add_argument("out", type=A.existing_dir, help="the run folder (apc-inspect --out)")
    p.add_argument("--mark", nargs=2, metavar=("FRAME", "LABEL"),
                   help=f"label a kept frame (its path or file name) as one of {', '.join(review.LABELS)}, "
                        "or 'clear'")
    p.add_argument("--mask", type=Path, help="with --mark FRAME defect: a PNG whose non-zero pixels are the defect")
    p.add_argument("--note", default="", help="with --mark: a free-text note")
    p.add_argument("--json", dest="json_path", type=A.output_file,
                   help="also write the listing (or the export's counts) here")
    p.add_argument("--export", type=Path, metavar="DIR", help="copy the reviewed frames into DIR/good, DIR/defect "
                                                             "and DIR/defect_masks")
    return p


def _check(args) -> str | None:
    if args.mark and args.mark[1] not in (*review.LABELS, "clear"):
        return f"--mark LABEL must be one of {', '.join(review.LABELS)}, clear; got {args.mark[1]!r}"
    if (args.mask or args.note) and not args.mark:
        return "--mask and --note go with --mark"
    if args.mark and args.export:
        return "give --mark or --export, not both"
    return None


def main(argv: list[str] | None = None) -> int:
    args = A.parse(build_parser(), argv, check=_check)
    if isinstance(args, int):
        return args
    try:
        if args.mark:
            frame, label = args.mark
            row = review.mark(args.out, frame, None if label == "clear" else label, args.mask, args.note)
            print(f"{PROG}: {row['frame']}: {row['label']}" if row else f"{PROG}: {frame}: label cleared")
            return 0
        if args.export:
            counts = review.export_reviewed(args.out, args.export)
            A.write_json(args.json_path, counts)
            print(f"{PROG}: {counts['good']} good and {counts['defect']} defect frames ({counts['defect_masks']} "
                  f"with masks) -> {args.export}")
            return 0
        frames, labels = review.kept_frames(args.out), review.read_labels(args.out)
    except (OSError, ValueError) as exc:
        print(f"{PROG}: {A.one_line(exc)}", file=sys.stderr)
        return 2
    for f in frames:
        score = f"{f.score:.3f}" if isinstance(f.score, (int, float)) else "-"
        label = labels.get(f.frame, {}).get("label", "")
        print(f"{f.verdict:<3} {score:>6}  {label or '(not reviewed)':<15} {f.frame}"
              + (f"  [{f.file}]" if f.file else ""))
    print(f"{PROG}: {len(frames)} kept frames, {sum(f.frame in labels for f in frames)} reviewed")
    A.write_json(args.json_path, [{**asdict(f), "label": labels.get(f.frame, {}).get("label")} for f in frames])
    return 0


if __name__ == "__main__":
    sys.exit(main())
