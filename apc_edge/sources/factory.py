"""``open_source(spec)``: one string picks the frame source (camera, folder or video)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import FrameSource, SourceError
from .camera import CameraConfig, CameraSource
from .folder import FolderSource
from .video import VIDEO_EXTS, VideoSource


def open_source(spec: str | Path, **options: Any) -> FrameSource:
    """Build (not yet open) the source named by ``spec``.

    ``"camera"`` is the first Basler camera, ``"camera:SERIAL"`` a given one
    (serial number or user-defined name; ``options`` are :class:`CameraConfig`
    fields); an existing folder gives a :class:`FolderSource`, a video file
    (``.avi``, ``.mp4``, ...) a :class:`VideoSource` (``options``: ``loop``,
    ``output_format``). A folder literally named ``camera`` is reached as ``./camera``.

    Example::

        with open_source("camera:40123456", trigger="software") as src:
            frame = src.read()
    """
    text = str(spec)
    if text == "camera" or text.startswith("camera:"):
        serial = text[len("camera:"):] or None
        return CameraSource(CameraConfig(serial=serial, **options))
    path = Path(text)
    if path.is_dir():
        return FolderSource(path, **options)
    if path.is_file() and path.suffix.lower() in VIDEO_EXTS:
        return VideoSource(path, **options)
    if path.exists():
        raise SourceError(f"cannot use {text!r} as a frame source: not a folder or a video file "
                          f"({', '.join(VIDEO_EXTS)})")
    raise SourceError(f"frame source not found: {text!r} (expected 'camera[:SERIAL]', an image folder "
                      f"or a video file)")
