"""Basic augmentations applied identically to an image and its mask.

Mirror left/right and up/down, rotate by a multiple of 90 degrees (square inputs only), and a mild
brightness/contrast change of the image. Each piece can be switched off; switch the geometric ones off for
parts whose orientation matters (a mirrored part may itself be a defect).

Example::

    aug = BasicAugment()
    image, mask = aug(image, mask, np.random.default_rng(0))
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BasicAugment:
    flips: bool = True
    rot90: bool = True
    photometric: bool = True
    brightness: float = 12.0            # +- grey levels
    contrast: float = 0.1               # +- relative

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (H, W, 3) image and bool (H, W) mask -> augmented copies."""
        if self.flips:
            if rng.random() < 0.5:
                image, mask = image[:, ::-1], mask[:, ::-1]
            if rng.random() < 0.5:
                image, mask = image[::-1], mask[::-1]
        if self.rot90 and image.shape[0] == image.shape[1]:
            k = int(rng.integers(4))
            image, mask = np.rot90(image, k), np.rot90(mask, k)
        if self.photometric:
            a = 1.0 + rng.uniform(-self.contrast, self.contrast)
            b = rng.uniform(-self.brightness, self.brightness)
            image = np.clip(image.astype(np.float32) * a + b, 0, 255).round().astype(np.uint8)
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)
