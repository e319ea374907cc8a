"""``apc-train DATA_DIR --out RUN_DIR``: fit PatchCore on an MVTec-layout category or a plain folder of good images.

With ``--anomalies N`` it is AnomalousPatchCore: the backbone is first fine-tuned with N real anomalies
from ``test/`` (which evaluation then skips), and PatchCore is built on the fine-tuned backbone.

Example::

    apc-train ../shared/data/bottle --out runs/bottle --backbone mobilenet_v2
    apc-train line3/good_parts --out runs/line3                  # every image below the folder is good
    apc-train ../shared/data/bottle --out runs/bottle_apc --anomalies 10 --epochs 50 --tasks cls,seg,rec
"""
from __future__ import annotations

import argparse
import sys

from apc_edge.cli import args as A

from .apc import cli as apc_cli
from .apc import fit_apc
from .backbones import BACKBONE_NAMES, ENSEMBLE_NAMES, BackboneError
from .patchcore import ONE_IMAGE_METHOD, TrainConfig, fit_patchcore


def build_parser() -> argparse.ArgumentParser:
    p = A.ArgumentParser(prog="apc-train", description="Fit PatchCore on DATA_DIR/train/good, or on every image below "
                                                      "DATA_DIR when it is a plain folder of good images.")
    A.add_quiet(p)
    p.add_argument("--json", dest="json_path", type=A.output_file, help="also write the run's record (run.json's content) here")
    p.add_argument("data_dir", help="MVTec-layout category (train/good, test/<type>, ground_truth/<type>) or a "
                                    "folder of good images (searched recursively)")
    p.add_argument("--out", required=True, help="run dir to write (run.json, backbone.pt, memory_bank.npy)")
    p.add_argument("--backbone", default=TrainConfig.backbone, choices=BACKBONE_NAMES + ENSEMBLE_NAMES,
                   help="feature backbone (default %(default)s); a+b concatenates both backbones' features")
    p.add_argument("--weights", default=None,
                   help="checkpoint file (torchvision or MoCo v3 layout), or 'random'; default: packaged ImageNet")
    p.add_argument("--coreset-ratio", type=A.float_range(0.0, 1.0, low_open=True), default=TrainConfig.coreset_ratio,
                   help="share of the training patches kept in the memory bank (default %(default)s), at most "
                        "--max-bank-rows")
    p.add_argument("--max-bank-rows", type=A.positive_int, default=TrainConfig.max_bank_rows,
                   help="cap on the memory bank's rows: the coreset's time grows with patches x rows "
                        "(default %(default)s)")
    p.add_argument("--dim", type=A.positive_int, default=None,
                   help="reduce patch embeddings to this many channels (default: keep all)")
    p.add_argument("--resize", type=A.int_range(MIN_INPUT_SIDE, MAX_INPUT_SIDE), nargs=2, default=None, metavar=("H", "W"),
                   help="model input size (default: chosen from the training image sizes, see --resize-mode)")
    p.add_argument("--crop", type=A.int_range(MIN_INPUT_SIDE, MAX_INPUT_SIDE), nargs=2, default=None,
                   metavar=("H", "W"), help="centre crop after --resize (stretch mode)")
    p.add_argument("--resize-mode", choices=("auto", "stretch", "pad"), default="auto",
                   help="auto (default): stretch with the aspect ratio kept when every training image has one size, "
                        "pad when sizes vary, about 512x512 pixels (high-resolution images shrunk at most 2x, up to 1 MP); "
                        "stretch: resize every image to --resize; pad: "
                        "scale by --scale and centre on a --resize canvas")
    p.add_argument("--scale", type=A.float_range(0.01, 10.0), default=None,
                   help="pixel scale factor in --resize-mode pad (default: chosen from the training image sizes)")
    p.add_argument("--holdout", type=A.float_range(0.0, 1.0, high_open=True), default=TrainConfig.holdout,
                   help="share of train/good kept out of the memory bank to set the threshold (default 0: every "
                        "good image goes into the bank and the threshold comes from leave-one-out scores)")
    p.add_argument("--max-false-alarm", type=A.float_range(0.0, 1.0, low_open=True, high_open=True),
                   default=TrainConfig.max_false_alarm,
                   help="threshold target: share of the training goods' leave-one-out scores allowed above it "
                        "(default %(default)s)")
    p.add_argument("--aggregation-padding", choices=("zeros", "valid"), default=TrainConfig.aggregation_padding,
                   help="3x3 patch averaging at the image border: zeros counted (PatchCore reference; default) "
                        "or only the cells inside the image")
    p.add_argument("--stage-norm", choices=("soft", "l2", "none"), default=TrainConfig.stage_norm,
                   help="each backbone level's channel vector v per cell becomes v / sqrt(|v|^2 + c^2) before the "
                        "3x3 averaging: soft (default; c the median cell norm of the training images: strong "
                        "cells compared by pattern more than strength), l2 (c = 0: unit length), none (raw "
                        "activations, the PatchCore paper)")
    p.add_argument("--neighbours", type=A.positive_int, default=TrainConfig.num_neighbours,
                   help="b of PatchCore Eq. 7 (default %(default)s)")
    p.add_argument("--image-score", choices=("map-peak", "max-patch"), default="map-peak",
                   help="an image's score: the peak of its patch map smoothed by the anomaly map's own blur "
                        "(map-peak, default: a defect spans neighbouring patches, a lone noisy patch does not) or "
                        "its most anomalous patch (max-patch, the PatchCore paper); Eq. 7 reweights either")
    p.add_argument("--seed", type=A.non_negative_int, default=TrainConfig.seed,
                   help="holdout split and few-shot anomaly choice")
    apc_cli.add_apc_arguments(p)
    return p


