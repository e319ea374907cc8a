"""Frames from a folder of image files (offline evaluation, replaying a line)."""
from __future__ import annotations

import logging
from pathlib import Path

from ..preprocess import load_image
from .base import OUTPUT_FORMATS, Frame, FrameSource, SourceError, to_output_format

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")


class FolderSource(FrameSource):
    """Images of one folder (not recursive), in file-name order.

    Files with other extensions are ignored. A file that cannot be decoded is
    logged, counted in ``stats['errors']`` and in the next frame's
    ``skipped_before``, and passed over: one corrupt file never stops a run.
    ``output_format`` is ``None`` (as stored: mono stays HxW, colour is BGR),
    ``"BGR8"`` or ``"Mono8"``. With ``loop=True`` the folder is replayed forever.

    Example::

        with FolderSource("data/bottle/test/good") as src:
            for frame in src:
                print(frame.frame_id, frame.name, frame.image.shape)
    """

    def __init__(self, path: str | Path, loop: bool = False, exts: tuple[str, ...] = IMAGE_EXTS,
                 output_format: str | None = None):
        if output_format is not None and output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {OUTPUT_FORMATS} or None, got {output_format!r}")
        self.path = Path(path)
        super().__init__(str(self.path))
        self.loop = loop
        self.exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in exts)
        self.output_format = output_format
        self.files: list[Path] = []
        self._pos = 0
        self._pending_skip = 0
        self._delivered_this_pass = 0

    def open(self) -> None:
        if self._is_open:
            return
        if not self.path.is_dir():
            raise SourceError(f"image folder not found: {self.path}")
        self.files = sorted((p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in self.exts),
                            key=lambda p: p.name)
        if not self.files:
            raise SourceError(f"no images ({', '.join(self.exts)}) in folder {self.path}")
        self._pos = 0
        self._delivered_this_pass = 0
        self._is_open = True

    def close(self) -> None:
        self._is_open = False

    def read(self, timeout_s: float | None = None) -> Frame | None:
        """Next image; ``None`` when the folder is exhausted (never with ``loop=True``)."""
        self._require_open()
        while True:
            if self._pos >= len(self.files):
                if not self.loop:
                    return None
                if self._delivered_this_pass == 0:
                    raise SourceError(f"no readable image in folder {self.path}")
                self._pos = 0
                self._delivered_this_pass = 0
            path = self.files[self._pos]
            self._pos += 1
            try:
                image = load_image(path)          # the one image reader: training, evaluation and this source
            except ValueError:
                image = None
            if image is None:
                self._stats["errors"] += 1
                self._pending_skip += 1
                log.warning("skipping unreadable image %s", path)
                self._event(f"cannot decode image file {path}")
                continue
            skipped, self._pending_skip = self._pending_skip, 0
            self._delivered_this_pass += 1
            return self._emit(to_output_format(image, self.output_format), name=path.name, skipped=skipped)
