"""AnomalousPatchCore end to end: pick anomalies, fine-tune the encoder, build PatchCore on it.

The run dir is an ordinary PatchCore run dir (``apc-export`` and the runtime need nothing new):
``backbone.pt`` holds the fine-tuned encoder (torchvision key names), ``run.json`` adds
``few_shot_anomalies`` (the test images used, which evaluation then skips) and ``fine_tuning`` (settings,
losses per epoch, time). The decoder and heads are dropped. ``apc_checkpoint.pt`` (model and optimizer
after the last finished epoch) stays beside them for ``resume``.

Fine-tuning uses the same good images as the memory bank: the held-out good images that set the
provisional threshold are never trained on.

Example::

    info = fit_apc("../shared/data/bottle", "runs/bottle_apc", TrainConfig(), APCConfig(anomalies=10))
    info["few_shot_anomalies"]["images"]      # the 10 test images to leave out of evaluation
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from apc_edge.calibration.dataset import MVTecCategory

from ..backbones import build_backbone
from ..patchcore import TrainConfig, fit_patchcore, make_preprocessor, resolve_input, split_holdout
from .data import FewShotTrainSet
from .model import APCModel
from .selection import folder_anomalies, select_anomalies
from .train import CHECKPOINT_FILE, APCConfig, finetune


def fit_apc(data_dir: str | Path, run_dir: str | Path, cfg: TrainConfig, apc: APCConfig,
            resume: bool = False, show_progress: bool = True) -> dict:
    """Fine-tune ``cfg.backbone`` with ``apc.anomalies`` real anomalies, then fit PatchCore. Returns run info."""
    t0 = time.perf_counter()
    apc.validate()
    data = MVTecCategory(data_dir)
    selection = (folder_anomalies(apc.anomalies_dir, apc.anomaly_masks) if apc.anomalies_dir else
                 select_anomalies(data, apc.anomalies, apc.seed))
    backbone = build_backbone(cfg.backbone, cfg.weights)
    goods = data.train_good()
    cfg = resolve_input(cfg, goods)
    pre = make_preprocessor(cfg, backbone)
    bank_paths, _ = split_holdout(goods, cfg.holdout, cfg.seed)
    train_set = FewShotTrainSet(bank_paths, selection.samples, pre, cutpaste=apc.cutpaste, augment=apc.augment,
                                cutpaste_share=apc.cutpaste_share)
    torch.manual_seed(apc.seed)
    model = APCModel(backbone, apc.tasks, apc.decoder, apc.freeze_bn)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    context = {"backbone": cfg.backbone, "weights": cfg.weights, "input_hw": list(pre.input_hw),
               "holdout": cfg.holdout, "anomalies": selection.keys}
    result = finetune(model, train_set, apc, checkpoint=run_dir / CHECKPOINT_FILE, resume=resume,
                      show_progress=show_progress, context=context)
    backbone = model.encoder.eval()
    settings = asdict(apc)
    settings["tasks"] = list(apc.tasks)
    fine_tuning = {
        "method": "AnomalousPatchCore",
        **settings,
        "loss_weights": result["loss_weights"],
        "batchnorm": "encoder running statistics frozen, affine trained" if apc.freeze_bn else "batch statistics",
        "input_hw": list(pre.input_hw),
        "n_good_images": len(bank_paths),
        "initial_weights": cfg.weights or "imagenet (packaged)",
        "epochs_run": result["epochs_run"],
        "stopped_early": result["stopped_early"],
        "resumed_from_epoch": result["resumed_from_epoch"],
        "steps_per_epoch": result["steps_per_epoch"],
        "losses": result["history"],
        "seconds_loop": result["seconds"],
        "cpu_seconds_loop": result["cpu_seconds"],          # process CPU time (all threads) of the loop
        "seconds": round(time.perf_counter() - t0, 2),      # selection, image loading and the loop
    }
    cfg.exclude = [] if apc.anomalies_dir else selection.keys      # test images to leave out of evaluation
    return fit_patchcore(data_dir, run_dir, cfg, backbone=backbone,
                         extra={"fine_tuning": fine_tuning, "few_shot_anomalies": selection.to_dict()})
