"""AnomalousPatchCore (Koshil et al. 2024): fine-tune the backbone with a few real anomalies, then PatchCore.

Modules: ``selection`` (which test anomalies to train on), ``cutpaste`` and ``augment`` (synthetic
anomalies and augmentations), ``data`` (balanced batches), ``heads`` and ``model`` (encoder, U-Net decoder,
classification / segmentation / reconstruction heads), ``train`` (the fine-tuning loop), ``fit``
(everything end to end into a PatchCore run dir).

Example::

    from apc_edge.export.apc import APCConfig, fit_apc
    from apc_edge.export.patchcore import TrainConfig
    fit_apc("../shared/data/bottle", "runs/bottle_apc", TrainConfig(), APCConfig(anomalies=10, epochs=50))
"""
from .fit import fit_apc
from .model import DECODERS, TASKS, APCModel
from .selection import AnomalySelection, select_anomalies
from .train import APCConfig, finetune

__all__ = ["APCConfig", "APCModel", "AnomalySelection", "DECODERS", "TASKS", "finetune", "fit_apc",
           "select_anomalies"]
