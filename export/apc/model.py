"""The AnomalousPatchCore training model: backbone encoder, U-Net decoder, task heads.

The backbones stop at stride 16 (PatchCore needs nothing deeper), so a small trained bottleneck block
(3x3 conv, stride 2) stands in for the deeper encoder stage. From there the decoder climbs back with
transposed convolutions, rebuilding feature maps shaped like the encoder stages::

    encoder  s2 ─ s4 ─ s8 ─ s16 ─ bottleneck (s32)
                              │        │
    Tconv1 (s32 -> s16, C16) ─┴─ skip s16          (unet2, unet4)
    Tconv2 (s16 -> s8,  C8)  ─── skip s8 ──> classification head   (unet2, unet4)
    Tconv3 (s8  -> s4,  C4)  ─── skip s4           (unet4 only)
          └──> segmentation head, reconstruction head (each: Tconv s4 -> s2, skip s2 in unet4)

"unet2" skips the stride-8 and stride-16 stages, exactly the two levels PatchCore takes its patch features
from, so every head's gradient reaches them directly; "unet4" skips all four stages (strides 2 to 16).
After fine-tuning only ``model.encoder`` (the backbone, torchvision key names) is kept.

Example::

    model = APCModel(build_backbone("mobilenet_v2"), tasks=("cls", "seg", "rec"), decoder="unet2")
    out = model(torch.zeros(2, 3, 224, 224))
    out["cls"].shape, out["seg"].shape, out["rec"].shape    # (2,), (2, 1, 224, 224), (2, 3, 224, 224)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .heads import ClassificationHead, ReconstructionHead, SegmentationHead, up_block

TASKS = ("cls", "seg", "rec")
# decoder name -> encoder stage indexes (0..3 = strides 2, 4, 8, 16) that are skip-connected
DECODERS = {"unet2": (3, 2), "unet4": (3, 2, 1, 0)}


def check_tasks(tasks) -> tuple[str, ...]:
    """Validate and order a task selection, e.g. ``["seg", "cls"]`` -> ``("cls", "seg")``."""
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"tasks must be a non-empty subset of {', '.join(TASKS)}; got {', '.join(tasks) or 'none'}")
    return tuple(t for t in TASKS if t in tasks)


def _match(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Resize ``x`` to ``ref``'s grid where odd input sizes made them differ by a pixel."""
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class APCModel(nn.Module):
    """Encoder (a ``FeatureBackbone``) + decoder + the heads of ``tasks``.

    ``forward(x)`` returns a dict with the outputs of the selected tasks: ``"cls"`` (N,) logits,
    ``"seg"`` (N, 1, H, W) logits, ``"rec"`` (N, 3, H, W) RGB in 0..1.

    ``freeze_bn=True`` keeps the encoder's BatchNorm layers on their stored running statistics in
    training mode too (their scale and shift still train): fine-tuning batches are tiny and half anomalous,
    so batch statistics would be noisy and would drift away from what PatchCore later sees in eval mode.
    """

    def __init__(self, backbone: nn.Module, tasks=TASKS, decoder: str = "unet2", freeze_bn: bool = True):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
        self.tasks = check_tasks(tasks)
        self.decoder = decoder
        self.freeze_bn = freeze_bn
        self.skips = DECODERS[decoder]
        c = tuple(backbone.stage_channels)
        self.encoder = backbone

        def skip_ch(stage: int) -> int:
            return c[stage] if stage in self.skips else 0

        self.bottleneck = nn.Sequential(nn.Conv2d(c[3], c[3], 3, stride=2, padding=1, bias=False),
                                        nn.BatchNorm2d(c[3]), nn.ReLU(inplace=True))
        self.tconv1 = up_block(c[3], c[3])
        self.tconv2 = up_block(c[3] + skip_ch(3), c[2])
        s8_ch = c[2] + skip_ch(2)
        self.cls_head = ClassificationHead(s8_ch) if "cls" in self.tasks else None
        pixel_tasks = {"seg", "rec"} & set(self.tasks)
        self.tconv3 = up_block(s8_ch, c[1]) if pixel_tasks else None
        s4_ch = c[1] + skip_ch(1)
        self.seg_head = SegmentationHead(s4_ch, skip_ch(0)) if "seg" in self.tasks else None
        self.rec_head = ReconstructionHead(s4_ch, skip_ch(0)) if "rec" in self.tasks else None

    def train(self, mode: bool = True) -> "APCModel":
        super().train(mode)
        if mode and self.freeze_bn:
            for m in self.encoder.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def decoder_parameters(self) -> list[nn.Parameter]:
        """Every trained parameter outside the encoder."""
        enc = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in enc]

    def _skip(self, x: torch.Tensor, stages: list[torch.Tensor], stage: int) -> torch.Tensor:
        x = _match(x, stages[stage])
        return torch.cat([x, stages[stage]], dim=1) if stage in self.skips else x

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out_hw = tuple(x.shape[-2:])
        stages = self.encoder(x)
        d = self._skip(self.tconv1(self.bottleneck(stages[3])), stages, 3)
        d8 = self._skip(self.tconv2(d), stages, 2)
        out: dict[str, torch.Tensor] = {}
        if self.cls_head is not None:
            out["cls"] = self.cls_head(d8)
        if self.tconv3 is not None:
            d4 = self._skip(self.tconv3(d8), stages, 1)
            skip2 = stages[0] if 0 in self.skips else None
            if self.seg_head is not None:
                out["seg"] = self.seg_head(d4, out_hw, skip2)
            if self.rec_head is not None:
                out["rec"] = self.rec_head(d4, out_hw, skip2)
        return out
