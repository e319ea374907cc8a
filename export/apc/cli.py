"""The AnomalousPatchCore options of ``apc-train`` (kept here so the CLI module stays small).

Example::

    parser = argparse.ArgumentParser(); add_apc_arguments(parser)
    args = parser.parse_args(["--anomalies", "10", "--tasks", "cls,seg"])
    apc_config_from_args(args, seed=0).tasks        # ('cls', 'seg')
"""
from __future__ import annotations

import argparse

from .model import DECODERS
from .train import DEFAULT_WEIGHTS, APCConfig

# argparse dest -> APCConfig field (None: not a config field)
OPTIONS = {"epochs": "epochs", "samples_per_epoch": "samples_per_epoch", "finetune_batch": "batch_size",
           "tasks": "tasks", "decoder": "decoder", "no_cutpaste": "cutpaste", "no_augment": "augment",
           "finetune_lr": "lr", "patience": "patience", "loss_weights": "loss_weights", "resume": None,
           "anomaly_masks": "anomaly_masks"}


def add_apc_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument_group("AnomalousPatchCore (fine-tune the backbone with a few real anomalies first)")
    a.add_argument("--anomalies", type=int, default=None, metavar="N",
                   help="take N anomalous images (with masks) from test/, uniformly per defect type; "
                        "apc-eval then leaves them out")
    a.add_argument("--anomalies-dir", default=None, metavar="DIR",
                   help="instead of --anomalies: every defect image of DIR (e.g. apc-review --export's DIR/defect); "
                        "masks from --anomaly-masks, and an image without one trains only cls and rec")
    a.add_argument("--anomaly-masks", default=None, metavar="DIR",
                   help="masks of --anomalies-dir, named like the images or <stem>_mask.png "
                        "(default: <DIR>_masks beside it)")
    a.add_argument("--epochs", type=int, default=None, help=f"fine-tuning epochs (default {APCConfig.epochs})")
    a.add_argument("--samples-per-epoch", type=int, default=None,
                   help=f"samples per epoch, half good, half anomalous (default {APCConfig.samples_per_epoch})")
    a.add_argument("--finetune-batch", type=int, default=None, help=f"batch size (default {APCConfig.batch_size})")
    a.add_argument("--tasks", default=None, help="comma-separated subset of cls,seg,rec (default all three)")
    a.add_argument("--loss-weights", default=None, metavar="TASK=W,...",
                   help="loss weights, e.g. cls=10,seg=1,rec=1 (default: those)")
    a.add_argument("--decoder", default=None, choices=list(DECODERS), help="default unet2")
    a.add_argument("--no-cutpaste", action="store_true", default=None, help="no CutPaste anomalies")
    a.add_argument("--no-augment", action="store_true", default=None, help="no flips, rotations, brightness")
    a.add_argument("--finetune-lr", type=float, default=None,
                   help=f"encoder learning rate (default {APCConfig.lr}; decoder {APCConfig.decoder_lr})")
    a.add_argument("--patience", type=int, default=None,
                   help="stop after this many epochs without a 1%% loss improvement (default: never)")
    a.add_argument("--resume", action="store_true", default=None,
                   help="continue from the run dir's apc_checkpoint.pt")


def options_given(args: argparse.Namespace) -> list[str]:
    """Fine-tuning options set on the command line, as flags (they need ``--anomalies``)."""
    return [f"--{d.replace('_', '-')}" for d in OPTIONS if getattr(args, d) is not None]


def apc_config_from_args(args: argparse.Namespace, seed: int) -> APCConfig:
    """The settings of the command line; ``ValueError`` names a bad one."""
    cfg = APCConfig(anomalies=args.anomalies or 0, anomalies_dir=args.anomalies_dir, seed=seed)
    for dest, field in OPTIONS.items():
        value = getattr(args, dest)
        if value is None or field is None:
            continue
        if dest == "tasks":
            value = tuple(t.strip() for t in value.split(",") if t.strip())
        elif dest == "loss_weights":
            value = parse_loss_weights(value)
        elif dest.startswith("no_"):
            value = not value
        setattr(cfg, field, value)
    cfg.validate()
    return cfg


def parse_loss_weights(text: str) -> dict[str, float]:
    """``"cls=10,seg=1"`` -> ``{"cls": 10.0, "seg": 1.0, "rec": 1.0}``; unnamed tasks keep their default."""
    weights = dict(DEFAULT_WEIGHTS)
    for part in (p.strip() for p in text.split(",") if p.strip()):
        task, _, value = (x.strip() for x in part.partition("="))
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if task not in DEFAULT_WEIGHTS or weight < 0:
            raise ValueError(f"--loss-weights: {part!r} is not TASK=WEIGHT with TASK one of "
                             f"{', '.join(DEFAULT_WEIGHTS)} and WEIGHT >= 0")
        weights[task] = weight
    return weights


def describe(info: dict) -> list[str]:
    """Summary lines of a fine-tuned run for the CLI."""
    ft = info["fine_tuning"]
    last = ft["losses"][-1] if ft["losses"] else {}
    losses = " ".join(f"{k} {v:.4f}" for k, v in last.items() if k != "epoch")
    return [f"fine-tuned {ft['epochs_run']} epochs x {ft['samples_per_epoch']} samples with "
            f"{len(info['few_shot_anomalies']['images'])} anomalies ({', '.join(ft['tasks'])}, {ft['decoder']}) "
            f"in {ft['seconds']:.1f} s; last epoch: {losses}",
            few_shot_line(info["few_shot_anomalies"])]


def few_shot_line(fs: dict) -> str:
    if fs.get("folder"):
        n, masked = len(fs["images"]), len(fs.get("with_mask", []))
        return (f"anomalies from {fs['folder']}: {n}, {masked} with a mask"
                + (f" ({n - masked} without: classification and reconstruction only, no CutPaste)" if n > masked else ""))
    return f"few-shot anomalies (left out of evaluation): {' '.join(fs['images'])}"
