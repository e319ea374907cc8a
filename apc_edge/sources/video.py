"""Frames from a video file, decoded by OpenCV."""
from __future__ import annotations

from pathlib import Path

import cv2

from .base import OUTPUT_FORMATS, Frame, FrameSource, SourceError, to_output_format

# OpenCV's FFmpeg also "decodes" a text file (.txt, .nfo, ...) as frames of rendered text, so the
# extension is what says a file is meant as a video
VIDEO_EXTS = (".avi", ".mp4", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm", ".ts", ".mts",
              ".m2ts", ".flv", ".3gp", ".ogv", ".mjpeg", ".mjpg")


class VideoSource(FrameSource):
    """Decoded frames of a video file (BGR unless ``output_format="Mono8"``).

    With ``loop=True`` the video restarts at its end; otherwise :meth:`read`
    returns ``None`` there. :meth:`open` refuses a file without a video extension
    (:data:`VIDEO_EXTS`) and one whose first frame does not decode.

    Example::

        with VideoSource("line1.avi") as src:
            for frame in src:
                print(frame.frame_id, frame.image.shape)
    """

    def __init__(self, path: str | Path, loop: bool = False, output_format: str | None = None):
        if output_format is not None and output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {OUTPUT_FORMATS} or None, got {output_format!r}")
        self.path = Path(path)
        super().__init__(str(self.path))
        self.loop = loop
        self.output_format = output_format
        self._cap: cv2.VideoCapture | None = None
        self._first = None

    def open(self) -> None:
        if self._is_open:
            return
        if not self.path.is_file():
            raise SourceError(f"video file not found: {self.path}")
        if self.path.suffix.lower() not in VIDEO_EXTS:
            raise SourceError(f"not a video file: {self.path} (expected one of {', '.join(VIDEO_EXTS)})")
        cap = cv2.VideoCapture(str(self.path))
        ok, first = cap.read() if cap.isOpened() else (False, None)
        if not ok:
            cap.release()
            raise SourceError(f"cannot decode video file: {self.path} (no frame could be read)")
        self._cap, self._first = cap, first
        self._is_open = True

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._first = None
        self._is_open = False

    def read(self, timeout_s: float | None = None) -> Frame | None:
        """Next decoded frame; ``None`` at the end of the video (never with ``loop=True``)."""
        self._require_open()
        if self._first is not None:                   # read by open() to prove the file decodes
            ok, image, self._first = True, self._first, None
        else:
            ok, image = self._cap.read()
        if not ok and self.loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._cap.read()
        if not ok:
            return None
        return self._emit(to_output_format(image, self.output_format))
