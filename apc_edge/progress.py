"""A minimal text progress bar for long training steps (stderr, one line).

On a terminal the bar redraws in place; elsewhere (CI logs, files, pipes) it prints a plain line at each
tenth of the way or each minute, whichever comes first, never carriage returns.
"""
from __future__ import annotations

import contextlib
import sys
import time


_quiet = False


def set_quiet(quiet: bool = True) -> None:
    """Silence every progress bar of this process (the commands' ``-q``)."""
    global _quiet
    _quiet = bool(quiet)


class Progress:
    """``with Progress(total, "coreset") as bar: bar.update(1, loss=0.3)``"""

    def __init__(self, total: int, label: str, stream=None, min_interval_s: float = 0.5):
        self.total, self.label, self.done = max(1, total), label, 0
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self._last = 0.0
        self.min_interval_s = min_interval_s
        isatty = getattr(self.stream, "isatty", None)
        self.live = bool(isatty and isatty())
        self.silent = _quiet
        self._info = ""
        self._logged = (0, self.start)      # (tenths reported, time) when not live

    def update(self, n: int = 1, **info) -> None:
        self.done += n
        if self.silent:
            return
        now = time.perf_counter()
        if now - self._last < self.min_interval_s and self.done < self.total:
            return
        self._last = now
        self._info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        if not self.live:
            tenths = int(10 * self.done / self.total)
            if tenths > self._logged[0] or now - self._logged[1] >= 60.0:
                self._logged = (tenths, now)
                if self.done < self.total:
                    self.stream.write(f"{self.label}: {self.done}/{self.total} after {now - self.start:.0f} s "
                                      f"{self._info}".rstrip() + "\n")
                    self.stream.flush()
            return
        frac = self.done / self.total
        bar = "#" * int(30 * frac)
        elapsed = now - self.start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        self.stream.write(f"\r{self.label}: [{bar:<30}] {self.done}/{self.total} "
                          f"{elapsed:.0f}s<{eta:.0f}s {self._info}   ")
        self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.silent:
            return
        if self.live:
            self.stream.write("\n")
        else:
            elapsed = time.perf_counter() - self.start
            self.stream.write(f"{self.label}: {self.done}/{self.total} in {elapsed:.1f} s {self._info}".rstrip() + "\n")
        self.stream.flush()


class StageClock:
    """Wall seconds per named stage, summed over repeats.

    Example::

        clock = StageClock()
        with clock("bank"):
            embed_bank()
        clock.seconds                       # {"bank": 12.31}
    """

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - start, 2)
