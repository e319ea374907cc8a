"""CLIP's modified ResNets (RN50, RN101, RN50x4, RN50x16, RN50x64) cut after ``layer3`` (stride 16).

What differs from a torchvision ResNet (Radford et al. 2021, and the official model code):

* a stem of three 3x3 convolutions (``conv1`` stride 2, ``conv2``, ``conv3``, each with its BatchNorm and
  ReLU) followed by a 2x2 average pool instead of a max pool;
* anti-aliased strided bottlenecks: the 3x3 convolution keeps stride 1 and a 2x2 average pool follows it,
  and the shortcut pools before its 1x1 convolution (``downsample.-1`` pool, ``.0`` conv, ``.1`` bn);
* the attention pool (``attnpool``) and ``layer4`` are not built: PatchCore reads stride 8 and 16.

The pools round up (``ceil_mode``), so an odd-sized input gives the same patch grid as the other backbones
(an ensemble needs that); on even sizes, which the input plan always picks, this is exactly CLIP's model.

Module names follow the official checkpoints (``visual.`` stripped by the loader, the text tower ignored),
so a user's CLIP state dict loads by path: ``build_backbone("clip_rn50", weights="RN50_visual.pt")``.
No CLIP weights ship offline. Inputs are normalized with CLIP's own mean and std.

Stages: stride 2 = the stem before its pool (``width`` channels), stride 4 = ``layer1``, stride 8 =
``layer2``, stride 16 = ``layer3``.

Example:
    >>> bb = ClipResNetFeatures("clip_rn50")
    >>> bb.stage_channels
    (64, 256, 512, 1024)
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .base import FeatureBackbone, init_random_weights_

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# name -> (blocks in layer1..layer3, stem width); layer4's depth does not matter here
CLIP_CONFIGS = {
    "clip_rn50": ((3, 4, 6), 64),
    "clip_rn101": ((3, 4, 23), 64),
    "clip_rn50x4": ((4, 6, 10), 80),
    "clip_rn50x16": ((6, 8, 18), 96),
    "clip_rn50x64": ((3, 15, 36), 128),
}


class ClipBottleneck(nn.Module):
    """1x1 -> 3x3 -> (2x2 average pool when strided) -> 1x1 to ``4 * planes``, shortcut pooled first.

    Example:
        >>> ClipBottleneck(256, 128, stride=2)(torch.zeros(1, 256, 8, 8)).shape
        torch.Size([1, 512, 4, 4])
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride, ceil_mode=True) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride, ceil_mode=True)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        return self.relu3(out + identity)


class ClipResNetFeatures(FeatureBackbone):
    """A CLIP modified ResNet up to ``layer3``; ``name`` is a key of ``CLIP_CONFIGS``."""

    def __init__(self, name: str) -> None:
        depths, width = CLIP_CONFIGS[name]
        channels = (width, width * 4, width * 8, width * 16)
        super().__init__(name, channels, CLIP_MEAN, CLIP_STD)
        half = width // 2
        self.conv1 = nn.Conv2d(3, half, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(half, half, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(half, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2, ceil_mode=True)
        inplanes = width
        layers = []
        for index, (blocks, stride) in enumerate(zip(depths, (1, 2, 2))):
            planes = width * 2 ** index
            stage = [ClipBottleneck(inplanes, planes, stride)]
            inplanes = planes * ClipBottleneck.expansion
            stage += [ClipBottleneck(inplanes, planes) for _ in range(blocks - 1)]
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3 = layers
        init_random_weights_(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        s2 = self.relu3(self.bn3(self.conv3(x)))
        s4 = self.layer1(self.avgpool(s2))
        s8 = self.layer2(s4)
        return [s2, s4, s8, self.layer3(s8)]
