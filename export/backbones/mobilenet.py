"""MobileNetV2 (width 1.0) cut after its stride-16 stage.

Module names follow torchvision's MobileNetV2 (``features.N...``) so its
checkpoints load unchanged. ``features`` is built up to index 13:

    index   0     1    2-3   4-6   7-10  11-13
    stride  2     2    4     8     16    16
    ch      32    16   24    32    64    96

Stage outputs are taken after ``features[1]``, ``[3]``, ``[6]`` and ``[13]``.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import IMAGENET_MEAN, IMAGENET_STD, FeatureBackbone, init_random_weights_

STEM_CHANNELS = 32

# Inverted-residual stages of the MobileNetV2 paper: (expansion, out channels,
# repeats, stride of the first block). Only the stages up to stride 16 are listed.
STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
)

# Index in ``features`` after which each returned stage ends.
STAGE_ENDS = (1, 3, 6, 13)


def conv_bn_relu6(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias, symmetric padding) -> BatchNorm -> ReLU6, as ``Sequential`` indexes 0/1/2."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise 3x3 -> linear project 1x1, plus identity when shapes allow.

    ``conv`` holds ``[expand,] depthwise, project conv, project bn`` so that the
    keys read e.g. ``conv.0.0.weight`` (expand conv) and ``conv.3.weight`` (bn).

    Example:
        >>> block = InvertedResidual(24, 32, stride=2, expand_ratio=6)
        >>> block(torch.zeros(1, 24, 16, 16)).shape
        torch.Size([1, 32, 8, 8])
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_ch * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_relu6(in_ch, hidden, 1))
        layers += [
            conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_residual else y


def build_features(stages=STAGES, stem_channels: int = STEM_CHANNELS) -> nn.Sequential:
    """The ``features`` Sequential: stem conv then the inverted-residual blocks of ``stages``."""
    layers: list[nn.Module] = [conv_bn_relu6(3, stem_channels, 3, stride=2)]
    in_ch = stem_channels
    for expand, out_ch, repeats, stride in stages:
        for i in range(repeats):
            layers.append(InvertedResidual(in_ch, out_ch, stride if i == 0 else 1, expand))
            in_ch = out_ch
    return nn.Sequential(*layers)


class MobileNetV2Features(FeatureBackbone):
    """MobileNetV2 stages at strides 2/4/8/16 with 16/24/32/96 channels.

    Example:
        >>> bb = MobileNetV2Features()
        >>> [f.shape[1:] for f in bb(torch.zeros(1, 3, 64, 64))][-1]
        torch.Size([96, 4, 4])
    """

    truncated_sequence = "features"

    def __init__(self) -> None:
        super().__init__("mobilenet_v2", (16, 24, 32, 96), IMAGENET_MEAN, IMAGENET_STD)
        self.features = build_features()
        init_random_weights_(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in STAGE_ENDS:
                outs.append(x)
        return outs
