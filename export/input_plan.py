"""Choose the model input from the training images' sizes: ``apc-train``'s default preprocessing.

A user runs ``apc-train DATA --out RUN`` without knowing which input size suits the data, so the
default is decided from the sizes of ``train/good`` and recorded in ``run.json`` (``input_plan``):

- **One image size** (a fixed camera; every side within 2 % of the median): stretch mode, the
  image's own aspect ratio kept, scaled so the input holds at most ``PIXEL_BUDGET`` pixels. Images
  smaller than that keep their own scale (a defect of a few pixels stays a few pixels), and images
  whose short side is below ``MIN_SIDE`` are enlarged to it. High-resolution images are shrunk by at
  most ``MIN_SCALE`` (a 4 px defect stays 2 px), past the budget, until the input reaches
  ``MAX_INPUT_PIXELS``; only larger images are shrunk further, to that many pixels.
- **Sizes that vary** (cut-outs, tiles): pad mode, so texture keeps one pixel scale. The scale is
  chosen by the same rule for the median image; the canvas covers every training image at that
  scale, or only the 95th-percentile height and width when a few outliers would more than double it
  (those, and test images larger than the canvas, are shrunk to fit).

Sides are multiples of ``SIDE_STEP`` (the stride-16 stage then tiles the input exactly).

Example::

    plan = plan_input([(900, 900)] * 200)
    plan.mode, plan.resize          # ('stretch', (512, 512))
    plan_input([(330, 290), (250, 600), (380, 200)]).mode   # 'pad'
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apc_edge.preprocess import bit_depth_of, image_kind, load_image

PIXEL_BUDGET = 512 * 512     # pixels the model input (or the median image in pad mode) is given ...
MIN_SCALE = 0.5              # ... unless that would shrink the image more than this:
MAX_INPUT_PIXELS = 1024 * 1024  # then the input may grow to this many pixels (a check costs ~4x a 512x512 one)
MIN_SIDE = 256               # images with a shorter side are enlarged to it
SIDE_STEP = 32
SAME_SIZE_TOLERANCE = 0.02   # every side within 2 % of the median: one camera, one size
CANVAS_QUANTILE = 95
OUTLIER_CANVAS_GROWTH = 2.0  # a canvas for the largest image may be this much larger than for the 95th percentile


@dataclass(frozen=True)
class InputPlan:
    """The preprocessing :func:`plan_input` chose, and why (``reason`` is for people)."""

    mode: str                   # "stretch" or "pad"
    resize: tuple[int, int]     # model input (height, width)
    scale: float                # pad mode: pixel scale; stretch: the scale of the median image (for reports)
    reason: str

    def to_dict(self) -> dict:
        return {"mode": self.mode, "resize": list(self.resize), "scale": round(self.scale, 4), "reason": self.reason}


def image_facts(paths: list[Path]) -> tuple[list[tuple[int, int]], list[str], int]:
    """(height, width) and kind (``"mono"``/``"color"``, as :func:`load_image` reads it) of each image file,
    and the bit depth of the set (``Preprocessor.bit_depth``: 8 if every file is 8-bit, else the bits the
    largest 16-bit value needs). ``ValueError`` names a file it cannot read."""
    sizes, kinds, depth = [], [], 8
    for p in paths:
        img = load_image(p)
        sizes.append((int(img.shape[0]), int(img.shape[1])))
        kinds.append(image_kind(img))
        if img.dtype != np.uint8:
            depth = max(depth, bit_depth_of(img))
    return sizes, kinds, depth


def channels_of(kinds: list[str]) -> str:
    """The ``Preprocessor.channels`` a training set implies: ``"color"`` or ``"mono"`` when all its images
    are of that kind, else ``"any"``."""
    found = set(kinds)
    return found.pop() if len(found) == 1 else "any"


def _side(x: float, up: bool = False) -> int:
    steps = math.ceil(x / SIDE_STEP) if up else round(x / SIDE_STEP)
    return int(max(1, steps) * SIDE_STEP)


def _scale_for(h: float, w: float) -> float:
    """Pixel scale of an h x w image: PIXEL_BUDGET pixels (native if smaller, short side >= MIN_SIDE), but
    shrunk by no more than MIN_SCALE while the input stays within MAX_INPUT_PIXELS."""
    fit = math.sqrt(PIXEL_BUDGET / (h * w))
    keep_detail = min(MIN_SCALE, math.sqrt(MAX_INPUT_PIXELS / (h * w)))
    enlarge = max(1.0, MIN_SIDE / min(h, w))
    return min(max(fit, keep_detail), enlarge)


def _budget_words(scale: float, h: float, w: float) -> str:
    """Why the scale is what it is, for the plan's reason."""
    pixels = scale * scale * h * w
    if pixels <= PIXEL_BUDGET * 1.01:
        return f"scale {scale:.3f}, at most {PIXEL_BUDGET} pixels"
    why = (f"not the {math.sqrt(PIXEL_BUDGET / (h * w)):.3f} of a {PIXEL_BUDGET}-pixel input, which would shrink "
           f"small defects to less than {MIN_SCALE:g} of their size" if scale >= MIN_SCALE * 0.999 else
           f"the largest input allowed, {MAX_INPUT_PIXELS} pixels")
    return (f"scale {scale:.3f} ({why}); a check costs about {pixels / PIXEL_BUDGET:.1f}x a "
            f"{PIXEL_BUDGET}-pixel one, and --resize trades detail for speed")


