"""ResNet-18 / ResNet-50 / Wide-ResNet-50-2 cut after ``layer3`` (stride 16).

Module names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer2.0.downsample.0`` ...) so its checkpoints, and self-supervised ones
saved with the same names, load unchanged. ``layer4`` and ``fc`` are not built.
Bottlenecks put the stride on the 3x3 convolution (the "v1.5" variant).

Stages: stride 2 = ``relu(bn1(conv1(x)))`` (64 ch), stride 4 = ``layer1``
(after the max-pool), stride 8 = ``layer2``, stride 16 = ``layer3``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import IMAGENET_MEAN, IMAGENET_STD, FeatureBackbone, init_random_weights_


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)


def shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Sequential | None:
    """Projection shortcut (``downsample.0`` conv, ``downsample.1`` bn) when shapes change."""
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a shortcut (ResNet-18/34). ``width`` must equal ``planes``.

    Example:
        >>> BasicBlock(64, 128, stride=2, width=128)(torch.zeros(1, 64, 8, 8)).shape
        torch.Size([1, 128, 4, 4])
    """

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int, width: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_ch, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut(in_ch, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided) -> 1x1 expand to ``4 * planes``, with a shortcut.

    Example:
        >>> Bottleneck(256, 128, stride=2, width=128)(torch.zeros(1, 256, 8, 8)).shape
        torch.Size([1, 512, 4, 4])
    """

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, width: int) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = conv1x1(in_ch, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


@dataclass(frozen=True)
class ResNetConfig:
    """Block type, blocks in layer1..layer3, and inner-width multiplier (2 for wide)."""

    block: type
    depths: tuple[int, int, int]
    width_factor: int = 1


RESNET_CONFIGS = {
    "resnet18": ResNetConfig(BasicBlock, (2, 2, 2)),
    "resnet50": ResNetConfig(Bottleneck, (3, 4, 6)),
    "wide_resnet50_2": ResNetConfig(Bottleneck, (3, 4, 6), width_factor=2),
}


class ResNetFeatures(FeatureBackbone):
    """A torchvision-named ResNet up to ``layer3``; ``name`` is a key of ``RESNET_CONFIGS``.

    Example:
        >>> bb = ResNetFeatures("resnet18")
        >>> bb.stage_channels
        (64, 64, 128, 256)
    """

    def __init__(self, name: str) -> None:
        config = RESNET_CONFIGS[name]
        expansion = config.block.expansion
        planes = (64, 128, 256)
        channels = (64,) + tuple(p * expansion for p in planes)
        super().__init__(name, channels, IMAGENET_MEAN, IMAGENET_STD)
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_ch = 64
        for index, (p, depth) in enumerate(zip(planes, config.depths)):
            blocks = []
            for i in range(depth):
                stride = 2 if index > 0 and i == 0 else 1
                blocks.append(config.block(in_ch, p, stride, p * config.width_factor))
                in_ch = p * expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
        init_random_weights_(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s2 = self.relu(self.bn1(self.conv1(x)))
        s4 = self.layer1(self.maxpool(s2))
        s8 = self.layer2(s4)
        s16 = self.layer3(s8)
        return [s2, s4, s8, s16]
