"""The inspection runtime behind ``apc-inspect``: grab thread, inspect loop, verdict log, stats.

Example::

    from apc_edge.runtime import InspectRun, LaneSpec, summary_lines
    from apc_edge.sources import CameraConfig

    spec = LaneSpec("models/bottle", "camera", camera=CameraConfig(trigger="hardware"),
                    reject_line="Line2", reject_pulse_ms=40)
    run = InspectRun([spec], "out/line1")
    run.open()
    print("\\n".join(summary_lines(run.run())))      # run.stop() from another thread ends it
"""
from .grabber import EndOfFrames, Grabber
from .lane import Lane, LaneSpec, ReviewFrames
from .runner import InspectRun, summary_lines
from .stats import LatencyHistogram, rss_mb
from .status import StatusAwareHandler, StatusLine
from .verdict_log import VerdictLog, VerdictLogError

__all__ = ["EndOfFrames", "Grabber", "InspectRun", "Lane", "LaneSpec", "LatencyHistogram", "ReviewFrames", "StatusAwareHandler",
           "StatusLine", "VerdictLog", "VerdictLogError", "rss_mb", "summary_lines"]
