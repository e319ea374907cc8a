"""NG overlays and the frames a reviewer needs, written by a background thread within a disk budget:
they never cost a verdict.

Each admitted item is a heatmap overlay (NG frames), the original frame as a lossless PNG (16-bit frames
stay 16-bit: what ``apc-update`` and ``apc-train --anomalies-dir`` read back), or both; the counts, the
byte budget and the free-space floor cover both kinds.

The inspect loop must never wait on an overlay. :meth:`OverlayWriter.admit`
says at once whether the next overlay will be taken (the count budget, room in
the queue, overlays not stopped); :meth:`OverlayWriter.put` never blocks. The
queue holds at most ``depth`` overlays and ``max_pending_bytes`` of frames and
maps (always one, however large): a writer slower than the line drops overlays,
counted, instead of slowing the line or filling the memory. With ``background=True`` (apc-inspect on a
camera or stream) the writer thread runs at a lower CPU priority than the checks, so a burst of NG parts
costs the checks no core (bottle at 512x512 on the emulated camera, every frame NG: check median -9 to -22 %).
The writer thread stops writing overlays for the rest of the run when the byte
budget is reached, when free space on the verdict log's filesystem would fall
below ``min_free_bytes``, or when a write fails with a full disk; the verdict
log keeps that room. Each PNG is written to a temporary name and renamed (the
temporary file is removed on failure), so a file that exists is complete. The
thread is a daemon and :meth:`close` waits a bounded time, so a write that
never returns (a hung network share) cannot keep the process from ending.
"""
from __future__ import annotations

import errno
import logging
import os
import queue
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from ..overlay import overlay
from ..threads import lower_this_thread_priority
from .verdict_log import write_file_atomic

log = logging.getLogger(__name__)

# Huffman-only deflate: about 2x faster than the default level and smaller files on heatmap overlays
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
QUEUE_DEPTH = 32
QUEUE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class OverlayBudget:
    """Limits on the NG overlays of one lane and run; ``None`` is no limit.

    ``min_free_bytes`` is the free space kept on the verdict log's filesystem:
    an overlay that would leave less is not written, and overlays stop.

    Example::

        OverlayBudget(max_images=1000, max_bytes=2 * 2**30, min_free_bytes=100 * 2**20)
    """

    max_images: int | None = None
    max_bytes: int | None = None
    min_free_bytes: int = 0


@dataclass
class OverlayCounts:
    """What became of the NG overlays of one lane (``stopped``: why overlays stopped, if they did)."""

    written: int = 0              # overlays written
    frames_written: int = 0       # original frames written (lossless)
    bytes: int = 0                # of both
    dropped_budget: int = 0       # not written: a budget was reached or overlays had stopped
    dropped_queue_full: int = 0   # not written: the writer was still busy with earlier ones
    failed: int = 0               # encoding or writing failed
    abandoned: int = 0            # still queued or being written when the run ended
    stopped: str | None = None

    @property
    def not_written(self) -> int:
        return self.dropped_budget + self.dropped_queue_full + self.failed + self.abandoned

    def as_dict(self) -> dict:
        return asdict(self)


