"""Fine-tuning the encoder with the AnomalousPatchCore tasks (CPU-friendly loop).

Loss ``L = w_cls * BCE(cls) + w_seg * pixel-BCE(seg) + w_rec * MSE(rec)`` with default weights 10 / 1 / 1,
AdamW with a smaller learning rate for the pretrained encoder than for the fresh decoder. An epoch is
``samples_per_epoch`` samples in balanced batches (it is not a pass over train/good: with few anomalies the
anomalous half repeats every batch anyway). After each epoch a checkpoint (model, optimizer, loss history)
is written, so an interrupted run resumes where it stopped; ``patience`` stops early when the epoch loss
has not improved by 1 % for that many epochs.

Example::

    cfg = APCConfig(epochs=50)
    model = APCModel(backbone, cfg.tasks, cfg.decoder)
    result = finetune(model, train_set, cfg, checkpoint=Path("runs/bottle/apc_checkpoint.pt"))
    result["history"][-1]    # {'epoch': 50, 'total': ..., 'cls': ..., 'seg': ..., 'rec': ...}
"""
from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from apc_edge.progress import Progress

from .data import FewShotTrainSet
from .model import DECODERS, APCModel, check_tasks

CHECKPOINT_FILE = "apc_checkpoint.pt"
DEFAULT_WEIGHTS = {"cls": 10.0, "seg": 1.0, "rec": 1.0}
IMPROVEMENT = 0.01          # relative drop of the epoch loss that counts as progress for early stopping


@dataclass
class APCConfig:
    """Everything that decides the fine-tuning; stored in ``run.json`` under ``fine_tuning``."""

    anomalies: int = 10
    anomalies_dir: str | None = None   # take every defect image of this folder instead (masks where they exist)
    anomaly_masks: str | None = None   # their masks (default: <anomalies_dir>_masks beside it)
    epochs: int = 50
    samples_per_epoch: int = 64
    batch_size: int = 8
    tasks: tuple[str, ...] = ("cls", "seg", "rec")
    loss_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    decoder: str = "unet2"
    cutpaste: bool = True
    cutpaste_share: float = 0.5
    augment: bool = True
    lr: float = 1e-4                   # encoder (pretrained)
    decoder_lr: float = 1e-3           # decoder and heads (fresh)
    weight_decay: float = 1e-2
    freeze_bn: bool = True
    patience: int = 0                  # 0: no early stopping
    seed: int = 0

    def validate(self) -> None:
        self.tasks = check_tasks(self.tasks)
        if self.decoder not in DECODERS:
            raise ValueError(f"unknown decoder {self.decoder!r}; choose one of {', '.join(DECODERS)}")
        for name in ("epochs", "samples_per_epoch", "batch_size") + (() if self.anomalies_dir else ("anomalies",)):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (one good and one anomalous sample per batch)")
        if self.lr <= 0 or self.decoder_lr <= 0:
            raise ValueError(f"learning rates must be positive, got {self.lr} and {self.decoder_lr}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")

    def signature(self) -> str:
        """The settings a resumed run must share with its checkpoint (all but epochs and patience)."""
        d = asdict(self)
        d.pop("epochs")
        d.pop("patience")
        d["tasks"] = list(d["tasks"])
        return json.dumps(d, sort_keys=True)


