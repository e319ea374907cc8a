"""Visual evaluation report: an ROC plot and a grid of heatmap overlays (PNG), drawn with OpenCV.

Example::

    write_report("reports/bottle", scored, inspector.threshold, report)
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from apc_edge.overlay import overlay
from apc_edge.preprocess import Preprocessor, load_image

from . import metrics


def roc_plot(labels: np.ndarray, scores: np.ndarray, title: str, size: int = 480) -> np.ndarray:
    """ROC curve as a BGR image (axes, diagonal, curve and AUROC in the title)."""
    fpr, tpr, _ = metrics.roc_curve(labels, scores)
    img = np.full((size, size, 3), 255, np.uint8)
    m = 50
    span = size - 2 * m

    def to_px(x, y):
        return int(m + x * span), int(size - m - y * span)

    cv2.rectangle(img, to_px(0, 0), to_px(1, 1), (0, 0, 0), 1)
    cv2.line(img, to_px(0, 0), to_px(1, 1), (180, 180, 180), 1, cv2.LINE_AA)
    for v in (0.25, 0.5, 0.75):
        cv2.putText(img, f"{v:.2f}", (to_px(v, 0)[0] - 14, size - m + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        cv2.putText(img, f"{v:.2f}", (8, to_px(0, v)[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    pts = np.array([to_px(x, y) for x, y in zip(fpr, tpr)], np.int32)
    cv2.polylines(img, [pts], False, (200, 60, 0), 2, cv2.LINE_AA)
    cv2.putText(img, f"{title}  AUROC {metrics.auroc(labels, scores):.4f}", (m, 30),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "false positive rate", (size // 2 - 60, size - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    return img


def frame_map(pre: Preprocessor, input_map: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray:
    """A map on evaluation's model-input grid (``Preprocessor.to_input_grid``) back on the frame's pixels.

    In pad mode that grid already is the frame's own region of the canvas, so it is only resized;
    ``map_to_frame`` takes a whole-canvas map and would cut the region out a second time.

    Example::

        full = frame_map(inspector.preprocessor, scored_sample.input_map, frame.shape)
    """
    if pre.mode == "pad":
        h, w = frame_shape[:2]
        return cv2.resize(input_map.astype(np.float32, copy=False), (w, h), interpolation=cv2.INTER_LINEAR)
    return pre.map_to_frame(input_map, frame_shape)


def overlay_grid(scored, inspector, tile: int = 224, per_row: int = 8, max_tiles: int = 48) -> np.ndarray:
    """Heatmap overlays of the most anomalous and the least anomalous test images, labelled with type and score."""
    order = sorted(scored, key=lambda s: s.raw_score, reverse=True)
    half = max_tiles // 2
    picks = order if len(order) <= max_tiles else order[:half] + order[-half:]
    tiles = []
    for s in picks:
        frame = inspector.preprocessor.to_8bit(load_image(s.sample.path))
        full = frame_map(inspector.preprocessor, s.input_map, frame.shape)
        verdict = "NG" if s.raw_score >= inspector.threshold else "OK"
        img = overlay(frame, full, inspector.threshold)
        img = cv2.resize(img, (tile, tile), interpolation=cv2.INTER_AREA)
        label = f"{s.sample.defect_type} {inspector.normalize(s.raw_score):.2f} {verdict}"
        cv2.putText(img, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(img)
    while len(tiles) % per_row:
        tiles.append(np.full((tile, tile, 3), 255, np.uint8))
    rows = [np.hstack(tiles[i:i + per_row]) for i in range(0, len(tiles), per_row)]
    return np.vstack(rows)


def write_report(out_dir: str | Path, scored, inspector, report: dict) -> list[Path]:
    """Write ``roc.png``, ``overlays.png`` and ``metrics.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = np.array([s.sample.is_anomalous for s in scored])
    scores = np.array([s.raw_score for s in scored])
    paths = [out / "roc.png", out / "overlays.png", out / "metrics.json"]
    cv2.imwrite(str(paths[0]), roc_plot(labels, scores, report.get("category", "")))
    cv2.imwrite(str(paths[1]), overlay_grid(scored, inspector))
    paths[2].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return paths
