"""A fingerprint of what the graph computes, recorded at export and checked at every load.

Hashes prove the bytes are the ones the manifest lists; they cannot tell that a
valid graph of the right shape (another model's, a tool's "fix" with rehashed
files) replaced the exported one. So the export runs the graph on a fixed probe
image and stores the mean of each output channel; the loader runs the same
probe and refuses a graph whose channel means differ by more than
``TOLERANCE`` (relative L2). The same graph on another CPU differs by float and
INT8 rounding only, orders of magnitude less.

Example::

    block = fingerprint(backend, input_hw=(256, 256))     # {"channel_means": [...], "tolerance": 0.05}
    difference(block, backend, (256, 256))                # 0.0 for the same graph
"""
from __future__ import annotations

import math

import numpy as np

TOLERANCE = 0.05


def probe_input(input_hw: tuple[int, int]) -> np.ndarray:
    """A deterministic (1, 3, H, W) float32 input with edges, gradients and texture at several scales."""
    h, w = input_hw
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    y, x = y / max(h - 1, 1), x / max(w - 1, 1)
    channels = [np.sin(2 * math.pi * (3 * x + 2 * y)) + (x > 0.5),
                np.cos(2 * math.pi * 7 * x * y) - (y > 0.3),
                np.sin(2 * math.pi * 17 * x) * np.cos(2 * math.pi * 11 * y) + 2 * x - 1]
    return np.stack(channels)[None].astype(np.float32)


def channel_means(backend, input_hw: tuple[int, int]) -> np.ndarray:
    """Mean of each output channel of ``backend`` on the probe input."""
    out = backend.run(probe_input(input_hw))
    return out[0].reshape(out.shape[1], -1).astype(np.float64).mean(axis=1)


def fingerprint(backend, input_hw: tuple[int, int]) -> dict:
    """The manifest block ``graph.probe``."""
    return {"channel_means": [float(f"{v:.7g}") for v in channel_means(backend, input_hw)], "tolerance": TOLERANCE}


def difference(recorded: list[float], backend, input_hw: tuple[int, int]) -> float:
    """Relative L2 difference between the recorded channel means and what ``backend`` computes now."""
    want = np.asarray(recorded, np.float64)
    got = channel_means(backend, input_hw)
    if got.shape != want.shape:
        return math.inf
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-12))
