"""``apc-export RUN_DIR --target openvino|onnx --out MODEL_DIR``.

Example::

    apc-export runs/bottle --target openvino --out models/bottle
"""
from __future__ import annotations

import argparse
import sys

from .model_export import TARGETS, export_model


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="apc-export", description="Export a training run dir to a model dir.")
    p.add_argument("run_dir")
    p.add_argument("--target", choices=TARGETS, default="openvino")
    p.add_argument("--out", required=True, help="model dir to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model dir")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        manifest = export_model(args.run_dir, args.out, args.target, args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"apc-export: {exc}", file=sys.stderr)
        return 2
    print(f"apc-export: {args.target} model dir {args.out} (bank {manifest['memory_bank']['size']} x "
          f"{manifest['embedding_dim']}, grid {manifest['patch_grid']}) in {manifest['export']['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
