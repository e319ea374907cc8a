"""NG overlay PNGs written by a background thread, so encoding never delays the next verdict.

The queue is small and ``put`` waits when it is full: overlays are never
dropped, at worst the inspect loop slows to the encoder's pace. Each PNG is
written to a temporary name and renamed, so a file that exists is complete.
"""
from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

import cv2
import numpy as np

from ..overlay import overlay
from .verdict_log import write_file_atomic

log = logging.getLogger(__name__)

# Huffman-only deflate: about 2x faster than the default level and smaller files on heatmap overlays
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]


class OverlayWriter:
    """Background writer of heatmap overlays.

    Example::

        writer = OverlayWriter(depth=2)
        writer.put("out/ng/0001.png", frame, result.anomaly_map, result.threshold, label="NG 0.93")
        writer.close()                 # waits for the queued images
        writer.written, writer.failed
    """

    def __init__(self, depth: int = 2):
        self.written = 0
        self.failed = 0
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._thread = threading.Thread(target=self._run, name="overlay writer", daemon=True)
        self._thread.start()

    def put(self, path: str | Path, frame: np.ndarray, anomaly_map: np.ndarray, threshold: float,
            label: str | None = None) -> None:
        """Queue one overlay (waits while the queue is full)."""
        self._queue.put((Path(path), frame, anomaly_map, threshold, label))

    def close(self, timeout_s: float | None = 30.0) -> None:
        """Write what is queued, then end the thread."""
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            path, frame, amap, threshold, label = item
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                ok, png = cv2.imencode(".png", overlay(frame, amap, threshold, label=label), PNG_PARAMS)
                if not ok:
                    raise OSError("PNG encoding failed")
                write_file_atomic(path, png.tobytes())
                self.written += 1
            except (OSError, cv2.error, ValueError) as exc:
                self.failed += 1
                log.warning("cannot write NG overlay %s: %s", path, exc)
