"""Run statistics in constant memory: latency percentiles, counters, process RSS.

A line runs for weeks, so nothing here grows with the number of frames.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..sysinfo import peak_rss_mb, resident_mb


class LatencyHistogram:
    """Percentiles of millisecond values from log-spaced bins (about 1 % resolution).

    Example::

        h = LatencyHistogram()
        for ms in (12.0, 15.5, 13.1):
            h.add(ms)
        h.percentile(50), h.count, h.max
    """

    LOG_LO, LOG_HI, BINS = -2.0, 6.0, 1600          # 0.01 ms .. 1000 s

    def __init__(self):
        self.counts = np.zeros(self.BINS + 2, np.int64)  # [under, bins..., over]
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, ms: float) -> None:
        if not math.isfinite(ms):
            return
        ms = max(ms, 0.0)
        pos = (math.log10(ms) - self.LOG_LO) / (self.LOG_HI - self.LOG_LO) * self.BINS if ms > 0 else -1
        self.counts[0 if pos < 0 else min(int(pos) + 1, self.BINS + 1)] += 1
        self.count += 1
        self.total += ms
        self.max = max(self.max, ms)

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0..100), or None before the first value."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q / 100.0 * self.count))
        i = int(np.searchsorted(np.cumsum(self.counts), rank))
        if i == 0:
            return 10 ** self.LOG_LO
        if i > self.BINS:
            return self.max
        centre = self.LOG_LO + (i - 0.5) * (self.LOG_HI - self.LOG_LO) / self.BINS
        return min(10 ** centre, self.max)

    @classmethod
    def merged(cls, hists) -> "LatencyHistogram":
        """One histogram holding the values of all ``hists``."""
        out = cls()
        for h in hists:
            out.counts += h.counts
            out.count += h.count
            out.total += h.total
            out.max = max(out.max, h.max)
        return out

    def summary(self) -> dict:
        """p50 / p95 / max / mean in ms (None when empty)."""
        if self.count == 0:
            return {"p50": None, "p95": None, "max": None, "mean": None}
        return {"p50": round(self.percentile(50), 2), "p95": round(self.percentile(95), 2),
                "max": round(self.max, 2), "mean": round(self.total / self.count, 2)}


def rss_mb() -> float | None:
    """Resident set size of this process now, in MB (``sysinfo.resident_mb``), else the peak RSS
    where ``/proc`` is not available."""
    now = resident_mb()
    return now["rss"] if now else peak_rss_mb()


@dataclass
class LaneStats:
    """Counters of one lane (source + model); read by the status line from another thread."""

    frames: int = 0              # frames with a verdict (OK + NG)
    ng: int = 0
    bad_frames: int = 0          # frames Inspector refused (ValueError)
    score_errors: int = 0        # frames whose score was not a finite number (ValueError naming it)
    inspect_errors: int = 0      # unexpected errors while scoring a frame
    reject_errors: int = 0
    source_events: int = 0       # failed grabs, unreadable files, reconnects (as reported by the source)
    dropped: int = 0             # gaps in frame ids: lost by the source or dropped by latest-wins
    ng_images: int = 0
    ng_images_skipped: int = 0   # NG overlays not written (budget, queue full, failed or abandoned)
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)   # acquisition -> verdict
    check: LatencyHistogram = field(default_factory=LatencyHistogram)     # Inspector.check alone

    @property
    def elapsed_s(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    @property
    def errors_judging(self) -> int:
        """Frames taken from the source that got an ERROR verdict from ``check``."""
        return self.bad_frames + self.score_errors + self.inspect_errors

    @property
    def taken(self) -> int:
        """Frames taken from the source: judged (OK/NG) or ERROR."""
        return self.frames + self.errors_judging

    @property
    def fps(self) -> float:
        return self.taken / self.elapsed_s if self.elapsed_s > 0 else 0.0
