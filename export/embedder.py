"""PatchCore's locally aware patch features as one torch module (the exported graph).

image (N, 3, H, W) -> backbone stages -> two levels (stride 8 and 16)
-> p x p average aggregation (zero padding counted at the border, as in the
PatchCore reference code: border patches are damped) -> upsample the coarser
level -> concatenate
-> optional fixed channel reduction to ``dim`` -> (N, D, H/8, W/8).

Example::

    embedder = PatchEmbedder(build_backbone("mobilenet_v2"))
    emb = embedder(torch.from_numpy(pre(frame)))        # (1, 128, 28, 28)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def channel_average_matrix(in_dim: int, out_dim: int) -> torch.Tensor:
    """(out_dim, in_dim) matrix averaging contiguous channel groups, like adaptive average pooling."""
    m = torch.zeros(out_dim, in_dim)
    for j in range(out_dim):
        start = (j * in_dim) // out_dim
        end = -((-(j + 1) * in_dim) // out_dim)
        m[j, start:end] = 1.0 / (end - start)
    return m


AGGREGATION_PADDINGS = ("zeros", "valid")


class PatchEmbedder(nn.Module):
    """Backbone + PatchCore patch aggregation; output is the patch embedding map.

    ``padding`` decides what the p x p average sees past the image border:
    ``"zeros"`` (default; PatchCore's reference code and anomalib) averages over
    all p x p cells, padding included, so edge and corner patches shrink toward
    zero and score lower; ``"valid"`` averages only the cells inside the image.
    On magnetic_tile, whose tiles vary most at their edges, ``"valid"`` lost 0.10
    image AUROC (docs/accuracy.md, "Why our defaults lost").
    """

    def __init__(self, backbone: nn.Module, levels: tuple[int, int] | None = None, patch_size: int = 3,
                 dim: int | None = None, padding: str = "zeros"):
        super().__init__()
        if padding not in AGGREGATION_PADDINGS:
            raise ValueError(f"aggregation padding must be one of {AGGREGATION_PADDINGS}, got {padding!r}")
        self.padding = padding
        self.backbone = backbone
        self.levels = tuple(levels or backbone.default_levels)
        self.patch_size = patch_size
        in_dim = sum(backbone.stage_channels[i] for i in self.levels)
        self.dim = dim if dim and dim < in_dim else in_dim
        if self.dim < in_dim:
            self.register_buffer("reduce", channel_average_matrix(in_dim, self.dim)[:, :, None, None])
        else:
            self.reduce = None
        self.stride = backbone.stage_strides[self.levels[0]]

    def grid(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        """Patch-grid size for an input of ``input_hw``."""
        with torch.no_grad():
            out = self.forward(torch.zeros(1, 3, *input_hw))
        return int(out.shape[2]), int(out.shape[3])

    def aggregate(self, stages: list[torch.Tensor]) -> torch.Tensor:
        """Patch embeddings from backbone stage outputs."""
        p = self.patch_size
        feats = [F.avg_pool2d(stages[i], p, stride=1, padding=p // 2, count_include_pad=self.padding == "zeros")
                 for i in self.levels]
        size = feats[0].shape[-2:]
        feats = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        emb = torch.cat(feats, dim=1)
        if self.reduce is not None:
            emb = F.conv2d(emb, self.reduce)
        return emb

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aggregate(self.backbone(x))
