"""EfficientNet-Lite0, Lite1 and Lite2 cut after their stride-16 stage.

Lite0 is EfficientNet-B0 without squeeze-excitation, with ReLU6 instead of
swish, and a fixed 32-channel stem; Lite1 and Lite2 scale its depth (and
Lite2 its width) but keep the stem and the first stage. Module names follow
the layout of the offline ImageNet checkpoints (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` ...) so those files load unchanged. ``_blocks`` up to
the stride-16 stage:

    Lite0  block   0    1-2   3-4   5-7   8-10
    Lite1  block   0    1-3   4-6   7-10  11-14
    Lite2  block   0    1-3   4-6   7-10  11-14
           stride  2    4     8     16    16
    Lite0/1 ch     16   24    40    80    112
    Lite2   ch     16   24    48    88    120

The weights were trained in TensorFlow, hence two conventions kept here:
BatchNorm eps 1e-3 (momentum 0.01 in torch terms) and "SAME" padding, which
pads strided convolutions asymmetrically (the extra row/column at the
bottom/right) depending on the input size. When traced for ONNX export the
padding is fixed for the traced input size (constant pads in the graph), so an
exported graph is valid only at the height/width it was exported with.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .base import FeatureBackbone, init_random_weights_

BN_EPS = 1e-3
BN_MOMENTUM = 0.01
STEM_CHANNELS = 32

# Input scaling the checkpoint was trained with: (x - 127) / 128 on 0..255.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

# MBConv stages of EfficientNet-B0/Lite0: (expansion, kernel, stride of the
# first block, out channels, repeats). Only the stages up to stride 16.
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
)

# Each variant's stages up to stride 16 (as read from its ImageNet checkpoint: Lite1 and Lite2 repeat
# every stage but the first ceil(1.1 x) and ceil(1.2 x) times; Lite2 is 1.1 x wider, rounded to 8).
VARIANT_STAGES = {
    "efficientnet_lite0": STAGES,
    "efficientnet_lite1": ((1, 3, 1, 16, 1), (6, 3, 2, 24, 3), (6, 5, 2, 40, 3), (6, 3, 2, 80, 4), (6, 5, 1, 112, 4)),
    "efficientnet_lite2": ((1, 3, 1, 16, 1), (6, 3, 2, 24, 3), (6, 5, 2, 48, 3), (6, 3, 2, 88, 4), (6, 5, 1, 120, 4)),
}


def stage_ends(stages) -> tuple[int, ...]:
    """Index in ``_blocks`` after which each returned stage (strides 2, 4, 8, 16) ends.

    The stride-16 output is taken after the last listed stage, skipping the one before it.

    Example:
        >>> stage_ends(STAGES), stage_ends(VARIANT_STAGES["efficientnet_lite1"])
        ((0, 2, 4, 10), (0, 3, 6, 14))
    """
    ends, total = [], 0
    for *_, repeats in stages:
        total += repeats
        ends.append(total - 1)
    return ends[0], ends[1], ends[2], ends[4]


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with the TensorFlow-trained checkpoint's eps and momentum."""
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TensorFlow "SAME" for one spatial axis.

    Example:
        >>> same_padding(224, 3, 2), same_padding(225, 3, 2), same_padding(112, 5, 2)
        ((0, 1), (1, 1), (1, 2))
    """
    total = max(kernel - (stride if size % stride == 0 else size % stride), 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Bias-free Conv2d with TensorFlow "SAME" padding (output = ceil(input / stride)).

    Stride 1 with an odd kernel pads symmetrically, which plain ``padding=k//2``
    does. Strided convolutions pad ``k - stride`` (input divisible by the stride)
    or ``k - input % stride`` in total, the smaller half before: for a
    stride-2 3x3 conv on an even input that is 0 rows on top, 1 at the bottom.

    Example:
        >>> SameConv2d(3, 8, 3, stride=2)(torch.zeros(1, 3, 15, 16)).shape
        torch.Size([1, 8, 8, 8])
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        padding = kernel // 2 if stride == 1 else 0
        super().__init__(in_ch, out_ch, kernel, stride, padding, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == (1, 1):
            return super().forward(x)
        height, width = x.shape[-2:]
        if torch.jit.is_tracing():
            # Bake the padding of the traced input size into the exported graph
            # as constants (a plain Pad) instead of shape arithmetic.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                height, width = int(height), int(width)
        top, bottom = same_padding(height, self.kernel_size[0], self.stride[0])
        left, right = same_padding(width, self.kernel_size[1], self.stride[1])
        return super().forward(F.pad(x, (left, right, top, bottom)))


class MBConvBlock(nn.Module):
    """Lite mobile inverted bottleneck: [1x1 expand] -> kxk depthwise -> 1x1 project.

    ReLU6 after the expand and depthwise BatchNorms, none after the projection;
    identity shortcut when stride is 1 and channels are unchanged.

    Example:
        >>> MBConvBlock(24, 40, kernel=5, stride=2, expand_ratio=6)(torch.zeros(1, 24, 16, 16)).shape
        torch.Size([1, 40, 8, 8])
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_ch * expand_ratio
        self.has_expansion = expand_ratio != 1
        if self.has_expansion:
            self._expand_conv = SameConv2d(in_ch, hidden, 1)
            self._bn0 = batch_norm(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = batch_norm(hidden)
        self._project_conv = SameConv2d(hidden, out_ch, 1)
        self._bn2 = batch_norm(out_ch)
        self._act = nn.ReLU6(inplace=True)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._act(self._bn0(self._expand_conv(x))) if self.has_expansion else x
        y = self._act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.use_residual else y


def build_blocks(stages=STAGES, in_ch: int = STEM_CHANNELS) -> nn.ModuleList:
    """The ``_blocks`` list for ``stages`` (first block of a stage carries its stride)."""
    blocks = nn.ModuleList()
    for expand, kernel, stride, out_ch, repeats in stages:
        for i in range(repeats):
            blocks.append(MBConvBlock(in_ch, out_ch, kernel, stride if i == 0 else 1, expand))
            in_ch = out_ch
    return blocks


class EfficientNetLiteFeatures(FeatureBackbone):
    """EfficientNet-Lite stages at strides 2/4/8/16 (Lite0 and Lite1: 16/24/40/112 channels, Lite2: 16/24/48/120).

    Example:
        >>> bb = EfficientNetLiteFeatures("efficientnet_lite2")
        >>> [f.shape[1:] for f in bb(torch.zeros(1, 3, 64, 64))][-1]
        torch.Size([120, 4, 4])
    """

    truncated_sequence = "_blocks"

    def __init__(self, name: str = "efficientnet_lite0") -> None:
        stages = VARIANT_STAGES[name]
        channels = tuple(stages[i][3] for i in (0, 1, 2, 4))
        super().__init__(name, channels, LITE_MEAN, LITE_STD)
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = batch_norm(STEM_CHANNELS)
        self._blocks = build_blocks(stages)
        self._act = nn.ReLU6(inplace=True)
        self.stage_ends = stage_ends(stages)
        init_random_weights_(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self._act(self._bn0(self._conv_stem(x)))
        outs = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in self.stage_ends:
                outs.append(x)
        return outs
