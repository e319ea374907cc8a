"""Basler cameras through pypylon: configuration, grabbing, failed buffers, reconnects.

pypylon is imported only when a :class:`CameraSource` is opened, so the rest of
``apc_edge.sources`` works on machines without it.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from . import nodes
from .base import OUTPUT_FORMATS, Frame, FrameSource, SourceError, SourceTimeout

log = logging.getLogger(__name__)

TRIGGERS = ("none", "software", "hardware")
STRATEGIES = ("latest", "one_by_one")
_INVALID_BLOCK_ID = 2**64 - 1


@dataclass
class CameraConfig:
    """How to find, set up and grab from one Basler camera.

    ``serial`` is the serial number or the user-defined name (``None``: first camera
    found). ``trigger``: ``"none"`` (free-run), ``"software"`` (each :meth:`read`
    fires one trigger) or ``"hardware"`` (``trigger_line`` / ``trigger_edge``).
    ``strategy``: ``"latest"`` (newest image only, older ones dropped and counted)
    or ``"one_by_one"`` (queue of ``max_num_buffer``); ``None`` picks ``"latest"``
    for free-run and ``"one_by_one"`` for triggered grabbing. ``exposure_us``,
    ``gain`` (dB), ``width``, ``height`` and ``pixel_format`` are written only when
    given. ``extra`` holds raw node settings written last, in order (commands are
    executed). ``output_format`` is what ``Frame.image`` holds: ``"BGR8"`` (HxWx3)
    or ``"Mono8"`` (HxW). A lost camera is reopened after the delays in
    ``reconnect_backoff_s`` (the last one repeats) for at most
    ``reconnect_max_wait_s`` (``None``: forever). ``max_consecutive_failed``
    failed grabs in a row raise :class:`SourceError`.

    Example::

        cfg = CameraConfig(serial="40123456", trigger="hardware", exposure_us=800,
                           output_format="BGR8")
    """

    serial: str | None = None
    trigger: str = "none"
    trigger_line: str = "Line1"
    trigger_edge: str = "RisingEdge"
    strategy: str | None = None
    exposure_us: float | None = None
    gain: float | None = None
    width: int | None = None
    height: int | None = None
    pixel_format: str | None = None
    output_format: str = "BGR8"
    max_num_buffer: int = 10
    grab_timeout_ms: int = 1000
    reconnect: bool = True
    reconnect_backoff_s: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0)
    reconnect_max_wait_s: float | None = 60.0
    max_consecutive_failed: int = 50
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.serial is not None:
            self.serial = str(self.serial) or None
        if self.trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, got {self.trigger!r}")
        if self.strategy is not None and self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES} or None, got {self.strategy!r}")
        if self.output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {self.output_format!r}")
        if self.max_num_buffer < 1 or self.grab_timeout_ms <= 0 or self.max_consecutive_failed < 1:
            raise ValueError("max_num_buffer, grab_timeout_ms and max_consecutive_failed must be positive")
        self.reconnect_backoff_s = tuple(float(s) for s in self.reconnect_backoff_s)
        if not self.reconnect_backoff_s or min(self.reconnect_backoff_s) < 0:
            raise ValueError("reconnect_backoff_s must be a non-empty sequence of delays >= 0")
        self.extra = dict(self.extra)

    @property
    def grab_strategy(self) -> str:
        """The strategy in effect (``strategy`` or the default for ``trigger``)."""
        return self.strategy or ("latest" if self.trigger == "none" else "one_by_one")


def _import_pylon():
    try:
        from pypylon import genicam, pylon
    except ImportError as exc:
        raise SourceError("the camera source needs pypylon, which is not installed") from exc
    return pylon, genicam


def _describe(info) -> str:
    text = f"{info.GetSerialNumber()} ({info.GetModelName()}, {info.GetDeviceClass()}"
    name = info.GetUserDefinedName()
    return text + (f", name {name!r})" if name else ")")


def list_cameras() -> list[dict[str, str]]:
    """The Basler cameras visible now: serial, name (user-defined), model, device_class."""
    pylon, _ = _import_pylon()
    return [{"serial": d.GetSerialNumber(), "name": d.GetUserDefinedName(), "model": d.GetModelName(),
             "device_class": d.GetDeviceClass()} for d in pylon.TlFactory.GetInstance().EnumerateDevices()]


class CameraSource(FrameSource):
    """Frames from a Basler camera.

    :meth:`read` raises :class:`SourceTimeout` when no frame arrives in time (an
    idle hardware-triggered line), so the caller just reads again. Failed grabs
    are counted in ``stats['failed_buffers']`` and in the next frame's
    ``skipped_before``; frames dropped by the ``"latest"`` strategy or by the
    transport show up as gaps in the camera's block ids and are counted the same
    way. A removed camera is reopened by its serial number with the same
    configuration (``stats['reconnects']``); in free-run the frames missed during
    the outage are estimated from the camera's frame rate and counted as skipped.

    Example::

        with CameraSource(CameraConfig(serial="40123456", trigger="software")) as cam:
            while running:
                try:
                    frame = cam.read(timeout_s=2.0)
                except SourceTimeout:
                    continue
                if is_bad(frame):
                    cam.pulse_output("Line2", duration_ms=50)
    """

    def __init__(self, config: CameraConfig | None = None, **overrides: Any):
        config = config or CameraConfig()
        if overrides:
            config = dataclasses.replace(config, **overrides)
        super().__init__(config.serial or "camera")
        self.config = config
        self.serial: str | None = None
        self.generation = 0          # incremented at every (re)connect
        self.node_lock = threading.RLock()
        self._pylon = self._genicam = None
        self._cam = None
        self._converter = None
        self._trigger_node = None
        self._can_wait_trigger = False
        self._trigger_pending = False
        self._frame_rate: float | None = None
        self._last_block: int | None = None
        self._pending_skip = 0
        self._consecutive_failed = 0
        self._last_failure = ""
        self._outputs: dict[str, Any] = {}
        self._cancel = threading.Event()

    # -- public access to the device ---------------------------------------
    @property
    def camera(self):
        """The open ``pylon.InstantCamera`` (for settings this class does not cover)."""
        if self._cam is None:
            raise SourceError(f"camera {self.source_id} is not connected")
        return self._cam

    @property
    def node_map(self):
        return self.camera.GetNodeMap()

    def pulse_output(self, line: str = "Line2", duration_ms: float = 50) -> None:
        """Drive digital output ``line`` high for ``duration_ms`` without blocking.

        See :class:`apc_edge.sources.reject.RejectOutput` for the nodes used.
        """
        from .reject import RejectOutput

        out = self._outputs.get(line)
        if out is None:
            out = self._outputs[line] = RejectOutput(self, line=line)
        out.pulse(duration_ms)

    def cancel(self) -> None:
        """Make a :meth:`read` waiting for a lost camera give up soon (from any thread).

        The waiting read raises :class:`SourceError`; :meth:`open` clears the request.
        """
        self._cancel.set()

    # -- lifecycle ----------------------------------------------------------
    def open(self) -> None:
        if self._is_open:
            return
        self._cancel.clear()
        self._pylon, self._genicam = _import_pylon()
        self._connect(self.config.serial)
        self._is_open = True

    def close(self) -> None:
        for out in self._outputs.values():
            out.close()
        self._outputs.clear()
        self._teardown()
        self._is_open = False

    def _find_device(self, wanted: str | None):
        devices = list(self._pylon.TlFactory.GetInstance().EnumerateDevices())
        for info in devices:
            if wanted is None or wanted in (info.GetSerialNumber(), info.GetUserDefinedName()):
                return info
        found = "; ".join(_describe(d) for d in devices) or "none"
        raise SourceError(f"no Basler camera found (serial={wanted!r}); cameras found: {found}")

    def _connect(self, wanted: str | None) -> None:
        pylon, genicam = self._pylon, self._genicam
        with self.node_lock:
            try:
                info = self._find_device(wanted)
                self._cam = pylon.InstantCamera(pylon.TlFactory.GetInstance().CreateDevice(info))
                self._cam.Open()
                self.serial = self.source_id = info.GetSerialNumber()
                self._configure(self._cam.GetNodeMap())
                self._cam.MaxNumBuffer.Value = self.config.max_num_buffer
                strategy = (pylon.GrabStrategy_LatestImageOnly if self.config.grab_strategy == "latest"
                            else pylon.GrabStrategy_OneByOne)
                self._cam.StartGrabbing(strategy)
            except (SourceError, genicam.GenericException) as exc:
                self._teardown()
                if isinstance(exc, SourceError):
                    raise
                raise SourceError(f"cannot open Basler camera {wanted or '(first found)'}: "
                                  f"{nodes.pylon_message(exc)}") from exc
            self._converter = pylon.ImageFormatConverter()
            self._converter.OutputPixelFormat = (pylon.PixelType_BGR8packed if self.config.output_format == "BGR8"
                                                 else pylon.PixelType_Mono8)
            nm = self._cam.GetNodeMap()
            self._trigger_node = nodes.get_node(nm, "TriggerSoftware", required=False)
            self._can_wait_trigger = self.config.trigger == "software" and self._cam.CanWaitForFrameTriggerReady()
            self._frame_rate = self._read_frame_rate(nm)
            self._trigger_pending = False
            self._last_block = None
            self._consecutive_failed = 0
            self.generation += 1

    def _configure(self, nm) -> None:
        c = self.config
        if c.pixel_format is not None:
            nodes.set_node(nm, "PixelFormat", c.pixel_format)
        if c.width is not None:
            nodes.set_node(nm, "Width", c.width)
        if c.height is not None:
            nodes.set_node(nm, "Height", c.height)
        if c.exposure_us is not None:
            nodes.set_if_writable(nm, "ExposureAuto", "Off")
            nodes.set_first(nm, ("ExposureTime", "ExposureTimeAbs"), c.exposure_us)
        if c.gain is not None:
            nodes.set_if_writable(nm, "GainAuto", "Off")
            nodes.set_first(nm, ("Gain", "GainAbs"), c.gain)
        self._configure_trigger(nm)
        for name, value in c.extra.items():
            nodes.set_node(nm, name, value)

    def _configure_trigger(self, nm) -> None:
        c = self.config
        selectors = nodes.enum_entries(nm, "TriggerSelector")
        for other in ("AcquisitionStart", "FrameBurstStart"):
            if other in selectors:
                nodes.set_node(nm, "TriggerSelector", other)
                nodes.set_if_writable(nm, "TriggerMode", "Off")
        if "FrameStart" in selectors:
            nodes.set_node(nm, "TriggerSelector", "FrameStart")
        elif selectors and c.trigger != "none":
            raise SourceError(f"camera node 'TriggerSelector' has no entry 'FrameStart'; available: {selectors}")
        nodes.set_if_writable(nm, "AcquisitionMode", "Continuous")
        if c.trigger == "none":
            nodes.set_if_writable(nm, "TriggerMode", "Off")
            return
        nodes.set_node(nm, "TriggerMode", "On")
        if c.trigger == "software":
            nodes.set_node(nm, "TriggerSource", "Software")
            nodes.get_node(nm, "TriggerSoftware")
        else:
            nodes.set_node(nm, "TriggerSource", c.trigger_line)
            if nodes.get_node(nm, "TriggerActivation", required=False) is not None or c.trigger_edge != "RisingEdge":
                nodes.set_node(nm, "TriggerActivation", c.trigger_edge)

    @staticmethod
    def _read_frame_rate(nm) -> float | None:
        for name in ("ResultingFrameRate", "ResultingFrameRateAbs"):
            node = nodes.get_node(nm, name, required=False)
            if node is not None and node.IsReadable():
                return float(node.GetValue())
        return None

    def _teardown(self) -> None:
        with self.node_lock:
            cam, self._cam = self._cam, None
            self._trigger_node = None
            if cam is None:
                return
            for step in (cam.StopGrabbing, cam.Close, cam.DestroyDevice):
                try:
                    step()
                except Exception as exc:  # a removed device may refuse any call
                    log.debug("camera %s: %s failed during teardown: %s", self.serial, step.__name__, exc)

    # -- grabbing -----------------------------------------------------------
    def read(self, timeout_s: float | None = None) -> Frame:
        """Next frame; raises :class:`SourceTimeout` when none arrives within ``timeout_s``
        (default ``grab_timeout_ms``) and :class:`SourceError` when the camera is lost for good
        or ``max_consecutive_failed`` grabs fail in a row."""
        self._require_open()
        wait_s = self.config.grab_timeout_ms / 1000.0 if timeout_s is None else max(0.0, float(timeout_s))
        deadline = time.monotonic() + wait_s
        while True:
            lost = self._lost_reason()
            if lost:
                self._recover(lost)
                deadline = time.monotonic() + wait_s
                continue
            try:
                result = self._grab(deadline)
            except self._genicam.GenericException as exc:
                if isinstance(exc, self._genicam.RuntimeException) or self._cam.IsCameraDeviceRemoved():
                    self._recover(nodes.pylon_message(exc))
                    deadline = time.monotonic() + wait_s
                    continue
                raise SourceError(f"camera {self.serial}: {nodes.pylon_message(exc)}") from exc
            if result is None:
                if self._lost_reason():
                    continue
                hint = f"; last failed grab: {self._last_failure}" if self._consecutive_failed else ""
                raise SourceTimeout(f"camera {self.serial}: no frame within {wait_s:.3f} s{hint}")
            try:
                frame = self._take(result)
            finally:
                result.Release()
            if frame is not None:
                return frame

    def _lost_reason(self) -> str:
        """Why the camera cannot deliver now ("" when it can)."""
        if self._cam is None:
            return "not connected"
        if self._cam.IsCameraDeviceRemoved():
            return "device removed"
        if not self._cam.IsGrabbing():
            return "grabbing stopped"
        return ""

    def _grab(self, deadline: float):
        """One grab result, or None on timeout. Fires the software trigger when needed."""
        pylon, cam = self._pylon, self._cam
        if self.config.trigger == "software" and not self._trigger_pending:
            if self._can_wait_trigger and not cam.WaitForFrameTriggerReady(
                    self._ms_left(deadline), pylon.TimeoutHandling_Return):
                return None
            self._trigger_node.Execute()
            self._trigger_pending = True
        result = cam.RetrieveResult(self._ms_left(deadline), pylon.TimeoutHandling_Return)
        if not result.IsValid():
            return None
        self._trigger_pending = False
        return result

    @staticmethod
    def _ms_left(deadline: float) -> int:
        return max(0, int((deadline - time.monotonic()) * 1000))

    def _take(self, result) -> Frame | None:
        """Turn a grab result into a frame; None (and counted) when the grab failed."""
        block = result.GetBlockID()
        gap = 0
        if block != _INVALID_BLOCK_ID:
            if self._last_block is not None and block > self._last_block:
                gap = block - self._last_block - 1
            self._last_block = block
        self._pending_skip += max(gap, result.GetNumberOfSkippedImages())
        if not result.GrabSucceeded():
            self._pending_skip += 1
            self._stats["failed_buffers"] += 1
            self._consecutive_failed += 1
            self._last_failure = f"{result.GetErrorDescription()} (error 0x{result.GetErrorCode():x})"
            level = logging.WARNING if self._consecutive_failed == 1 else logging.DEBUG
            log.log(level, "camera %s: failed grab: %s", self.serial, self._last_failure)
            self._event(f"camera {self.serial}: failed grab: {self._last_failure}")
            if self._consecutive_failed >= self.config.max_consecutive_failed:
                count, self._consecutive_failed = self._consecutive_failed, 0
                raise SourceError(f"camera {self.serial}: {count} grabs in a row failed; "
                                  f"last error: {self._last_failure}")
            return None
        self._consecutive_failed = 0
        timestamp = time.time()
        if self._converter.ImageHasDestinationFormat(result):
            image = result.GetArray()                     # one copy out of the grab buffer
        else:
            image = self._converter.ConvertToArray(result)  # converted straight into a new array
        skipped, self._pending_skip = self._pending_skip, 0
        return self._emit(image, skipped=skipped, timestamp=timestamp)

    # -- reconnect ----------------------------------------------------------
    def _recover(self, reason: str) -> None:
        serial = self.serial
        frame_rate = self._frame_rate if self.config.trigger == "none" else None
        self._teardown()
        if not self.config.reconnect:
            raise SourceError(f"camera {serial} lost ({reason}) and reconnect is disabled")
        log.warning("camera %s lost (%s); reconnecting", serial, reason)
        self._event(f"camera {serial} lost ({reason}); reconnecting")
        lost_at = time.monotonic()
        backoff, max_wait = self.config.reconnect_backoff_s, self.config.reconnect_max_wait_s
        last_error, attempt = reason, 0
        while True:
            delay = backoff[min(attempt, len(backoff) - 1)]
            attempt += 1
            if max_wait is not None:
                left = lost_at + max_wait - time.monotonic()
                if left <= 0:
                    break
                delay = min(delay, left)
            if self._cancel.wait(delay):
                raise SourceError(f"camera {serial} lost ({reason}); reconnect cancelled")
            try:
                self._connect(serial)
            except SourceError as exc:
                last_error = str(exc)
                log.info("camera %s: reconnect attempt %d failed: %s", serial, attempt, exc)
                continue
            outage = time.monotonic() - lost_at
            self._stats["reconnects"] += 1
            if frame_rate:
                self._pending_skip += int(round(outage * frame_rate))
            log.warning("camera %s reconnected after %.2f s (attempt %d)", serial, outage, attempt)
            self._event(f"camera {serial} reconnected after {outage:.2f} s (attempt {attempt})")
            return
        raise SourceError(f"camera {serial} lost ({reason}) and not back within {max_wait} s; "
                          f"last error: {last_error}")
