"""A minimal text progress bar for long training steps (stderr, one line)."""
from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress(total, "coreset") as bar: bar.update(1, loss=0.3)``"""

    def __init__(self, total: int, label: str, stream=None, min_interval_s: float = 0.5):
        self.total, self.label, self.done = max(1, total), label, 0
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self._last = 0.0
        self.min_interval_s = min_interval_s

    def update(self, n: int = 1, **info) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._last < self.min_interval_s and self.done < self.total:
            return
        self._last = now
        frac = self.done / self.total
        bar = "#" * int(30 * frac)
        elapsed = now - self.start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        self.stream.write(f"\r{self.label}: [{bar:<30}] {self.done}/{self.total} "
                          f"{elapsed:.0f}s<{eta:.0f}s {extra}   ")
        self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stream.write("\n")
        self.stream.flush()
