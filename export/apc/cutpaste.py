"""CutPaste from real anomalies: move a masked defect onto a good image, mask and all.

The defect's pixels (where its mask is set, inside the mask's bounding box) are colour-jittered and pasted
at a random position of the good image; the returned mask is set exactly at the pasted pixels and every
other pixel of the good image stays unchanged.

Example::

    rng = np.random.default_rng(0)
    image, mask = cut_paste(good_rgb, defect_rgb, defect_mask, rng)    # uint8 (H, W, 3), bool (H, W)
"""
from __future__ import annotations

import cv2
import numpy as np


def jitter_colour(rgb: np.ndarray, rng: np.random.Generator, hue: int = 6,
                  saturation: tuple[float, float] = (0.7, 1.3),
                  value: tuple[float, float] = (0.8, 1.2)) -> np.ndarray:
    """Random hue shift (OpenCV hue units of 2 degrees), saturation and brightness scaling of uint8 RGB.

    Grey pixels stay grey (saturation 0 is scaled to 0), so on mono parts only brightness changes.
    """
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.integers(-hue, hue + 1)) % 180
    hsv[..., 1] *= rng.uniform(*saturation)
    hsv[..., 2] *= rng.uniform(*value)
    hsv = np.clip(np.rint(hsv), 0, [179, 255, 255]).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the bounding box of a non-empty bool mask."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ValueError("CutPaste needs a defect mask with at least one set pixel; this mask is empty")
    top, left = int(ys.min()), int(xs.min())
    return top, left, int(ys.max()) - top + 1, int(xs.max()) - left + 1


def cut_paste(target: np.ndarray, source: np.ndarray, source_mask: np.ndarray, rng: np.random.Generator,
              jitter: bool = True, flip: bool = True,
              within: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Paste the masked defect of ``source`` onto a copy of ``target``; returns (image, mask).

    ``target`` and ``source`` are uint8 (H, W, 3) images of the same size, ``source_mask`` a bool (H, W)
    mask. The defect may be mirrored (``flip``) and colour-jittered (``jitter``) before pasting. ``within``
    (top, left, height, width) keeps the paste inside that box of ``target`` (the part itself when it is
    padded onto a canvas); a defect larger than the box is cut to it.
    """
    if target.shape != source.shape or source_mask.shape != source.shape[:2]:
        raise ValueError(f"CutPaste needs target, source and mask of one size; got {target.shape}, "
                         f"{source.shape} and {source_mask.shape}")
    top, left, h, w = mask_box(source_mask)
    patch = source[top:top + h, left:left + w]
    pmask = source_mask[top:top + h, left:left + w].astype(bool)
    if flip and rng.random() < 0.5:
        patch, pmask = patch[:, ::-1], pmask[:, ::-1]
    if jitter:
        patch = jitter_colour(np.ascontiguousarray(patch), rng)
    H, W = target.shape[:2]
    bt, bl, bh, bw = within if within is not None else (0, 0, H, W)
    h, w = min(h, bh), min(w, bw)
    patch, pmask = patch[:h, :w], pmask[:h, :w]
    y = bt + int(rng.integers(0, bh - h + 1))
    x = bl + int(rng.integers(0, bw - w + 1))
    image = target.copy()
    mask = np.zeros((H, W), bool)
    region = image[y:y + h, x:x + w]
    region[pmask] = patch[pmask]
    mask[y:y + h, x:x + w] = pmask
    return image, mask
