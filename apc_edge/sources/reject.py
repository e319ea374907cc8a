"""Reject signal: a short pulse on a camera digital output, e.g. to fire an air jet.

Nodes used (SFNC names, as on Basler ace USB / ace 2 and the pylon emulator):
``LineSelector`` = line, ``LineMode`` = ``Output`` (when writable), ``LineSource`` =
``UserOutput1`` (or ``UserOutput`` on cameras that name it so), then
``UserOutputSelector`` = ``UserOutput1`` and ``UserOutputValue`` True ... False.
A camera lacking one of them raises :class:`SourceError` naming the node.
"""
from __future__ import annotations

import logging
import threading

from . import nodes
from .base import SourceError

log = logging.getLogger(__name__)


class RejectOutput:
    """Non-blocking output pulses on one line of an open :class:`CameraSource`.

    The line is set up on the first pulse and again after every reconnect. A pulse
    requested while one is running extends it. The falling edge is timed by a
    ``threading.Timer``, so :meth:`pulse` returns at once.

    Example::

        with CameraSource(CameraConfig(trigger="hardware")) as cam:
            reject = RejectOutput(cam, line="Line2")
            for frame in cam:
                if is_bad(frame):
                    reject.pulse(duration_ms=50)
    """

    def __init__(self, source, line: str = "Line2", user_output: str = "UserOutput1"):
        self.source = source
        self.line = line
        self.user_output = user_output
        self._configured_generation = -1
        self._timer: threading.Timer | None = None

    def _configure(self, nm) -> None:
        nodes.set_node(nm, "LineSelector", self.line)
        mode = nodes.get_node(nm, "LineMode", required=False)
        if mode is not None:
            if mode.IsWritable():
                nodes.set_node(nm, "LineMode", "Output")
            elif mode.GetValue() != "Output":
                raise SourceError(f"camera line {self.line!r} cannot be an output (node 'LineMode' is read-only)")
        sources = nodes.enum_entries(nm, "LineSource")
        source = self.user_output if self.user_output in sources else "UserOutput"
        nodes.set_node(nm, "LineSource", source)
        self._configured_generation = self.source.generation

    def _write(self, value: bool) -> None:
        nm = self.source.node_map
        if self._configured_generation != self.source.generation:
            self._configure(nm)
        nodes.set_node(nm, "UserOutputSelector", self.user_output)
        nodes.set_node(nm, "UserOutputValue", value)

    def pulse(self, duration_ms: float = 50) -> None:
        """Set the output high now and low again after ``duration_ms``."""
        with self.source.node_lock:
            if self._timer is not None:
                self._timer.cancel()
            self._write(True)
            self._timer = threading.Timer(duration_ms / 1000.0, self._end_pulse)
            self._timer.daemon = True
            self._timer.start()

    def _end_pulse(self) -> None:
        with self.source.node_lock:
            if self._timer is not threading.current_thread():
                return  # superseded by a newer pulse or cancelled by close()
            self._timer = None
            try:
                self._write(False)
            except Exception as exc:  # camera closed or lost meanwhile; this is a timer thread
                log.warning("reject output %s: cannot end pulse: %s", self.line, exc)

    def close(self) -> None:
        """Cancel a running pulse and drive the output low if the camera is still there."""
        with self.source.node_lock:
            if self._timer is None:
                return
            self._timer.cancel()
            self._timer = None
            try:
                self._write(False)
            except SourceError as exc:
                log.warning("reject output %s: cannot reset output: %s", self.line, exc)