def plan_input(sizes: list[tuple[int, int]], mode: str | None = None, scale: float | None = None) -> InputPlan:
    """Preprocessing for training images of these (height, width) sizes; see the module docstring.

    ``mode`` ("stretch" or "pad") forces that mode with the size and scale the rules give for it;
    ``scale`` (pad mode) fixes the pixel scale, and the canvas is planned for it.
    """
    if not sizes:
        raise ValueError("no image sizes to plan the model input from")
    if mode not in (None, "stretch", "pad"):
        raise ValueError(f"mode must be 'stretch' or 'pad', got {mode!r}")
    hw = np.asarray(sizes, np.float64)
    med_h, med_w = np.median(hw[:, 0]), np.median(hw[:, 1])
    same = bool(np.all(np.abs(hw[:, 0] - med_h) <= SAME_SIZE_TOLERANCE * med_h)
                and np.all(np.abs(hw[:, 1] - med_w) <= SAME_SIZE_TOLERANCE * med_w))
    if mode == "stretch" or (mode is None and same):
        s = _scale_for(med_h, med_w)
        resize = (_side(med_h * s), _side(med_w * s))
        what = (f"all {len(sizes)} training images are {int(med_h)}x{int(med_w)} (HxW)" if same else
                f"stretch mode asked for; the median training image is {int(med_h)}x{int(med_w)} (HxW)")
        return InputPlan("stretch", resize, s, f"{what}: stretched to {resize[0]}x{resize[1]}, aspect ratio kept, "
                                               f"{_budget_words(s, med_h, med_w)}")
    area = hw[:, 0] * hw[:, 1]
    mid = int(np.argsort(area)[len(area) // 2])
    s = float(scale) if scale else _scale_for(hw[mid, 0], hw[mid, 1])
    canvas = (_side(hw[:, 0].max() * s, up=True), _side(hw[:, 1].max() * s, up=True))
    typical = (_side(np.percentile(hw[:, 0], CANVAS_QUANTILE) * s, up=True),
               _side(np.percentile(hw[:, 1], CANVAS_QUANTILE) * s, up=True))
    covers = "every training image"
    if canvas[0] * canvas[1] > OUTLIER_CANVAS_GROWTH * typical[0] * typical[1]:
        canvas, covers = typical, f"the {CANVAS_QUANTILE}th-percentile size; larger images are shrunk to fit"
    lo, hi = hw.min(axis=0).astype(int), hw.max(axis=0).astype(int)
    what = (f"training image sizes vary ({lo[0]}-{hi[0]} high, {lo[1]}-{hi[1]} wide)" if not same else
            f"pad mode asked for ({len(sizes)} images of {int(med_h)}x{int(med_w)})")
    source = "given" if scale else "the median image's rule"
    return InputPlan("pad", canvas, s, f"{what}: pad mode, each image scaled by {s:.3f} ({source}) and centred on "
                                       f"a {canvas[0]}x{canvas[1]} canvas ({covers})")
