"""Anomalies for the INT8 accuracy guard when the user has none: CutPaste made from the training goods.

INT8 activation ranges are calibrated on good images, so what a compressed graph loses shows first on
unusual content, which good images never have. Each synthetic anomaly takes a random rectangle (2 to
10 % of the image, aspect 1:3 to 3:1) from one good image and pastes it, mirrored and colour-jittered,
at a random place of another (Li et al., "CutPaste", CVPR 2021: the self-supervised version of the
real-defect CutPaste the AnomalousPatchCore fine-tuning uses).

Example::

    images = cutpaste_anomalies(bank_paths, n=30, seed=0)   # uint8 mono/BGR arrays, like load_image
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from apc_edge.preprocess import load_image

from .apc.cutpaste import cut_paste

AREA_SHARE = (0.02, 0.10)
ASPECT = (1 / 3, 3.0)


def _rectangle_mask(hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = hw
    area = rng.uniform(*AREA_SHARE) * h * w
    aspect = math.exp(rng.uniform(math.log(ASPECT[0]), math.log(ASPECT[1])))
    rh = int(np.clip(round(math.sqrt(area * aspect)), 2, h))
    rw = int(np.clip(round(area / max(rh, 1)), 2, w))
    top, left = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
    mask = np.zeros((h, w), bool)
    mask[top:top + rh, left:left + rw] = True
    return mask


def _to_rgb(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def cutpaste_anomalies(paths: list[Path], n: int, seed: int = 0, bit_depth: int = 16) -> list[np.ndarray]:
    """``n`` synthetic uint8 anomalies from the good images at ``paths``, each the size of its target; 16-bit
    files are brought to 8 bits from ``bit_depth`` bits (``Preprocessor.uint16_bits``). The patch comes from
    another image, or, when there is only one, from elsewhere in the same image.

    A mono target stays mono (the pasted rectangle is brightness-jittered only), so the anomalies go
    through the same preprocessing as the goods.
    """
    if not paths:
        raise ValueError("synthetic anomalies need at least one good image")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(int(n)):
        t, s = rng.choice(len(paths), 2, replace=False) if len(paths) > 1 else (0, 0)
        target = load_image(paths[int(t)], bit_depth)
        source = load_image(paths[int(s)], bit_depth)
        if source.shape[:2] != target.shape[:2]:
            source = cv2.resize(source, (target.shape[1], target.shape[0]), interpolation=cv2.INTER_AREA)
        rgb, _ = cut_paste(_to_rgb(target), _to_rgb(source), _rectangle_mask(target.shape[:2], rng), rng)
        out.append(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if target.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return out