def task_losses(out: dict[str, torch.Tensor], x: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor,
                mean: torch.Tensor, std: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-task losses; the reconstruction target is the input image as RGB in 0..1."""
    losses = {}
    if "cls" in out:
        losses["cls"] = F.binary_cross_entropy_with_logits(out["cls"], labels)
    if "seg" in out:
        known = (masks >= 0).float()               # -1: an anomaly whose mask is not known (cls and rec only)
        per_pixel = F.binary_cross_entropy_with_logits(out["seg"], masks.clamp(min=0), reduction="none")
        losses["seg"] = (per_pixel * known).sum() / known.sum().clamp(min=1.0)
    if "rec" in out:
        losses["rec"] = F.mse_loss(out["rec"], x * std + mean)
    return losses


def make_optimizer(model: APCModel, cfg: APCConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW([
        {"params": [p for p in model.encoder.parameters() if p.requires_grad], "lr": cfg.lr},
        {"params": model.decoder_parameters(), "lr": cfg.decoder_lr},
    ], weight_decay=cfg.weight_decay)


def _save_checkpoint(path: Path, model: APCModel, opt, epoch: int, history: list, signature: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                "history": history, "signature": signature}, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, model: APCModel, opt, signature: str) -> tuple[int, list]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("signature") != signature:
        raise ValueError(f"cannot resume from {path}: it was written with other fine-tuning settings "
                         f"({state.get('signature')}); delete it or drop --resume")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    return int(state["epoch"]), list(state["history"])


def finetune(model: APCModel, train_set: FewShotTrainSet, cfg: APCConfig, checkpoint: Path | None = None,
             resume: bool = False, show_progress: bool = True, context: dict | None = None) -> dict:
    """Train ``model`` in place; returns ``{"history", "epochs_run", "stopped_early", "seconds", ...}``.

    ``context`` (JSON-able: backbone, input size, anomalies used, ...) joins ``cfg.signature()`` in the
    checkpoint, so ``resume`` refuses a checkpoint of another setup with a clear message.
    """
    cfg.validate()
    signature = cfg.signature() + (json.dumps(context, sort_keys=True) if context else "")
    t0, cpu0 = time.perf_counter(), time.process_time()
    weights = {t: float(cfg.loss_weights.get(t, DEFAULT_WEIGHTS[t])) for t in model.tasks}
    pre = train_set.pre
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1)
    opt = make_optimizer(model, cfg)
    start, history = 0, []
    if resume and checkpoint is not None and checkpoint.is_file():
        start, history = _load_checkpoint(checkpoint, model, opt, signature)
    steps = -(-cfg.samples_per_epoch // cfg.batch_size)
    best, since_best = float("inf"), 0
    for h in history:                      # replay the early-stopping state of a resumed run
        best, since_best = (h["total"], 0) if h["total"] < best * (1 - IMPROVEMENT) else (best, since_best + 1)
    stopped_early = False
    model.train()
    bar_or_none = Progress((cfg.epochs - start) * steps, "apc fine-tune") if show_progress else nullcontext()
    with bar_or_none as bar:
        for epoch in range(start, cfg.epochs):
            rng = np.random.default_rng([cfg.seed, epoch])
            torch.manual_seed(cfg.seed * 100003 + epoch)
            sums = dict.fromkeys(["total", *model.tasks], 0.0)
            for _ in range(steps):
                x, masks, labels = train_set.batch(cfg.batch_size, rng)
                losses = task_losses(model(x), x, masks, labels, mean, std)
                total = sum(weights[t] * v for t, v in losses.items())
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                sums["total"] += total.item()
                for t, v in losses.items():
                    sums[t] += v.item()
                if bar:
                    bar.update(1, epoch=epoch + 1, loss=total.item(), **{t: v.item() for t, v in losses.items()})
            record = {"epoch": epoch + 1, **{k: round(v / steps, 5) for k, v in sums.items()}}
            history.append(record)
            best, since_best = (record["total"], 0) if record["total"] < best * (1 - IMPROVEMENT) \
                else (best, since_best + 1)
            if checkpoint is not None:
                _save_checkpoint(checkpoint, model, opt, epoch + 1, history, signature)
            if cfg.patience and since_best >= cfg.patience:
                stopped_early = True
                break
    model.eval()
    return {"history": history, "epochs_run": len(history), "stopped_early": stopped_early,
            "resumed_from_epoch": start, "steps_per_epoch": steps, "loss_weights": weights,
            "seconds": round(time.perf_counter() - t0, 2), "cpu_seconds": round(time.process_time() - cpu0, 2)}
