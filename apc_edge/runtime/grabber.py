"""The grab thread: reads a frame source into a small bounded queue.

Inference takes frames from the queue while the next one is being grabbed, so
grabbing and scoring overlap. Two queue policies:

- ``latest=True`` (free-running camera): a queue of one. A newer frame
  replaces the one not yet taken (counted in ``dropped``), so the camera never
  waits on a slow model and the model always gets the newest image.
- ``latest=False`` (triggered camera, folder, video): the thread reads a frame
  only when the queue has room (``depth`` frames), so no frame is lost and none
  waits longer than needed. A software-triggered camera is triggered only then;
  a hardware-triggered one buffers in its ``MaxNumBuffer`` pool meanwhile and
  reports any overflow as skipped frames.
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

from ..sources import Frame, FrameSource, SourceError, SourceTimeout

log = logging.getLogger(__name__)


@dataclass
class EndOfFrames:
    """Last queue item: why the grab thread stopped (``error`` set when it failed)."""

    reason: str
    error: str | None = None


class Grabber:
    """Run ``source.read`` in a daemon thread; the caller closes the source after :meth:`join`.

    Example::

        grabber = Grabber(source, latest=False)      # source already open
        grabber.start()
        while True:
            item = grabber.get(timeout_s=0.5)
            if isinstance(item, EndOfFrames):
                break
            if item is not None:
                process(item)
        grabber.abort()
        if grabber.join(5.0):
            source.close()
    """

    def __init__(self, source: FrameSource, latest: bool, depth: int = 1, max_frames: int | None = None,
                 read_timeout_s: float = 0.5):
        self.source = source
        self.latest = latest
        self.max_frames = None if latest else max_frames   # latest-wins: the consumer counts
        self.read_timeout_s = read_timeout_s
        self.queue: queue.Queue = queue.Queue(maxsize=1 if latest else 0)
        self.grabbed = 0
        self.dropped = 0
        self._slots = threading.Semaphore(max(1, depth))   # blocking policy: frames read, not yet taken
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"grab {source.source_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Read no more frames (a camera reconnect wait is cut short); a frame already read
        is still delivered, then the end marker. Returns at once."""
        self._stop.set()
        cancel = getattr(self.source, "cancel", None)
        if cancel is not None:
            cancel()

    def abort(self) -> None:
        """Like :meth:`stop`, for a consumer that will not read any more."""
        self._abort.set()
        self.stop()

    def join(self, timeout_s: float | None = None) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def get(self, timeout_s: float) -> Frame | EndOfFrames | None:
        """The next frame, the end marker, or None when nothing came within ``timeout_s``."""
        try:
            item = self.queue.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if isinstance(item, Frame) and not self.latest:
            self._slots.release()
        return item

    def _wait_for_room(self) -> bool:
        while not self._stop.is_set():
            if self._slots.acquire(timeout=0.2):
                return True
        return False

    def _run(self) -> None:
        end = EndOfFrames("stopped")
        have_room = False
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and self.grabbed >= self.max_frames:
                    end = EndOfFrames("max frames")
                    break
                if not self.latest and not have_room:
                    have_room = self._wait_for_room()
                    if not have_room:
                        break
                try:
                    frame = self.source.read(timeout_s=self.read_timeout_s)
                except SourceTimeout:
                    continue
                except SourceError as exc:
                    if self._stop.is_set():
                        break
                    end = EndOfFrames("source error", str(exc))
                    break
                if frame is None:
                    end = EndOfFrames("end of stream")
                    break
                self.grabbed += 1
                have_room = False
                self._put(frame)
        except Exception as exc:  # a bug must end the lane visibly, not kill the thread silently
            log.exception("grab thread of %s failed", self.source.source_id)
            end = EndOfFrames("source error", f"{type(exc).__name__}: {exc}")
        finally:
            self._put(end, last=True)

    def _put(self, item, last: bool = False) -> None:
        if not self.latest:
            self.queue.put_nowait(item)              # unbounded; the slots bound the frames
            return
        if not last:
            try:
                self.queue.get_nowait()              # latest wins: drop the frame not yet taken
                self.dropped += 1
            except queue.Empty:
                pass
            self.queue.put_nowait(item)              # this thread is the only producer
            return
        while not self._abort.is_set():              # the end marker must not replace a frame
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                pass
