"""One inspection lane: a frame source, its grab thread, an Inspector, a verdict log.

For every frame the lane thread runs ``Inspector.check``, pulses the reject
output on NG (when asked), appends the verdict to the log (fsync'd before the
next frame is taken from the queue), then hands the NG overlay to the
background :class:`OverlayWriter`, which never makes the lane wait.

A frame ``check`` cannot judge (a bad frame, a score that is not a finite
number, an unexpected error) gets an ``ERROR`` verdict, and with a reject line
it is rejected too: a part is never passed on a number that could not be
computed. ``MAX_CONSECUTIVE_ERRORS`` such frames in a row end the lane
(:class:`TooManyErrors`) rather than log ERROR forever.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..inspector import Inspector
from ..threads import ThreadPlan
from ..manifest import ModelDirError
from ..preprocess import MAX_FRAME_PIXELS
from ..sources import CameraConfig, CameraSource, FolderSource, Frame, FrameSource, SourceError, VideoSource
from ..sources.stream import StreamSource
from .grabber import EndOfFrames, Grabber
from .overlay_writer import OverlayBudget, OverlayWriter
from .stats import LaneStats
from .verdict_log import VerdictLog, VerdictLogError

log = logging.getLogger(__name__)

KINDS = ("camera", "folder", "video", "stream")
MAX_CONSECUTIVE_ERRORS = 20          # frames in a row with an ERROR verdict from check() end the lane
OVERLAY_CLOSE_TIMEOUT_S = 5.0        # at the end, queued overlays get this long; a hung write is left behind
_NON_FINITE = re.compile(r"\b(nan|inf|infinite|infinity|non-finite|not finite)\b", re.IGNORECASE)


class TooManyErrors(RuntimeError):
    """``MAX_CONSECUTIVE_ERRORS`` frames in a row could not be judged: the lane inspects nothing."""


def error_kind(exc: Exception) -> str:
    """The ``error_kind`` of a frame whose ``check`` raised ``exc``.

    ``"score"``: a ValueError about a score that is not a finite number (NaN, inf);
    ``"bad_frame"``: any other ValueError (the Inspector refused the frame);
    ``"inspect"``: anything else.

    Example::

        error_kind(ValueError("image score is nan")) == "score"
    """
    if not isinstance(exc, ValueError):
        return "inspect"
    text = f"{type(exc).__name__} {exc}"
    return "score" if "score" in text.lower() and _NON_FINITE.search(text) else "bad_frame"


@dataclass(frozen=True)
class ReviewFrames:
    """Which original frames a run keeps for review, beside the NG overlays (under the same budget).

    ``ng_frames``: every NG frame whose overlay is written (``ng/<run>/<id>.frame.png``, lossless);
    ``ok_every``: also every N-th judged frame that is OK (``ok/<run>/...``; 0: none), so a reviewer
    can check the passes too. Each verdict line names the file as ``frame``.
    """

    ng_frames: bool = True
    ok_every: int = 0


@dataclass
class LaneSpec:
    """What one lane inspects and with which model.

    ``kind`` is ``"camera"`` (``camera`` holds its :class:`CameraConfig`),
    ``"folder"`` or ``"video"`` (``path``; ``loop`` replays it forever), or ``"stream"`` (``path``: a
    stream URL or ``usb:N``, see :class:`~apc_edge.sources.stream.StreamSource`).
    ``threshold`` overrides the model's raw threshold. ``reject_line`` (camera
    only) gets a ``reject_pulse_ms`` pulse on every NG verdict. ``name`` is the
    lane's sub-folder of the output folder when a run has several lanes.

    Example::

        LaneSpec("models/bottle", "camera", camera=CameraConfig(serial="40123456", trigger="hardware"),
                 reject_line="Line2", reject_pulse_ms=40)
    """

    model_dir: str | Path
    kind: str
    path: str | Path | None = None
    camera: CameraConfig | None = None
    loop: bool = False
    threshold: float | None = None
    device: str = "CPU"
    reject_line: str | None = None
    reject_pulse_ms: float = 50.0
    name: str | None = None
    reconnect_max_wait_s: float | None = None    # stream only (a camera's is in its CameraConfig)

    def __post_init__(self):
        self.model_dir = Path(self.model_dir)
        if self.kind not in KINDS:
            raise ValueError(f"lane kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "camera":
            self.camera = self.camera or CameraConfig()
        elif self.path is None:
            raise ValueError(f"a {self.kind} lane needs a path")
        if self.reject_line and self.kind != "camera":
            raise ValueError("a reject output needs a camera source (--reject-line works with --camera only)")
        if self.reject_pulse_ms <= 0:
            raise ValueError(f"reject pulse length must be > 0 ms, got {self.reject_pulse_ms}")
        if self.name is None:
            self.name = (self.camera.serial or "camera") if self.kind == "camera" else Path(self.path).name

    @property
    def latest_wins(self) -> bool:
        """True for a free-running camera grabbing the latest image, and for a live stream: frames may be
        dropped (and are counted)."""
        if self.kind == "stream":
            return True
        return self.kind == "camera" and self.camera.trigger == "none" and self.camera.grab_strategy == "latest"

    def build_source(self) -> FrameSource:
        if self.kind == "camera":
            return CameraSource(self.camera)
        if self.kind == "folder":
            return FolderSource(self.path, loop=self.loop)
        if self.kind == "stream":
            return StreamSource(str(self.path), reconnect_max_wait_s=self.reconnect_max_wait_s)
        return VideoSource(self.path, loop=self.loop)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="milliseconds")


def _file_tag(name: str | None) -> str:
    return "_" + re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).stem)[:80] if name else ""


class Lane:
    """Runs one :class:`LaneSpec` in two threads (grab, inspect), writing into ``out_dir``.

    Example::

        lane = Lane(spec, "out/line1", run_id="20260101T000000Z-1")
        lane.open()          # loads the model, opens the source and the log; raises on a bad setup
        lane.start()
        lane.join()
        print(lane.stats.frames, lane.end_reason)
    """

    def __init__(self, spec: LaneSpec, out_dir: str | Path, run_id: str, max_frames: int | None = None,
                 overlay_budget: OverlayBudget | None = None, max_frame_pixels: int = MAX_FRAME_PIXELS,
                 review: ReviewFrames | None = None, publisher=None):
        self.spec = spec
        self.out_dir = Path(out_dir)
        self.run_id = run_id
        self.max_frames = max_frames
        self.max_frame_pixels = max_frame_pixels
        self.review = review or ReviewFrames()
        self.publisher = publisher            # e.g. publish.MqttPublisher: each logged verdict, never blocking
        self.overlay_budget = overlay_budget or OverlayBudget()
        self.stats = LaneStats()
        self.inspector: Inspector | None = None
        self.source: FrameSource | None = None
        self.vlog = VerdictLog(self.out_dir / "verdicts.jsonl")
        self.grabber: Grabber | None = None
        self.writer: OverlayWriter | None = None
        self.end_reason: str | None = None
        self.fatal: str | None = None
        self.too_many_errors = False
        self._stop = threading.Event()
        self._stop_reason = "stopped"
        self._next_id = 0
        self._consecutive_errors = 0
        self._thread = threading.Thread(target=self._loop, name=f"inspect {spec.name}", daemon=True)

    # -- lifecycle ------------------------------------------------------------
    def open(self, threads: ThreadPlan | None = None) -> None:
        """Load the model, open the source and the verdict log (model first: no camera is
        touched when the model dir is bad). ``threads``: the plan for this lane's Inspector (default: one
        Inspector on every core). Raises ModelDirError, SourceError or VerdictLogError."""
        self.inspector = Inspector(self.spec.model_dir, device=self.spec.device, threshold=self.spec.threshold,
                                   threads=threads or "auto", max_frame_pixels=self.max_frame_pixels)
        self.source = self.spec.build_source()
        self.source.open()
        try:
            self.vlog.open()
        except VerdictLogError:
            self.source.close()
            raise

    def start(self) -> None:
        self.grabber = Grabber(self.source, latest=self.spec.latest_wins, max_frames=self.max_frames)
        # a live source runs at the line's pace, where a delayed check is a delayed part: the writer then encodes
        # at background priority (a saturated line drops overlays, counted); a replay keeps every one it can
        self.writer = OverlayWriter(self.overlay_budget, keep_free_on=self.out_dir,
                                    background=self.spec.kind in ("camera", "stream"))
        self.stats.started = time.monotonic()
        self.grabber.start()
        self._thread.start()

    def stop(self, reason: str = "stopped") -> None:
        """End soon (thread-safe, returns at once): a free-running camera after the frame
        in hand; other sources after the frames already grabbed, so none goes unjudged."""
        self._stop_reason = reason
        self._stop.set()
        if self.grabber is not None:
            self.grabber.stop()

    def join(self, timeout_s: float | None = None) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def taken(self) -> int:
        return self.stats.taken

    # -- the inspect thread -----------------------------------------------------
    def _loop(self) -> None:
        try:
            while True:
                if self._stop.is_set() and self.spec.latest_wins:
                    self.end_reason = self._stop_reason
                    break
                item = self.grabber.get(timeout_s=0.2)
                self._log_source_events()          # also while idle: an outage shows up at once
                if item is None:
                    continue
                if isinstance(item, EndOfFrames):
                    self.end_reason = self._stop_reason if item.reason == "stopped" else item.reason
                    if item.error:
                        self._fail(item.error)
                    break
                self._process(item)
                if self.max_frames is not None and self.taken >= self.max_frames:
                    self.end_reason = "max frames"
                    break
        except VerdictLogError as exc:
            self.end_reason, self.fatal = "error", str(exc)
            log.error("%s", exc)
        except TooManyErrors as exc:
            self.too_many_errors = True
            self._fail(str(exc))
            self.end_reason = "consecutive errors"
        except Exception as exc:
            self.end_reason = "error"
            self._fail(f"{type(exc).__name__}: {exc}")
        finally:
            self.grabber.abort()
            if self.grabber.join(10.0):
                self._close_source()
            else:
                log.error("%s: the grab thread does not end; leaving the source open", self.spec.name)
            try:
                self._log_source_events()
            except VerdictLogError as exc:
                log.error("%s", exc)
            self.stats.ended = time.monotonic()
            self.vlog.close()
            counts = self.writer.close(OVERLAY_CLOSE_TIMEOUT_S)
            self.stats.ng_images = counts.written
            self.stats.ng_images_skipped = counts.not_written

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception as exc:  # a removed camera may refuse even this
            log.warning("%s: closing the source: %s", self.spec.name, exc)

    def _fail(self, message: str) -> None:
        """A lane-ending error: log it, record it in the verdict log when possible."""
        self.end_reason, self.fatal = "error", message
        log.error("%s: %s", self.spec.name, message)
        try:
            self._log(self._record(None, error_kind="fatal", error=message))
        except VerdictLogError as exc:
            log.error("%s", exc)

    def _record(self, frame: Frame | None, **fields) -> dict:
        ts = frame.timestamp if frame is not None else time.time()
        rec = {"time": _iso(ts), "epoch": round(ts, 3), "run": self.run_id,
               "source": frame.source_id if frame is not None else self.source.source_id,
               "frame_id": frame.frame_id if frame is not None else None,
               "file": frame.name if frame is not None else None}
        if "error" in fields:
            rec["verdict"] = "ERROR"
        rec.update(fields)
        return rec

    def _log(self, rec: dict) -> None:
        """Append to the verdict log (the record of truth), then hand the line to the publisher, if any."""
        self.vlog.append(rec)
        if self.publisher is not None:
            self.publisher.publish(self.spec.name, rec)

    def _log_source_events(self) -> None:
        for message in self.source.take_events():
            self.stats.source_events += 1
            self._log(self._record(None, error_kind="source", error=message))

    def _process(self, frame: Frame) -> None:
        gap = max(0, frame.frame_id - self._next_id)
        self._next_id = frame.frame_id + 1
        self.stats.dropped += gap
        try:
            result = self.inspector.check(frame.image, with_map=True)
        except ModelDirError:
            raise
        except Exception as exc:
            self._log_error_verdict(frame, gap, exc)
            return
        self._consecutive_errors = 0
        ng = bool(result.is_anomalous)
        rec = self._record(frame, skipped_before=gap, verdict="NG" if ng else "OK",
                           score=round(result.score, 6), raw_score=round(result.raw_score, 6),
                           threshold=round(result.threshold, 6), check_ms=round(result.timings["total"], 2))
        if ng and self.spec.reject_line:
            rec["rejected"] = self._reject()
        overlay_rel = frame_rel = None
        stem = f"{frame.frame_id:08d}{_file_tag(frame.name)}"
        if ng:
            dropped = self.writer.admit(frame.image, result.anomaly_map)
            if dropped is None:
                overlay_rel = f"ng/{self.run_id}/{stem}.png"
                rec["overlay"] = overlay_rel
                if self.review.ng_frames:
                    frame_rel = rec["frame"] = f"ng/{self.run_id}/{stem}.frame.png"
            else:
                rec["overlay_dropped"] = dropped
        elif self.review.ok_every and self.stats.frames % self.review.ok_every == 0:
            dropped = self.writer.admit(frame.image, None)
            if dropped is None:
                frame_rel = rec["frame"] = f"ok/{self.run_id}/{stem}.frame.png"
        latency_ms = (time.time() - frame.timestamp) * 1e3
        rec["latency_ms"] = round(latency_ms, 2)
        self._log(rec)
        self.stats.frames += 1
        self.stats.ng += ng
        self.stats.latency.add(latency_ms)
        self.stats.check.add(result.timings["total"])
        if overlay_rel or frame_rel:
            shown = self.inspector.preprocessor.to_8bit(frame.image)      # a 16-bit frame, as the model saw it
            self.writer.put(self.out_dir / overlay_rel if overlay_rel else None, frame.image,
                            result.anomaly_map if overlay_rel else None, result.threshold,
                            label=f"NG {result.score:.2f}  #{frame.frame_id}",
                            frame_path=self.out_dir / frame_rel if frame_rel else None, shown=shown)

    def _log_error_verdict(self, frame: Frame, gap: int, exc: Exception) -> None:
        """An ERROR verdict for a frame ``check`` could not judge; rejected when there is a reject line."""
        kind = error_kind(exc)
        message = str(exc) if kind != "inspect" else f"{type(exc).__name__}: {exc}"
        if kind == "bad_frame":
            self.stats.bad_frames += 1
        elif kind == "score":
            self.stats.score_errors += 1
        else:
            self.stats.inspect_errors += 1
        self._consecutive_errors += 1
        log.warning("%s frame %d%s: %s: %s", self.spec.name, frame.frame_id,
                    f" ({frame.name})" if frame.name else "", kind.replace("_", " "), message)
        rec = self._record(frame, skipped_before=gap, error_kind=kind, error=message)
        if self.spec.reject_line:
            rec["rejected"] = self._reject()
        self._log(rec)
        if self._consecutive_errors >= MAX_CONSECUTIVE_ERRORS:
            raise TooManyErrors(f"{MAX_CONSECUTIVE_ERRORS} frames in a row could not be judged (ERROR "
                                f"verdicts); last: {kind}: {message}") from exc

    def _reject(self) -> bool:
        try:
            self.source.pulse_output(self.spec.reject_line, self.spec.reject_pulse_ms)
            return True
        except SourceError as exc:
            self.stats.reject_errors += 1
            log.warning("%s: reject output %s failed: %s", self.spec.name, self.spec.reject_line, exc)
            return False
