"""Live stats on stderr: one updating line on a terminal, a line every few seconds otherwise.

Log messages go through :class:`StatusAwareHandler`, which wipes the status line
first so the two never mix.
"""
from __future__ import annotations

import logging
import sys
import threading
import time


class StatusLine:
    """Throttled status display.

    Example::

        status = StatusLine()
        while running:
            if status.due():
                status.show("123 frames  4.1 fps")
        status.clear()
    """

    def __init__(self, stream=None, interval_s: float | None = None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = interval_s if interval_s is not None else (0.5 if self.tty else 10.0)
        self.enabled = enabled
        self._lock = threading.Lock()
        self._shown = False
        self._last = time.monotonic()

    def due(self) -> bool:
        return self.enabled and time.monotonic() - self._last >= self.interval_s

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        self._last = time.monotonic()
        with self._lock:
            if self.tty:
                self.stream.write("\r\033[K" + text)
                self._shown = True
            else:
                self.stream.write(text + "\n")
            self.stream.flush()

    def clear(self) -> None:
        with self._lock:
            if self._shown:
                self.stream.write("\r\033[K")
                self.stream.flush()
                self._shown = False


class StatusAwareHandler(logging.StreamHandler):
    """A stderr log handler that clears the status line before each message."""

    def __init__(self, status: StatusLine):
        super().__init__(status.stream)
        self.status = status

    def emit(self, record: logging.LogRecord) -> None:
        self.status.clear()
        super().emit(record)