class OverlayWriter:
    """Background writer of heatmap overlays; ``keep_free_on`` is the folder whose filesystem keeps
    ``budget.min_free_bytes`` free (the verdict log's); ``background``: encode at a lower CPU priority
    than the checks (:func:`~apc_edge.threads.lower_this_thread_priority`).

    Example::

        writer = OverlayWriter(OverlayBudget(max_images=100), keep_free_on="out")
        if writer.admit(frame, result.anomaly_map) is None:     # None: taken; else why it is dropped
            writer.put("out/ng/0001.png", frame, result.anomaly_map, result.threshold, label="NG 0.93")
        writer.close(timeout_s=5.0)                 # writes what is queued, at most that long
        writer.counts.written, writer.counts.abandoned
    """

    def __init__(self, budget: OverlayBudget | None = None, keep_free_on: str | Path | None = None,
                 depth: int = QUEUE_DEPTH, max_pending_bytes: int = QUEUE_BYTES, background: bool = False):
        self.background = bool(background)
        self.budget = budget or OverlayBudget()
        self.keep_free_on = Path(keep_free_on) if keep_free_on is not None else None
        self.depth = max(1, depth)
        self.max_pending_bytes = max_pending_bytes
        self.counts = OverlayCounts()
        self.stuck_on: Path | None = None        # the file a write that did not end was writing
        self._admitted = 0
        self._pending = 0                        # admitted and not yet finished, with their bytes
        self._pending_bytes = 0
        self._busy: Path | None = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._queue: queue.Queue = queue.Queue()          # bounded by admit()
        self._thread = threading.Thread(target=self._run, name="overlay writer", daemon=True)
        self._thread.start()

    # -- the inspect loop's side ----------------------------------------------------------
    def admit(self, frame: np.ndarray, anomaly_map: np.ndarray | None) -> str | None:
        """``None`` when the overlay of ``frame`` will be taken by the next :meth:`put` (room is kept for it);
        else why it is dropped (counted): the stop reason, ``"max images"`` or ``"queue full"``."""
        size = _item_bytes(frame, anomaly_map)
        with self._lock:
            c = self.counts
            if c.stopped:
                c.dropped_budget += 1
                return c.stopped
            if self.budget.max_images is not None and self._admitted >= self.budget.max_images:
                c.dropped_budget += 1
                return "max images"
            if self._pending >= self.depth or (self._pending and self._pending_bytes + size > self.max_pending_bytes):
                c.dropped_queue_full += 1
                return "queue full"
            self._admitted += 1
            self._pending += 1
            self._pending_bytes += size
            return None

    def put(self, path: str | Path | None, frame: np.ndarray, anomaly_map: np.ndarray | None, threshold: float,
            label: str | None = None, frame_path: str | Path | None = None, shown: np.ndarray | None = None) -> None:
        """Queue what :meth:`admit` took; never waits. ``path``: the overlay (None: none), drawn on ``shown``
        (default ``frame``; a uint8 view of a 16-bit frame); ``frame_path``: also save ``frame`` itself there."""
        self._queue.put_nowait((None if path is None else Path(path), frame, anomaly_map, threshold, label,
                                None if frame_path is None else Path(frame_path), shown))

    def close(self, timeout_s: float = 5.0) -> OverlayCounts:
        """Write what is queued for at most ``timeout_s``, then leave the rest (counted as abandoned)."""
        self._closing.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            with self._lock:
                self.stuck_on = self._busy
                self.counts.abandoned = self._queue.qsize() + (self._busy is not None)
            log.error("overlay writer still busy after %.0f s (writing %s); abandoned %d overlay(s), "
                      "the verdicts are all logged", timeout_s, self.stuck_on, self.counts.abandoned)
        return self.counts

    # -- the writer thread --------------------------------------------------------------
    def _run(self) -> None:
        if self.background:
            lower_this_thread_priority()         # PNG encoding takes idle cycles, not a core from the checks
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            with self._lock:
                self._busy = item[0] or item[5]
            try:
                self._write(*item)
            finally:
                with self._lock:
                    self._busy = None
                    self._pending -= 1
                    self._pending_bytes -= _item_bytes(item[1], item[2])

    def _write(self, path: Path | None, frame, amap, threshold, label, frame_path: Path | None, shown) -> None:
        if self.counts.stopped:
            self._count("dropped_budget")
            return
        # the original first: it is what a reviewer's decision feeds back into the model
        if frame_path is not None and not self._write_png(frame_path, lambda: frame, "frames_written", "frame"):
            return
        if path is not None:
            self._write_png(path, lambda: overlay(shown if shown is not None else frame, amap, threshold,
                                                  label=label), "written", "NG overlay")

    def _write_png(self, path: Path, image, counter: str, what: str) -> bool:
        """Encode ``image()`` and write it within the budget; False when nothing more of this item may be written."""
        try:
            ok, png = cv2.imencode(".png", image(), PNG_PARAMS)
            if not ok:
                raise ValueError("PNG encoding failed")
        except (cv2.error, ValueError) as exc:
            self._count("failed")
            log.warning("cannot encode %s %s: %s", what, path, exc)
            return False
        data = png.tobytes()
        refusal = self._over_budget(len(data))
        if refusal:
            self._stop(refusal)
            self._count("dropped_budget")
            return False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_file_atomic(path, data)
        except OSError as exc:
            self._count("failed")
            if exc.errno in DISK_FULL:
                self._stop("disk full")
            log.warning("cannot write %s %s: %s", what, path, exc.strerror or exc)
            return False
        with self._lock:
            setattr(self.counts, counter, getattr(self.counts, counter) + 1)
            self.counts.bytes += len(data)
        return True

    def _over_budget(self, size: int) -> str | None:
        b = self.budget
        if b.max_bytes is not None and self.counts.bytes + size > b.max_bytes:
            return "max bytes"
        if b.min_free_bytes and self.keep_free_on is not None:
            try:
                st = os.statvfs(self.keep_free_on)
            except OSError as exc:
                log.warning("cannot read the free space of %s: %s", self.keep_free_on, exc)
                return None
            if st.f_bavail * st.f_frsize - size < b.min_free_bytes:
                return "min free space"
        return None

    def _stop(self, reason: str) -> None:
        with self._lock:
            if self.counts.stopped:
                return
            self.counts.stopped = reason
        log.warning("NG overlays stopped for this run (%s); verdicts go on being logged", reason)

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self.counts, name, getattr(self.counts, name) + 1)


def _item_bytes(frame: np.ndarray, anomaly_map: np.ndarray | None) -> int:
    return int(frame.nbytes) + (int(anomaly_map.nbytes) if anomaly_map is not None else 0)
