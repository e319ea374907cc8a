"""PatchCore's locally aware patch features as one torch module (the exported graph).

image (N, 3, H, W) -> backbone stages -> two levels (stride 8 and 16)
-> each cell's channel vector v divided by sqrt(|v|^2 + c^2), c per level (``stage_norm``)
-> p x p average aggregation (zero padding counted at the border, as in the
PatchCore reference code: border patches are damped) -> upsample the coarser
level -> concatenate
-> optional fixed channel reduction to ``dim`` -> (N, D, H/8, W/8).

Example::

    embedder = PatchEmbedder(build_backbone("mobilenet_v2"))
    emb = embedder(torch.from_numpy(pre(frame)))        # (1, 128, 28, 28)
"""
from __future__ import annotations

import math

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
STAGE_NORMS = ("soft", "l2", "none")
STAGE_NORM_EPS = 1e-6      # the floor of "l2": a cell of zeros stays zeros


class PatchEmbedder(nn.Module):
    """Backbone + PatchCore patch aggregation; output is the patch embedding map.

    ``padding`` decides what the p x p average sees past the image border:
    ``"zeros"`` (default; PatchCore's reference code and anomalib) averages over
    all p x p cells, padding included, so edge and corner patches shrink toward
    zero and score lower; ``"valid"`` averages only the cells inside the image.
    On magnetic_tile, whose tiles vary most at their edges, ``"valid"`` lost 0.10
    image AUROC (docs/accuracy.md, "Why our defaults lost").

    ``stage_norm`` decides what each level's cells carry into that average: each cell's channel vector
    ``v`` becomes ``v / sqrt(|v|^2 + c^2)``. ``"soft"`` (``apc-train``'s default; this class defaults to
    ``"none"``) takes ``c`` per level from the training images (``floors``: the median cell norm,
    :meth:`measure_floors`), so cells stronger than a typical one
    are compared by the pattern of their activations more than by their strength, weaker cells keep their
    strength, and the two levels weigh alike; ``"l2"`` (``c`` = 0) scales every cell to unit length;
    ``"none"`` averages the raw activations, as the PatchCore paper does. On magnetic_tile "soft" raised
    image AUROC from 0.947 to 0.974 and "l2" to 0.980, but "l2" localized worse (pixel AUROC 0.783
    against 0.803; docs/accuracy.md, "Each level's cells, normalized").
    """

    def __init__(self, backbone: nn.Module, levels: tuple[int, int] | None = None, patch_size: int = 3,
                 dim: int | None = None, padding: str = "zeros", stage_norm: str = "none",
                 floors: list[float] | None = None):
        super().__init__()
        if padding not in AGGREGATION_PADDINGS:
            raise ValueError(f"aggregation padding must be one of {AGGREGATION_PADDINGS}, got {padding!r}")
        if stage_norm not in STAGE_NORMS:
            raise ValueError(f"stage norm must be one of {STAGE_NORMS}, got {stage_norm!r}")
        self.padding = padding
        self.stage_norm = stage_norm
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
        self.floors: list[float] | None = None
        if stage_norm == "soft" and floors is not None:
            self.set_floors(floors)

    def set_floors(self, floors: list[float]) -> None:
        """The ``c`` of each level for ``stage_norm="soft"`` (finite, positive: one per level)."""
        floors = [float(c) for c in floors]
        if len(floors) != len(self.levels) or not all(math.isfinite(c) and c > 0 for c in floors):
            raise ValueError(f"stage norm floors must be {len(self.levels)} finite positive numbers, got {floors}")
        self.floors = floors

    def measure_floors(self, images: torch.Tensor) -> list[float]:
        """Set and return the ``"soft"`` floors: each level's median cell norm on ``images``, a batch of
        preprocessed training images, rounded to 6 decimals (as ``run.json`` keeps them).

        Example:
            >>> emb = PatchEmbedder(build_backbone("mobilenet_v2"), stage_norm="soft").eval()
            >>> emb.measure_floors(torch.from_numpy(pre.batch(training_images)))     # e.g. [2.76, 3.02]
        """
        with torch.no_grad():
            stages = self.backbone(images)
        self.set_floors([round(float(stages[i].norm(dim=1).median()), 6) for i in self.levels])
        return self.floors

    def _norm_cells(self, cells: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.stage_norm == "none":
            return cells
        if self.stage_norm == "soft" and self.floors is None:
            raise ValueError("stage_norm 'soft' needs its floors: call measure_floors on training images")
        floors = self.floors if self.stage_norm == "soft" else [STAGE_NORM_EPS] * len(cells)
        return [c * torch.rsqrt((c * c).sum(dim=1, keepdim=True) + f * f) for c, f in zip(cells, floors)]

    def grid(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        """Patch-grid size for an input of ``input_hw``."""
        with torch.no_grad():
            out = self.forward(torch.zeros(1, 3, *input_hw))
        return int(out.shape[2]), int(out.shape[3])

    def aggregate(self, stages: list[torch.Tensor], reduce: bool = True, norm: bool = True) -> torch.Tensor:
        """Patch embeddings from backbone stage outputs (``reduce=False``: before the channel reduction;
        ``norm=False``: of the raw cells, whatever ``stage_norm`` is)."""
        p = self.patch_size
        cells = [stages[i] for i in self.levels]
        cells = self._norm_cells(cells) if norm else cells
        feats = [F.avg_pool2d(c, p, stride=1, padding=p // 2, count_include_pad=self.padding == "zeros")
                 for c in cells]
        size = feats[0].shape[-2:]
        feats = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        emb = torch.cat(feats, dim=1)
        if reduce and self.reduce is not None:
            emb = F.conv2d(emb, self.reduce)
        return emb

    def balance_ensemble(self, images: torch.Tensor) -> list[float] | None:
        """Scale an ensemble backbone's members so each adds as much variance to the embedding as the first.

        ``images``: a batch of preprocessed training images. The variance of each member's share of the
        patch embedding (summed over its channels, over every patch of ``images``) is measured with unit
        scales; member m then gets ``sqrt(var_0 / var_m)``, so the first member's features, and the
        size of the scores, stay as they were. Returns the scales, or None for a single backbone.

        Example:
            >>> emb = PatchEmbedder(build_backbone("mobilenet_v2+efficientnet_lite0")).eval()
            >>> scales = emb.balance_ensemble(torch.randn(4, 3, 128, 128))
            >>> scales[0], scales[1] < 1                                # Lite0's activations are larger
            (1.0, True)
        """
        backbone = self.backbone
        if not hasattr(backbone, "member_channels"):
            return None
        backbone.member_scales.fill_(1.0)
        with torch.no_grad():
            emb = self.aggregate(backbone(images), reduce=False, norm=False)
        variance = emb.transpose(0, 1).reshape(emb.shape[1], -1).double().var(dim=1)
        totals = [float(variance[channels].sum()) for channels in backbone.member_channels(self.levels)]
        if not all(total > 0 for total in totals):
            raise ValueError(f"an ensemble member's features do not vary on the training images (variances {totals})")
        scales = [(totals[0] / total) ** 0.5 for total in totals]
        backbone.member_scales.copy_(torch.tensor(scales, dtype=backbone.member_scales.dtype))
        return scales

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aggregate(self.backbone(x))
