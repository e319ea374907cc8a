"""What every frame source shares: the :class:`Frame` record, the errors, and the
:class:`FrameSource` contract (open / read / close, context manager, iterable).

Frame ids follow one rule for all sources: ``frame_id`` of a delivered frame is
the previous ``frame_id + 1 + skipped_before``, so a gap in the ids is exactly the
number of frames the source knows it lost (dropped, failed or unreadable).
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

OUTPUT_FORMATS = ("BGR8", "Mono8")


class SourceError(RuntimeError):
    """A frame source cannot go on (bad path, no camera, camera lost, bad setting)."""


class SourceTimeout(SourceError):
    """No frame arrived within the read timeout; the source is still usable.

    A hardware-triggered line waiting for the next part raises this on every
    idle timeout, so callers catch it and read again.
    """


@dataclass(eq=False)
class Frame:
    """One delivered image and where it came from.

    ``image`` is uint8, HxW (mono) or HxWx3 (BGR). ``timestamp`` is ``time.time()``
    when the source obtained the image. ``skipped_before`` counts the frames the
    source knows were lost since the previous delivered frame.
    """

    image: np.ndarray
    frame_id: int
    timestamp: float
    source_id: str
    name: str | None = None
    skipped_before: int = 0


def to_output_format(image: np.ndarray, output_format: str | None) -> np.ndarray:
    """Return ``image`` as BGR8 (HxWx3), Mono8 (HxW), or unchanged for ``None``."""
    if output_format is None:
        return image
    if output_format == "BGR8":
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
    if output_format == "Mono8":
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    raise ValueError(f"output_format must be one of {OUTPUT_FORMATS} or None, got {output_format!r}")


class FrameSource(ABC):
    """Base of all frame sources.

    Subclasses implement :meth:`open`, :meth:`close` and :meth:`read`, and deliver
    frames through :meth:`_emit`, which assigns ids and keeps :attr:`stats`.

    Example::

        with open_source("data/line1") as src:
            for frame in src:          # stops at end of stream
                process(frame.image)
            print(src.stats)
    """

    def __init__(self, source_id: str):
        self.source_id = source_id
        self._is_open = False
        self._next_id = 0
        self._stats = {"delivered": 0, "skipped": 0, "failed_buffers": 0, "reconnects": 0, "errors": 0}
        self._events: deque[str] = deque(maxlen=1000)

    # -- contract ---------------------------------------------------------
    @abstractmethod
    def open(self) -> None:
        """Acquire the underlying resource; raises :class:`SourceError` when it cannot."""

    @abstractmethod
    def close(self) -> None:
        """Release the underlying resource; safe to call more than once."""

    @abstractmethod
    def read(self, timeout_s: float | None = None) -> Frame | None:
        """Return the next frame, or ``None`` at the end of a finite stream.

        Raises :class:`SourceTimeout` when a live source has no frame within
        ``timeout_s`` and :class:`SourceError` on unrecoverable problems.
        """

    # -- shared helpers ---------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._is_open

    @property
    def stats(self) -> dict:
        """Counters: delivered, skipped, failed_buffers, reconnects, errors (a copy)."""
        return dict(self._stats)

    def take_events(self) -> list[str]:
        """Messages about frames lost or faults survived since the last call (oldest first).

        Unreadable files, failed grabs and reconnects each leave one message, so a
        caller can log them beside its verdicts. At most the last 1000 are kept.
        """
        events = []
        while self._events:
            events.append(self._events.popleft())
        return events

    def _event(self, message: str) -> None:
        self._events.append(message)

    def _require_open(self) -> None:
        if not self._is_open:
            raise SourceError(f"source {self.source_id!r} is not open; call open() or use it in a with-block")

    def _emit(self, image: np.ndarray, name: str | None = None, skipped: int = 0,
              timestamp: float | None = None) -> Frame:
        frame = Frame(image=image, frame_id=self._next_id + skipped,
                      timestamp=time.time() if timestamp is None else timestamp,
                      source_id=self.source_id, name=name, skipped_before=skipped)
        self._next_id = frame.frame_id + 1
        self._stats["delivered"] += 1
        self._stats["skipped"] += skipped
        return frame

    # -- protocols --------------------------------------------------------
    def __enter__(self) -> "FrameSource":
        self.open()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        """Yield frames until the end of the stream; read timeouts are waited out."""
        while True:
            try:
                frame = self.read()
            except SourceTimeout:
                continue
            if frame is None:
                return
            yield frame

    def __repr__(self) -> str:
        state = "open" if self._is_open else "closed"
        return f"{type(self).__name__}({self.source_id!r}, {state})"
