"""The three AnomalousPatchCore training heads and their fixed Gaussian smoothing.

* ``ClassificationHead``: 3 x (conv 3x3, ReLU, max-pool 2) -> global max-pool -> FC -> ReLU -> FC,
  one logit per image (loss: BCE).
* ``SegmentationHead``: transposed conv (x2) -> Gaussian smoothing -> conv 3x3 -> one logit per pixel,
  upsampled to the input size (loss: pixel BCE against the mask; ``torch.sigmoid`` gives the map).
* ``ReconstructionHead``: transposed conv (x2) -> 2 x (Gaussian smoothing, conv 3x3, LeakyReLU) -> RGB in
  0..1, upsampled to the input size (loss: MSE against the input image).

The segmentation and reconstruction heads work at stride 2 and upsample their 1- or 3-channel output to the
input size at the end: full-resolution convolutions would cost more than the whole MobileNetV2 encoder.
Heads exist only during fine-tuning; nothing of them is exported.

Example::

    head = SegmentationHead(in_channels=48)
    logits = head(torch.zeros(2, 48, 56, 56), out_hw=(224, 224))     # (2, 1, 224, 224)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

HEAD_CHANNELS = 16
CLS_CHANNELS = 64


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalized 2-D Gaussian of size ``2 * ceil(2 * sigma) + 1``."""
    radius = max(1, math.ceil(2 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


class GaussianSmoothing(nn.Module):
    """Fixed (not trained) depthwise Gaussian blur with reflect padding; shape-preserving.

    Example::

        GaussianSmoothing(16, sigma=1.0)(torch.zeros(1, 16, 32, 32)).shape   # (1, 16, 32, 32)
    """

    def __init__(self, channels: int, sigma: float = 1.0):
        super().__init__()
        k = gaussian_kernel(sigma)
        self.channels, self.pad = channels, k.shape[-1] // 2
        self.register_buffer("kernel", k.expand(channels, 1, *k.shape).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad,) * 4, mode="reflect")
        return F.conv2d(x, self.kernel, groups=self.channels)


def up_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """Transposed conv doubling the resolution, then BatchNorm and ReLU."""
    return nn.Sequential(nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class ClassificationHead(nn.Module):
    """Image-level anomaly logit from a decoder feature map (any size >= 1 px after three halvings).

    Example::

        ClassificationHead(64)(torch.zeros(2, 64, 28, 28)).shape    # (2,)
    """

    def __init__(self, in_channels: int, channels: int = CLS_CHANNELS, hidden: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(3):
            layers += [nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2, ceil_mode=True)]
            c = channels
        self.features = nn.Sequential(*layers)
        # Global max-pool: one anomalous region is enough to call the image anomalous, and the FC layers
        # then see a fixed size at any input resolution.
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_max_pool2d(self.features(x), 1))[:, 0]


class _UpHead(nn.Module):
    """Shared front of the pixel heads: transposed conv x2, optional skip concatenation."""

    def __init__(self, in_channels: int, skip_channels: int, channels: int):
        super().__init__()
        self.up = up_block(in_channels, channels)
        self.out_channels = channels + skip_channels

    def front(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = torch.cat([x, skip], dim=1)
        return x


class SegmentationHead(_UpHead):
    """Per-pixel anomaly logits ``(N, 1, *out_hw)``; ``skip`` is the stride-2 encoder stage (U-Net4) or None."""

    def __init__(self, in_channels: int, skip_channels: int = 0, channels: int = HEAD_CHANNELS, sigma: float = 1.0):
        super().__init__(in_channels, skip_channels, channels)
        self.smooth = GaussianSmoothing(self.out_channels, sigma)
        self.out = nn.Conv2d(self.out_channels, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, out_hw: tuple[int, int], skip: torch.Tensor | None = None) -> torch.Tensor:
        y = self.out(self.smooth(self.front(x, skip)))
        return F.interpolate(y, size=out_hw, mode="bilinear", align_corners=False)


class ReconstructionHead(_UpHead):
    """The input image rebuilt as RGB in 0..1, ``(N, 3, *out_hw)``."""

    def __init__(self, in_channels: int, skip_channels: int = 0, channels: int = HEAD_CHANNELS, sigma: float = 1.0):
        super().__init__(in_channels, skip_channels, channels)
        c = self.out_channels
        self.body = nn.Sequential(
            GaussianSmoothing(c, sigma), nn.Conv2d(c, channels, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
            GaussianSmoothing(channels, sigma), nn.Conv2d(channels, 3, 3, padding=1), nn.LeakyReLU(0.1),
        )

    def forward(self, x: torch.Tensor, out_hw: tuple[int, int], skip: torch.Tensor | None = None) -> torch.Tensor:
        y = self.body(self.front(x, skip))
        return F.interpolate(y, size=out_hw, mode="bilinear", align_corners=False)
