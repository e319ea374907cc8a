"""Frames from a video file, decoded by OpenCV."""
from __future__ import annotations

from pathlib import Path

import cv2

from .base import OUTPUT_FORMATS, Frame, FrameSource, SourceError, to_output_format

VIDEO_EXTS = (".avi", ".mp4", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv")


class VideoSource(FrameSource):
    """Decoded frames of a video file (BGR unless ``output_format="Mono8"``).

    With ``loop=True`` the video restarts at its end; otherwise :meth:`read`
    returns ``None`` there.

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

    def open(self) -> None:
        if self._is_open:
            return
        if not self.path.is_file():
            raise SourceError(f"video file not found: {self.path}")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot decode video file: {self.path}")
        self._cap = cap
        self._is_open = True

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._is_open = False

    def read(self, timeout_s: float | None = None) -> Frame | None:
        """Next decoded frame; ``None`` at the end of the video (never with ``loop=True``)."""
        self._require_open()
        ok, image = self._cap.read()
        if not ok and self.loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._cap.read()
        if not ok:
            return None
        return self._emit(to_output_format(image, self.output_format))
