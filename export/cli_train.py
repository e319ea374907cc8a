"""``apc-train DATA_DIR --out RUN_DIR``: fit PatchCore on an MVTec-layout category.

With ``--anomalies N`` it is AnomalousPatchCore: the backbone is first fine-tuned with N real anomalies
from ``test/`` (which evaluation then skips), and PatchCore is built on the fine-tuned backbone.

Example::

    apc-train ../shared/data/bottle --out runs/bottle --backbone mobilenet_v2
    apc-train ../shared/data/bottle --out runs/bottle_apc --anomalies 10 --epochs 50 --tasks cls,seg,rec
"""
from __future__ import annotations

import argparse
import sys

from .apc import cli as apc_cli
from .apc import fit_apc
from .backbones import BACKBONE_NAMES, BackboneError
from .patchcore import TrainConfig, fit_patchcore


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="apc-train", description="Fit PatchCore on DATA_DIR/train/good.")
    p.add_argument("data_dir", help="MVTec-layout category: train/good, test/<type>, ground_truth/<type>")
    p.add_argument("--out", required=True, help="run dir to write (run.json, backbone.pt, memory_bank.npy)")
    p.add_argument("--backbone", default=TrainConfig.backbone, choices=BACKBONE_NAMES)
    p.add_argument("--weights", default=None,
                   help="checkpoint file (torchvision or MoCo v3 layout), or 'random'; default: packaged ImageNet")
    p.add_argument("--coreset-ratio", type=float, default=TrainConfig.coreset_ratio)
    p.add_argument("--dim", type=int, default=None, help="reduce patch embeddings to this many channels")
    p.add_argument("--resize", type=int, nargs=2, default=list(TrainConfig.resize), metavar=("H", "W"))
    p.add_argument("--crop", type=int, nargs=2, default=None, metavar=("H", "W"))
    p.add_argument("--resize-mode", choices=("stretch", "pad"), default="stretch",
                   help="stretch: resize every image to --resize; pad: scale by --scale and centre on a --resize "
                        "canvas (for data sets whose image sizes vary)")
    p.add_argument("--scale", type=float, default=1.0, help="pixel scale factor in --resize-mode pad")
    p.add_argument("--holdout", type=float, default=TrainConfig.holdout,
                   help="share of train/good kept out of the memory bank to set the threshold (default 0: every "
                        "good image goes into the bank and the threshold comes from leave-one-out scores)")
    p.add_argument("--max-false-alarm", type=float, default=TrainConfig.max_false_alarm,
                   help="threshold target: share of the training goods' leave-one-out scores allowed above it "
                        "(default %(default)s)")
    p.add_argument("--aggregation-padding", choices=("zeros", "valid"), default=TrainConfig.aggregation_padding,
                   help="3x3 patch averaging at the image border: zeros counted (PatchCore reference; default) "
                        "or only the cells inside the image")
    p.add_argument("--neighbours", type=int, default=TrainConfig.num_neighbours, help="b of PatchCore Eq. 7")
    p.add_argument("--seed", type=int, default=TrainConfig.seed, help="holdout split and few-shot anomaly choice")
    apc_cli.add_apc_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 <= args.holdout < 1:
        print(f"apc-train: --holdout must be in [0, 1), got {args.holdout}", file=sys.stderr)
        return 2
    if not 0 < args.max_false_alarm < 1:
        print(f"apc-train: --max-false-alarm must be in (0, 1), got {args.max_false_alarm}", file=sys.stderr)
        return 2
    if not 0 < args.coreset_ratio <= 1:
        print(f"apc-train: --coreset-ratio must be in (0, 1], got {args.coreset_ratio}", file=sys.stderr)
        return 2
    cfg = TrainConfig(backbone=args.backbone, weights=args.weights, coreset_ratio=args.coreset_ratio,
                      dim=args.dim, resize=tuple(args.resize), crop=tuple(args.crop) if args.crop else None,
                      resize_mode=args.resize_mode, scale=args.scale,
                      holdout=args.holdout, num_neighbours=args.neighbours, seed=args.seed,
                      max_false_alarm=args.max_false_alarm, aggregation_padding=args.aggregation_padding)
    if args.anomalies is None and apc_cli.options_given(args):
        print(f"apc-train: {', '.join(apc_cli.options_given(args))} only apply with --anomalies N", file=sys.stderr)
        return 2
    try:
        if args.anomalies is None:
            info = fit_patchcore(args.data_dir, args.out, cfg)
        else:
            info = fit_apc(args.data_dir, args.out, cfg, apc_cli.apc_config_from_args(args, args.seed),
                           resume=bool(args.resume))
    except (BackboneError, ValueError, FileNotFoundError) as exc:
        print(f"apc-train: {exc}", file=sys.stderr)
        return 2
    tr, th = info["training"], info["threshold"]
    source = (f"{th['n_images']} held-out goods" if th["method"] == "max_holdout_good" else
              f"{th['n_images']} bank images scored leave-one-out, {100 * th['implied_false_alarm']:.1f} % of them "
              f"above it (target {100 * th['target_false_alarm']:.1f} %)")
    print(f"apc-train: {tr['category']}: {tr['n_bank_images']} bank images, {tr['n_patches']} patches -> "
          f"coreset {tr['bank_size']} x {info['embedding_dim']}; threshold {th['value']:.4f} from {source}")
    s = tr["seconds"]
    ft = info.get("fine_tuning")
    for line in apc_cli.describe(info) if ft else []:
        print(f"apc-train: {line}")
    total = s["total"] + (ft["seconds"] if ft else 0.0)
    print(f"apc-train: train time {total:.1f} s (" + (f"fine-tuning {ft['seconds']:.1f} s, " if ft else "")
          + f"features {s['features']:.1f} s, coreset {s['coreset']:.1f} s, threshold {s['threshold']:.1f} s) "
          f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
