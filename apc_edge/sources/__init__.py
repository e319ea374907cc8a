"""Frame sources of the runtime: Basler cameras (pypylon), image folders, video files.

All sources deliver :class:`Frame` objects through one interface (open / read /
close, context manager, iteration). pypylon is imported only when a camera
source is opened, and nothing here imports torch.

Example::

    from apc_edge.sources import open_source

    with open_source("camera:40123456", trigger="hardware") as src:
        for frame in src:
            result = model(frame.image)
"""
from .base import Frame, FrameSource, SourceError, SourceTimeout
from .camera import CameraConfig, CameraSource, list_cameras
from .factory import open_source
from .folder import FolderSource
from .reject import RejectOutput
from .video import VideoSource

__all__ = [
    "CameraConfig", "CameraSource", "Frame", "FolderSource", "FrameSource", "RejectOutput",
    "SourceError", "SourceTimeout", "VideoSource", "list_cameras", "open_source",
]
