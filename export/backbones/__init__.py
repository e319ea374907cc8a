"""Feature backbones for PatchCore: CNNs cut after their stride-16 stage.

Every backbone returns four stage outputs at strides (2, 4, 8, 16); PatchCore
uses ``default_levels`` (the stride-8 and stride-16 ones). Weights: the
offline ImageNet file where one ships (``weights=None``), ``"random"``, or a
checkpoint path (torchvision-style key names, see ``checkpoint``).

Example:
    >>> import torch
    >>> from apc_edge.export.backbones import build_backbone
    >>> bb = build_backbone("mobilenet_v2").eval()
    >>> feats = bb(torch.zeros(1, 3, 224, 224))
    >>> [tuple(f.shape[1:]) for f in feats]
    [(16, 112, 112), (24, 56, 56), (32, 28, 28), (96, 14, 14)]
    >>> torch.save(bb.state_dict(), "bb.pth")          # round-trips:
    >>> bb2 = build_backbone("mobilenet_v2", weights="bb.pth")
"""

from __future__ import annotations

import os
from typing import Callable

from .base import BackboneError, FeatureBackbone
from .checkpoint import LoadReport, apply_state_dict, load_checkpoint_into, read_state_dict
from .clip_resnet import CLIP_CONFIGS, ClipResNetFeatures
from .efficientnet import VARIANT_STAGES as EFFICIENTNET_LITE_VARIANTS
from .efficientnet import EfficientNetLiteFeatures
from .ensemble import EnsembleFeatures, member_names
from .mobilenet import MobileNetV2Features
from .pretrained import OFFLINE_WEIGHTS, offline_weights_path
from .resnet import RESNET_CONFIGS, ResNetFeatures

_FACTORIES: dict[str, Callable[[], FeatureBackbone]] = {
    "mobilenet_v2": MobileNetV2Features,
    **{name: (lambda name=name: EfficientNetLiteFeatures(name)) for name in EFFICIENTNET_LITE_VARIANTS},
    **{name: (lambda name=name: ResNetFeatures(name)) for name in RESNET_CONFIGS},
    **{name: (lambda name=name: ClipResNetFeatures(name)) for name in CLIP_CONFIGS},
}

BACKBONE_NAMES: tuple[str, ...] = tuple(_FACTORIES)
# The ensembles offered by name (any "+"-joined list of BACKBONE_NAMES builds); both members ship offline weights.
ENSEMBLE_NAMES: tuple[str, ...] = ("mobilenet_v2+efficientnet_lite0",)

__all__ = [
    "BACKBONE_NAMES",
    "ENSEMBLE_NAMES",
    "BackboneError",
    "FeatureBackbone",
    "LoadReport",
    "apply_state_dict",
    "build_backbone",
    "load_checkpoint_into",
    "offline_weights_path",
    "read_state_dict",
]


def build_backbone(name: str, weights: str | os.PathLike | None = None) -> FeatureBackbone:
    """Build backbone ``name`` (one of ``BACKBONE_NAMES``) with the given weights.

    ``weights``: None = the offline ImageNet weights (mobilenet_v2,
    efficientnet_lite0/1/2; the ResNets have none and raise), ``"random"`` =
    random init, otherwise a checkpoint file path. A name of backbones joined
    by ``+`` builds their ensemble (``ensemble.EnsembleFeatures``): None gives
    each member its offline weights, a checkpoint holds the whole ensemble. The module is returned in
    whatever mode ``nn.Module`` starts in (training); call ``.eval()`` for
    feature extraction. ``weights_source`` records where the weights came from.

    Example:
        >>> bb = build_backbone("resnet18", weights="random")
        >>> bb.stage_channels, bb.default_levels
        ((64, 64, 128, 256), (2, 3))
    """
    if isinstance(name, str) and len(member_names(name)) > 1:
        return _build_ensemble(name, weights)
    factory = _FACTORIES.get(name)
    if factory is None:
        raise BackboneError(f"unknown backbone {name!r}; known backbones: {', '.join(BACKBONE_NAMES)}")
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise BackboneError(f"weights must be None, 'random' or a file path, not {type(weights).__name__}")
    if weights is None and name not in OFFLINE_WEIGHTS:
        raise BackboneError(
            f"{name}: no ImageNet weights ship offline for this backbone; pass a checkpoint file "
            "(--weights FILE) with torchvision key names (e.g. a torchvision or MoCo checkpoint), "
            "or weights='random'"
        )
    path = offline_weights_path(name) if weights is None else weights
    backbone = factory()
    if isinstance(path, str) and path == "random":
        return backbone
    load_checkpoint_into(backbone, path)
    backbone.weights_source = os.fspath(path)
    return backbone


def _build_ensemble(name: str, weights: str | os.PathLike | None) -> FeatureBackbone:
    members = member_names(name)
    if len(set(members)) != len(members):
        raise BackboneError(f"ensemble {name!r} names a backbone twice")
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise BackboneError(f"weights must be None, 'random' or a file path, not {type(weights).__name__}")
    own = None if weights is None else "random"
    ensemble = EnsembleFeatures([build_backbone(member, own) for member in members])
    if weights is None:
        ensemble.weights_source = " + ".join(m.weights_source for m in ensemble.members)
    elif not (isinstance(weights, str) and weights == "random"):
        load_checkpoint_into(ensemble, weights)
        ensemble.weights_source = os.fspath(weights)
    return ensemble
