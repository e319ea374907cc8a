"""Common base of the feature backbones and the error type they raise."""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

STAGE_STRIDES = (2, 4, 8, 16)
DEFAULT_LEVELS = (2, 3)


class BackboneError(ValueError):
    """Any failure to build a backbone or to load its weights.

    The message names the problem: the unknown name and the known ones, the
    checkpoint path, the first missing keys or shape mismatches, ...
    """


class FeatureBackbone(nn.Module):
    """A CNN cut after its stride-16 stage, returning four stage outputs.

    ``forward(x)`` takes a float tensor ``(N, 3, H, W)`` in RGB order,
    normalized as ``(x / 255 - input_mean) / input_std``, and returns a list of
    four tensors at strides ``stage_strides`` with ``stage_channels`` channels.
    Layers deeper than stride 16 are not built, so their weights are neither
    stored nor loaded.

    Example:
        >>> from apc_edge.export.backbones import build_backbone
        >>> bb = build_backbone("mobilenet_v2", weights="random")
        >>> [f.shape[1] for f in bb(torch.zeros(1, 3, 64, 64))] == list(bb.stage_channels)
        True
    """

    stage_strides: tuple[int, int, int, int] = STAGE_STRIDES
    default_levels: tuple[int, int] = DEFAULT_LEVELS
    # Name of the Sequential/ModuleList attribute that was cut short at stride 16
    # (its later indexes exist in full checkpoints), or None.
    truncated_sequence: str | None = None
    # state-dict keys a checkpoint may lack (saved by an older version); they keep their built value
    defaulted_keys: tuple[str, ...] = ()

    def __init__(
        self,
        name: str,
        stage_channels: tuple[int, int, int, int],
        input_mean: tuple[float, float, float],
        input_std: tuple[float, float, float],
    ) -> None:
        super().__init__()
        self.name = name
        self.stage_channels = tuple(int(c) for c in stage_channels)
        self.input_mean = tuple(float(v) for v in input_mean)
        self.input_std = tuple(float(v) for v in input_std)
        # Where the current weights came from ("random", a file path); set by build_backbone.
        self.weights_source = "random"

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def is_unbuilt_key(self, key: str) -> bool:
        """True if ``key`` belongs to a layer of the full network cut off here.

        Such keys (e.g. ``features.14...`` of MobileNetV2) are ignored when a
        full checkpoint is loaded; keys of never-built top-level modules
        (``layer4``, ``fc``, ``classifier``, ...) are ignored without asking.
        """
        name = self.truncated_sequence
        if name is None or not key.startswith(name + "."):
            return False
        index = key[len(name) + 1 :].split(".", 1)[0]
        return index.isdigit() and int(index) >= len(getattr(self, name))


def init_random_weights_(module: nn.Module) -> None:
    """He-normal (fan-out) convolutions, unit/zero BatchNorm: the usual CNN init."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