MIN_INPUT_SIDE, MAX_INPUT_SIDE = 32, 4096


def _combination_problem(args) -> str | None:
    if args.crop and args.resize and (args.crop[0] > args.resize[0] or args.crop[1] > args.resize[1]):
        return f"--crop {args.crop[0]} {args.crop[1]} is larger than --resize {args.resize[0]} {args.resize[1]}"
    if args.crop and args.resize_mode == "pad":
        return "--crop applies to stretch mode only, not --resize-mode pad"
    if args.scale is not None and args.resize_mode != "pad":
        return "--scale applies to --resize-mode pad only"
    return None


def main(argv: list[str] | None = None) -> int:
    args = A.parse(build_parser(), argv, check=_combination_problem)
    if isinstance(args, int):
        return args
    cfg = TrainConfig(backbone=args.backbone, weights=args.weights, coreset_ratio=args.coreset_ratio,
                      max_bank_rows=args.max_bank_rows,
                      dim=args.dim, resize=tuple(args.resize) if args.resize else None,
                      crop=tuple(args.crop) if args.crop else None,
                      resize_mode=args.resize_mode, scale=args.scale,
                      holdout=args.holdout, num_neighbours=args.neighbours, seed=args.seed,
                      max_false_alarm=args.max_false_alarm, aggregation_padding=args.aggregation_padding,
                      stage_norm=args.stage_norm, image_score=args.image_score.replace("-", "_"))
    if args.anomalies is None and not args.anomalies_dir and apc_cli.options_given(args):
        print(f"apc-train: {', '.join(apc_cli.options_given(args))} only apply with --anomalies N or --anomalies-dir",
              file=sys.stderr)
        return 2
    if args.anomalies is not None and args.anomalies_dir:
        print("apc-train: give --anomalies N (from test/) or --anomalies-dir DIR, not both", file=sys.stderr)
        return 2
    try:
        if args.anomalies is None and not args.anomalies_dir:
            info = fit_patchcore(args.data_dir, args.out, cfg)
        else:
            info = fit_apc(args.data_dir, args.out, cfg, apc_cli.apc_config_from_args(args, args.seed),
                           resume=bool(args.resume))
    except (BackboneError, ValueError, FileNotFoundError) as exc:
        print(f"apc-train: {exc}", file=sys.stderr)
        return 2
    tr, th = info["training"], info["threshold"]
    if th["method"] == "max_holdout_good":
        source = f"{th['n_images']} held-out goods"
    elif th["method"] == ONE_IMAGE_METHOD:
        source = f"{th['n_images']} copies of the one training image shifted by a quarter of a patch stride"
    else:
        source = (f"{th['n_images']} bank images scored leave-one-out, {100 * th['implied_false_alarm']:.1f} % of "
                  f"them above it (target {100 * th['target_false_alarm']:.1f} %)")
    plan = info["config"].get("input_plan") or {}
    print(f"apc-train: input {'x'.join(str(v) for v in info['preprocess']['resize'])} "
          f"({info['preprocess']['mode']}): {plan.get('reason', 'as configured')}")
    print(f"apc-train: {tr['category']}: {tr['n_bank_images']} bank images, {tr['n_patches']} patches -> "
          f"coreset {tr['bank_size']} x {info['embedding_dim']}; threshold {th['value']:.4f} from {source}")
    if th["method"] == ONE_IMAGE_METHOD:
        print("apc-train: warning: one good image cannot show how much good parts vary, so this threshold is "
              "low and will flag many good parts; review them and add them with apc-update (or apc-calibrate "
              "--good DIR), or train on more good images")
    s = tr["seconds"]
    ft = info.get("fine_tuning")
    for line in apc_cli.describe(info) if ft else []:
        print(f"apc-train: {line}")
    total = s["total"] + (ft["seconds"] if ft else 0.0)
    print(f"apc-train: train time {total:.1f} s (" + (f"fine-tuning {ft['seconds']:.1f} s, " if ft else "")
          + f"features {s['features']:.1f} s ({tr.get('features_computed_with', {}).get('engine', 'torch')}), coreset {s['coreset']:.1f} s, threshold {s['threshold']:.1f} s) "
          f"-> {args.out}")
    A.write_json(args.json_path, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
