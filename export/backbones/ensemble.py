"""Several backbones run side by side on one image, their stage outputs concatenated.

This is the concatenated-embedding form of the PatchCore paper's backbone
ensemble: each patch's feature holds every member's stride-8 and stride-16
features, so one memory bank, one exported graph and one nearest-neighbour
search serve the whole ensemble. The members may expect different input
normalizations: the ensemble takes the first member's and converts for the
others inside the graph (a per-channel affine map).

Its name is the members' names joined by ``+`` (``"mobilenet_v2+efficientnet_lite0"``),
and its state dict keys are ``members.<i>.<member key>`` plus ``member_scales``.

Members' activations differ in size (EfficientNet-Lite's are several times
MobileNetV2's), and the larger one would decide every distance alone. Each
member's outputs are therefore multiplied by its entry of ``member_scales``,
set by training (``embedder.balance_ensemble``) so that every member adds the
same variance to the patch embedding on the training images as the first one.

Example:
    >>> import torch
    >>> from apc_edge.export.backbones import build_backbone
    >>> bb = build_backbone("mobilenet_v2+efficientnet_lite0", weights="random").eval()
    >>> bb.stage_channels
    (32, 48, 72, 208)
    >>> [tuple(f.shape[1:]) for f in bb(torch.zeros(1, 3, 64, 64))][-1]
    (208, 4, 4)
"""

from __future__ import annotations

import torch
from torch import nn

from .base import BackboneError, FeatureBackbone

SEPARATOR = "+"


class EnsembleFeatures(FeatureBackbone):
    """Concatenation, stage by stage, of the outputs of ``members`` (same stage strides)."""

    def __init__(self, members: list[FeatureBackbone]) -> None:
        if len(members) < 2:
            raise BackboneError(f"an ensemble needs at least two backbones, got {len(members)}")
        strides = {tuple(m.stage_strides) for m in members}
        if len(strides) != 1:
            raise BackboneError(f"ensemble members have different stage strides: {sorted(strides)}")
        channels = tuple(sum(m.stage_channels[i] for m in members) for i in range(4))
        first = members[0]
        super().__init__(SEPARATOR.join(m.name for m in members), channels, first.input_mean, first.input_std)
        self.stage_strides = first.stage_strides
        self.members = nn.ModuleList(members)
        self.register_buffer("member_scales", torch.ones(len(members)))
        # x_m = (x * std_0 + mean_0 - mean_m) / std_m: member m's normalization from the first one's
        std0, mean0 = torch.tensor(first.input_std), torch.tensor(first.input_mean)
        for index, member in enumerate(members[1:], start=1):
            std_m, mean_m = torch.tensor(member.input_std), torch.tensor(member.input_mean)
            self.register_buffer(f"gain{index}", (std0 / std_m).view(1, 3, 1, 1), persistent=False)
            self.register_buffer(f"offset{index}", ((mean0 - mean_m) / std_m).view(1, 3, 1, 1), persistent=False)

    # checkpoints saved before the member scales existed load with scales of 1 (what they computed)
    defaulted_keys = ("member_scales",)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = [self.members[0](x)]
        for index in range(1, len(self.members)):
            outputs.append(self.members[index](x * getattr(self, f"gain{index}") + getattr(self, f"offset{index}")))
        return [torch.cat([out[i] * self.member_scales[m] for m, out in enumerate(outputs)], dim=1) for i in range(4)]

    def member_channels(self, levels: tuple[int, ...]) -> list[torch.Tensor]:
        """Each member's channel indices in the concatenation of stages ``levels`` (as the embedder builds it).

        Example:
            >>> from apc_edge.export.backbones import build_backbone
            >>> [idx.tolist()[:2] for idx in build_backbone("mobilenet_v2+efficientnet_lite0", "random").member_channels((2, 3))]
            [[0, 1], [32, 33]]
        """
        owners = []
        for level in levels:
            for m, member in enumerate(self.members):
                owners += [m] * member.stage_channels[level]
        owners = torch.tensor(owners)
        return [torch.nonzero(owners == m).flatten() for m in range(len(self.members))]


def member_names(name: str) -> list[str]:
    """``"a+b"`` -> ``["a", "b"]``; a plain name -> ``[name]``."""
    return [part.strip() for part in name.split(SEPARATOR)]
