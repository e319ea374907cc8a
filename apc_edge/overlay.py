"""Heatmap overlays for people to look at (NG frames, evaluation reports).

Example::

    img = overlay(frame, result.anomaly_map, threshold=inspector.threshold)
    cv2.imwrite("ng.png", img)
"""
from __future__ import annotations

import cv2
import numpy as np


def overlay(frame: np.ndarray, anomaly_map: np.ndarray, threshold: float, alpha: float = 0.45,
            label: str | None = None) -> np.ndarray:
    """BGR uint8 image: the frame with a JET heatmap where red starts at ``2 * threshold``.

    The colour scale is fixed by the threshold (0 -> blue, threshold -> green/yellow),
    so overlays of different frames are comparable.
    """
    bgr = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 or frame.shape[2] == 1 else frame
    scale = np.clip(anomaly_map / max(2.0 * threshold, 1e-12), 0.0, 1.0)
    heat = cv2.applyColorMap((scale * 255).astype(np.uint8), cv2.COLORMAP_JET)
    out = cv2.addWeighted(bgr, 1.0 - alpha, heat, alpha, 0.0)
    if label:
        cv2.putText(out, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return out
