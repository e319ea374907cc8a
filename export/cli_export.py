"""``apc-export RUN_DIR --target openvino|onnx --out MODEL_DIR [--int8 | --fp16] [--index exact|hnsw|auto]``.

Example::

    apc-export runs/bottle --target openvino --out models/bottle
    apc-export runs/bottle --target openvino --int8 --index auto --out models/bottle_int8
    apc-export runs/bottle --target onnx --int8 --guard-images ../shared/data/bottle/test/broken_large --out m/b
"""
from __future__ import annotations

import json
from pathlib import Path
import argparse
import sys

from apc_edge.cli import args as A

from apc_edge.calibration.int8_guard import GuardTolerance

from .hnsw_build import INDEX_MODES, HnswTargets
from .model_export import AUTO_EXACT_BELOW, BANK_DTYPES, INT8_PRESETS, TARGETS, ExportOptions, export_model
from .quantize import INT8_FLOAT_PARTS, INT8_RANGES


def build_parser() -> argparse.ArgumentParser:
    p = A.ArgumentParser(prog="apc-export", description="Export a training run dir to a model dir.")
    A.add_quiet(p)
    p.add_argument("--json", dest="json_path", type=A.output_file, help="also write the manifest written here")
    p.add_argument("run_dir")
    p.add_argument("--target", choices=TARGETS, default="openvino")
    p.add_argument("--out", required=True, help="model dir to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model dir")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--int8", action="store_true", help="INT8 graph: NNCF (openvino) or ONNX Runtime QDQ (onnx)")
    prec.add_argument("--fp16", action="store_true", help="FP16-compressed IR weights (openvino only)")
    p.add_argument("--data", help="training data dir (default: the one recorded in the run's run.json)")
    p.add_argument("--calibration-images", type=A.positive_int, default=None,
                   help="INT8 calibration images drawn from the bank images (default: min(300, all))")
    p.add_argument("--guard-images", nargs="+", default=[], metavar="PATH",
                   help="extra images or folders (e.g. known anomalies) for the accuracy guard and HNSW sweep, "
                        "besides the run's held-out good images")
    p.add_argument("--guard-anomalies", nargs="+", default=[], metavar="PATH",
                   help="real anomalies (images or folders) for the accuracy guard's goods-vs-anomalies AUROC "
                        "(default: an AnomalousPatchCore run's few-shot anomalies, else --guard-synthetic)")
    p.add_argument("--guard-synthetic", type=A.non_negative_int, default=ExportOptions.guard_synthetic, metavar="N",
                   help="CutPaste anomalies made from the training goods when no real ones are known; 0: none "
                        "(default %(default)s)")
    p.add_argument("--no-int8-fallback", action="store_true",
                   help="refuse at once when the INT8 guard fails instead of trying the other NNCF presets and "
                        "activation ranges, then mixed precision (--int8-float), and keep the asked setting without measuring "
                        "the other activation ranges")
    p.add_argument("--int8-preset", choices=INT8_PRESETS, default="performance",
                   help="NNCF preset for --target openvino: performance (symmetric activations) or mixed "
                        "(asymmetric activations) (default %(default)s)")
    p.add_argument("--int8-ranges", choices=INT8_RANGES, default="mean",
                   help="NNCF activation ranges for --target openvino: mean (NNCF default: mean of each "
                        "calibration image's min/max) or max (min/max over all; clips defects less); with "
                        "fallback on, the other ranges are measured too and the closer to FP32 is kept "
                        "(default %(default)s)")
    p.add_argument("--int8-float", choices=INT8_FLOAT_PARTS, default="none",
                   help="layers kept float in the INT8 graph (--target openvino): none, stem (the first "
                        "convolution) or stride8 (every operation up to the stride-8 tap); the fallback tries "
                        "them last (default %(default)s)")
    g = GuardTolerance()
    p.add_argument("--int8-min-cosine", type=A.float_range(-1.0, 1.0), default=g.min_cosine,
                   help="guard: least mean per-patch embedding cosine vs FP32 (default %(default)s)")
    p.add_argument("--int8-min-spearman", type=A.float_range(-1.0, 1.0), default=g.min_spearman,
                   help="guard: least image-score rank correlation vs FP32 (default %(default)s)")
    p.add_argument("--int8-max-score-change", type=A.non_negative_float, default=g.max_score_change,
                   help="guard: largest image-score change on the held-out goods, relative to max(score, FP32 "
                        "threshold) (default %(default)s)")
    p.add_argument("--int8-max-auroc-drop", type=A.float_range(0.0, 1.0), default=g.max_auroc_drop,
                   help="guard: largest fall of the goods-vs-anomalies image AUROC vs FP32 (default %(default)s)")
    p.add_argument("--index", choices=INDEX_MODES, default="auto",
                   help=f"nearest-neighbour index; auto: exact below {AUTO_EXACT_BELOW} bank rows, else HNSW "
                        f"only where measured faster and accurate enough (default %(default)s)")
    h = HnswTargets()
    p.add_argument("--hnsw-min-recall", type=A.float_range(0.0, 1.0), default=h.min_recall,
                   help="HNSW sweep: least recall@1 vs exact on held-out patches (default %(default)s)")
    p.add_argument("--hnsw-max-score-change", type=A.non_negative_float, default=h.max_score_change,
                   help="HNSW sweep: largest relative image-score change vs exact (default %(default)s)")
    p.add_argument("--bank-dtype", choices=BANK_DTYPES, default="float32",
                   help="storage of memory_bank.npy (float16 halves it; searched as float32)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = A.parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    opts = ExportOptions(
        target=args.target, precision="int8" if args.int8 else "fp16" if args.fp16 else "fp32", index=args.index,
        data_dir=args.data, calibration_images=args.calibration_images, guard_images=args.guard_images,
        guard=GuardTolerance(args.int8_min_cosine, args.int8_min_spearman, args.int8_max_score_change,
                             args.int8_max_auroc_drop),
        guard_anomalies=args.guard_anomalies, guard_synthetic=args.guard_synthetic,
        int8_fallback=not args.no_int8_fallback,
        hnsw=HnswTargets(args.hnsw_min_recall, args.hnsw_max_score_change), bank_dtype=args.bank_dtype,
        int8_preset=args.int8_preset, int8_ranges=args.int8_ranges, int8_float=args.int8_float)
    try:
        manifest = export_model(args.run_dir, args.out, overwrite=args.overwrite, options=opts)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"apc-export: {A.one_line(exc)}", file=sys.stderr)
        return 2
    g = manifest["graph"]
    print(f"apc-export: {args.target} {g['precision']} model dir {args.out} (bank {manifest['memory_bank']['size']} x "
          f"{manifest['embedding_dim']} {manifest['memory_bank']['dtype']}, grid {manifest['patch_grid']}, "
          f"index {manifest['index']['type']}) in {manifest['export']['seconds']:.1f} s")
    stages = manifest["export"].get("stage_seconds") or {}
    if stages:
        print("apc-export: stages " + ", ".join(f"{name} {sec:.1f} s" for name, sec in stages.items()))
    q = manifest.get("quantization")
    if q:
        guard = q["guard"]
        sc = guard["image_scores"]
        print(f"apc-export: guard on {guard['n_images']} images: embedding cosine mean "
              f"{guard['embedding_cosine']['mean']:.4f} min {guard['embedding_cosine']['min']:.4f}; image scores "
              f"Spearman {sc.get('spearman', float('nan')):.4f} Kendall {sc.get('kendall', float('nan')):.4f} "
              f"max change {sc['max_rel_change']:.4f}")
        auc = guard.get("anomaly_auroc")
        if auc:
            print(f"apc-export: guard goods-vs-anomalies image AUROC FP32 {auc['reference']:.4f}, "
                  f"{g['precision'].upper()} {auc['compressed']:.4f} ({auc['n_good']} goods, {auc['n_anomalies']} "
                  f"{auc['anomalies']} anomalies)")
        for a in q.get("attempts", []):
            if a["passed"] is None:
                print(f"apc-export: not guarded: {a['method']} (1st-percentile cosine {a['embedding_cosine_p01']:.4f}; "
                      f"{a.get('not_guarded', 'another setting passed first')})")
            elif not a["passed"]:
                print(f"apc-export: guard failed with {a['method']}: {'; '.join(a['problems'])}")
            elif "chosen" in a:
                auc = a.get("anomaly_auroc")
                drop = f"AUROC drop {auc['drop']:+.4f}, " if auc else ""
                print(f"apc-export: guard passed with {a['method']} ({drop}1st-percentile cosine "
                      f"{a['embedding_cosine_p01']:.4f}){': kept' if a['chosen'] else ''}")
    idx = manifest["index"]
    if idx["type"] == "hnsw":
        m = idx["measured"]
        print(f"apc-export: HNSW M={idx['M']} ef_construction={idx['ef_construction']} ef={idx['ef']}: recall@1 "
              f"{m['recall_at_1']:.4f}, distance error mean {m['rel_dist_error_mean']:.5f}, image-score change "
              f"{m['image_score_max_rel_change']:.5f}; search {m['search_ms_per_image']:.2f} ms/image vs exact "
              f"{idx['measurement']['exact_search_ms_per_image']:.2f}")
    elif "reason" in idx or "chosen_by" in idx:
        print(f"apc-export: exact search ({idx.get('reason') or idx.get('chosen_by')})")
    t = manifest["threshold"]
    print(f"apc-export: threshold {t['value']:.4f} ({t['method']}, {t.get('n_images', '?')} images)")
    if args.json_path:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        written = (Path(args.out) / "manifest.json").read_text(encoding="utf-8")       # as written, with its hashes
        args.json_path.write_text(written, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
