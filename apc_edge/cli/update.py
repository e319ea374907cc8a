"""apc-update: learn confirmed good images into a model dir, on the camera PC (torch-free).

Examples::

    apc-review out --export reviewed                                # false alarms -> reviewed/good
    apc-update models/bottle --good reviewed/good --defects reviewed/defect --out models/bottle_v2
    apc-inspect models/bottle_v2 --camera ...                       # models/bottle stays for rollback

See :mod:`apc_edge.model_update` for what it does and when it refuses.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..manifest import ModelDirError
from ..model_update import UpdateRefused, update_model
from . import args as A

PROG = "apc-update"


def build_parser():
    p = A.ArgumentParser(prog=PROG, description="Add confirmed good images (e.g. false alarms) to a model dir's "
                                                 "memory bank and write the result as a new model dir.")
    p.add_argument("model_dir", type=A.existing_dir)
    p.add_argument("--good", nargs="+", required=True, metavar="DIR_OR_FILE",
                   help="good images to learn (folders or files), e.g. apc-review --export DIR/good")
    p.add_argument("--defects", nargs="+", metavar="DIR_OR_FILE",
                   help="confirmed defects: the update is refused if any of them would then pass")
    p.add_argument("--out", required=True, type=A.output_dir, help="the new model dir (must not exist)")
    p.add_argument("--json", dest="json_path", type=A.output_file, help="also write the update's report here")
    p.add_argument("--max-false-alarm", type=A.float_range(0.0, 1.0, low_open=True, high_open=True),
                   help="threshold target on the new goods' leave-one-out scores (default: the model's)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = A.parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        r = update_model(args.model_dir, args.out, args.good, args.defects, args.max_false_alarm)
    except UpdateRefused as exc:
        print(f"{PROG}: refused: {A.one_line(exc)}", file=sys.stderr)
        return 1
    except (ModelDirError, OSError, ValueError) as exc:
        print(f"{PROG}: {A.one_line(exc)}", file=sys.stderr)
        return 2
    A.write_json(args.json_path, r)
    t = r["threshold"]
    raised = f", raised from {t['raised_from']:.4f}" if "raised_from" in t else " (unchanged)"
    print(f"{PROG}: {len(r['images_added'])} good images: {r['rows_added']} bank rows added "
          f"({r['bank_rows'][0]} -> {r['bank_rows'][1]}, covering radius {r['covering_radius']:.4f}); "
          f"{r['share_above_old_threshold']:.0%} of them scored above the old threshold left out; threshold "
          f"{t['value']:.4f}{raised}; index {r['index']['type']}"
          + (f"; {r['defects_checked']} confirmed defects still flagged" if r["defects_checked"] else "")
          + f" -> {Path(args.out)} ({r['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
