"""The fine-tuning data: good images and a few real anomalies, in balanced batches.

Every image goes through the project's one ``Preprocessor`` (resize, crop, colour order) once, and is kept
in memory as uint8 RGB at the model-input size; masks go through ``Preprocessor.to_input_canvas``. Batches
are half good, half anomalous (the few anomalies are oversampled). An anomalous slot holds either a real
anomaly or, with probability ``cutpaste_share``, a CutPaste image: a real defect moved onto a good image.
Basic augmentations then apply to every sample. ``to_input`` turns uint8 RGB back into the normalized
tensor with the same arithmetic as ``Preprocessor.batch``, so an unaugmented sample equals ``pre(frame)``.

Example::

    ds = FewShotTrainSet(good_paths, selection.samples, pre)
    x, masks, labels = ds.batch(8, np.random.default_rng(0))    # (8,3,H,W), (8,1,H,W), (8,)
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from apc_edge.calibration.dataset import Sample
from apc_edge.preprocess import Preprocessor, load_image

from .augment import BasicAugment
from .cutpaste import cut_paste


def rgb_input(pre: Preprocessor, frame: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) at the model-input size: ``pre(frame)`` with the mean/std undone (exact)."""
    x = pre(frame)[0].transpose(1, 2, 0)
    rgb = x * np.asarray(pre.std, np.float32) + np.asarray(pre.mean, np.float32)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def to_input(pre: Preprocessor, images: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 RGB images at the input size -> (N, 3, H, W) float32, normalized as ``Preprocessor.batch`` does."""
    out = np.empty((len(images), 3, *pre.input_hw), np.float32)
    for i, rgb in enumerate(images):
        out[i] = pre.normalize_rgb(rgb)
    return out


def input_mask(pre: Preprocessor, mask: np.ndarray) -> np.ndarray:
    """A frame-sized bool mask on the model-input grid: pixels at least half covered by the defect, or, for
    defects too small to cover half a pixel after downscaling, every pixel they touch."""
    cover = pre.to_input_canvas(mask.astype(np.float32))
    return cover >= 0.5 if (cover >= 0.5).any() else cover > 0


class FewShotTrainSet:
    """Balanced batches of good images and (real or CutPaste) anomalies, with masks and labels."""

    def __init__(self, good_paths: Sequence[str | Path], anomalies: Sequence[Sample], pre: Preprocessor,
                 cutpaste: bool = True, augment: bool = True, cutpaste_share: float = 0.5):
        if not good_paths:
            raise ValueError("fine-tuning needs good images (train/good is empty)")
        if not anomalies:
            raise ValueError("fine-tuning needs at least one anomalous image")
        self.pre = pre
        self.goods, self.good_regions = [], []
        for p in good_paths:
            frame = load_image(p)
            self.goods.append(rgb_input(pre, frame))
            self.good_regions.append(pre.placement(frame.shape) if pre.mode == "pad" else None)
        self.anomalies, self.masks = [], []       # a mask of None: not known (the image trains cls and rec only)
        for s in anomalies:
            frame = load_image(s.path)
            mask = None
            if s.mask_path is not None:
                mask = input_mask(pre, s.load_mask(frame.shape[:2]))
                if not mask.any():
                    raise ValueError(f"the mask of {s.key} is empty; AnomalousPatchCore needs the defect's pixels")
            self.anomalies.append(rgb_input(pre, frame))
            self.masks.append(mask)
        self.masked = [j for j, m in enumerate(self.masks) if m is not None]     # CutPaste sources
        self.cutpaste = cutpaste
        self.cutpaste_share = cutpaste_share
        self.augment = BasicAugment() if augment else None
        self.empty_mask = np.zeros(pre.input_hw, bool)

    def anomalous_sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        """An anomalous image and its mask (None: not known)."""
        j = int(rng.integers(len(self.anomalies)))
        if self.cutpaste and self.masked and rng.random() < self.cutpaste_share:
            j = self.masked[int(rng.integers(len(self.masked)))]
            i = int(rng.integers(len(self.goods)))
            return cut_paste(self.goods[i], self.anomalies[j], self.masks[j], rng, within=self.good_regions[i])
        return self.anomalies[j], self.masks[j]

    def batch(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``batch_size // 2`` good samples (at least one) and the rest anomalous, shuffled. An anomaly whose
        mask is not known gets a mask of -1 everywhere (``train.task_losses`` leaves it out of the seg loss)."""
        n_good = max(1, batch_size // 2)
        images, masks, labels = [], [], []
        for i in range(batch_size):
            if i < n_good:
                img, mask, label = self.goods[int(rng.integers(len(self.goods)))], self.empty_mask, 0.0
            else:
                (img, mask), label = self.anomalous_sample(rng), 1.0
            known = mask is not None
            mask = mask if known else self.empty_mask
            if self.augment is not None:
                img, mask = self.augment(img, mask, rng)
            images.append(img)
            masks.append(mask.astype(np.float32) if known else np.full(mask.shape, -1.0, np.float32))
            labels.append(label)
        order = rng.permutation(batch_size)
        x = torch.from_numpy(to_input(self.pre, [images[i] for i in order]))
        m = torch.from_numpy(np.stack([masks[i] for i in order])[:, None])
        y = torch.tensor([labels[i] for i in order], dtype=torch.float32)
        return x, m, y
