"""Frames from any camera OpenCV opens: a USB/UVC device or a network stream (RTSP, HTTP MJPEG, ...).

A live stream fails in ways a file does not: the network drops, the camera reboots, the server stops.
:class:`StreamSource` then behaves like the Basler source: the loss is an event and a ``failed_buffers``
count, it reconnects with a growing pause (``reconnect_max_wait_s``: give up after that long, None: keep
trying) and counts the reconnect, and frames never read meanwhile are not invented. A read that takes
longer than ``read_timeout_s`` (a stream that stalls without closing) counts as a loss too.

Example::

    with StreamSource("rtsp://10.0.0.7/line1", reconnect_max_wait_s=60) as src:    # or "usb:0"
        frame = src.read()
"""
from __future__ import annotations

import threading
import time

import cv2

from .base import OUTPUT_FORMATS, Frame, FrameSource, SourceError, SourceTimeout, to_output_format

STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://", "srt://")
FIRST_PAUSE_S = 0.2
MAX_PAUSE_S = 5.0


def is_stream_spec(text: str) -> bool:
    """True for a stream URL or a USB device (``usb:N``)."""
    return text.lower().startswith(STREAM_SCHEMES) or (text.startswith("usb:") and text[4:].isdigit())


def _shown(spec: str) -> str:
    """The spec without a password (``rtsp://user:pw@host`` -> ``rtsp://user:***@host``)."""
    scheme, sep, rest = spec.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        creds, host = rest.split("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return spec


class StreamSource(FrameSource):
    """A stream URL (``rtsp://``, ``http://``, ...) or ``usb:N`` (OpenCV device index N), BGR frames."""

    def __init__(self, spec: str, output_format: str | None = None, read_timeout_s: float = 5.0,
                 reconnect_max_wait_s: float | None = None, open_timeout_s: float = 10.0):
        if not is_stream_spec(spec):
            raise ValueError(f"not a stream URL or usb:N device: {spec!r}")
        if output_format is not None and output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {OUTPUT_FORMATS} or None, got {output_format!r}")
        super().__init__(_shown(spec))
        self.spec = spec
        self.output_format = output_format
        self.read_timeout_s = float(read_timeout_s)
        self.open_timeout_s = float(open_timeout_s)
        self.reconnect_max_wait_s = reconnect_max_wait_s
        self._cap: cv2.VideoCapture | None = None
        self._lost_since: float | None = None
        self._pause = FIRST_PAUSE_S

    def _capture(self) -> cv2.VideoCapture | None:
        if self.spec.startswith("usb:"):
            cap = cv2.VideoCapture(int(self.spec[4:]))
        else:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000)]
            cap = cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def open(self) -> None:
        if self._is_open:
            return
        cap = self._capture()
        if cap is None:
            raise SourceError(f"cannot open stream {self.source_id} (not reachable, or not a stream OpenCV "
                              f"can decode)")
        self._cap, self._is_open = cap, True

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._is_open = False

    def _timed_read(self) -> tuple[bool, object]:
        """``cap.read()`` bounded by ``read_timeout_s`` (FFmpeg's own timeout does not cover every stall)."""
        result: list = [False, None]

        def grab():
            result[0], result[1] = self._cap.read()

        worker = threading.Thread(target=grab, daemon=True)
        worker.start()
        worker.join(self.read_timeout_s)
        if worker.is_alive():
            return False, "stalled"
        return bool(result[0]), result[1]

    def read(self, timeout_s: float | None = None) -> Frame | None:
        """Next frame; on a lost stream, reconnects (``SourceTimeout`` while it waits for the stream)."""
        self._require_open()
        if self._cap is None:
            self._reconnect()
        ok, image = self._timed_read()
        if ok and image is not None:
            self._pause = FIRST_PAUSE_S
            return self._emit(to_output_format(image, self.output_format))
        self._stats["failed_buffers"] += 1
        self._event(f"stream {self.source_id} lost ({'no frame for ' + str(self.read_timeout_s) + ' s' if image == 'stalled' else 'read failed'}); reconnecting")
        self._lost_since = self._lost_since or time.monotonic()
        if image != "stalled":
            self._cap.release()
        self._cap = None
        raise SourceTimeout(f"stream {self.source_id} lost; reconnecting")

    def _reconnect(self) -> None:
        waited = time.monotonic() - (self._lost_since or time.monotonic())
        if self.reconnect_max_wait_s is not None and waited > self.reconnect_max_wait_s:
            raise SourceError(f"stream {self.source_id} lost for {waited:.0f} s (more than "
                              f"--reconnect-max-wait {self.reconnect_max_wait_s:g} s)")
        time.sleep(self._pause)
        self._pause = min(MAX_PAUSE_S, self._pause * 2)
        cap = self._capture()
        if cap is None:
            raise SourceTimeout(f"stream {self.source_id} not reachable yet; still trying")
        self._cap = cap
        self._stats["reconnects"] += 1
        self._event(f"stream {self.source_id} reconnected after {time.monotonic() - self._lost_since:.1f} s")
        self._lost_since = None
