"""Run several inspection lanes in one process: start, live stats, stop, summary.

Layout of the output folder: with one lane, ``OUT/verdicts.jsonl`` and
``OUT/ng/<run>/*.png``; with several lanes, the same under ``OUT/<lane name>/``
(the camera serial), one verdict log per camera so no lane waits on another's
fsync. ``OUT/summary.json`` describes the last run, every lane included.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import fields
from datetime import datetime
from pathlib import Path

from ..preprocess import MAX_FRAME_PIXELS
from ..threads import plan_threads
from .lane import Lane, LaneSpec, ReviewFrames
from .overlay_writer import OverlayBudget, OverlayCounts
from .stats import LatencyHistogram, rss_mb
from .status import StatusLine
from .verdict_log import write_file_atomic

log = logging.getLogger(__name__)


class InspectRun:
    """Lanes (source + model + log) run side by side until their sources end,
    ``max_frames`` frames each, or :meth:`stop` (thread-safe; signal handlers call it).

    Example::

        run = InspectRun([LaneSpec("models/bottle", "folder", path="frames")], "out")
        run.open()                       # raises ModelDirError / SourceError / VerdictLogError
        summary = run.run()
        print("\\n".join(summary_lines(summary)))
    """

    def __init__(self, specs: list[LaneSpec], out_dir: str | Path, max_frames: int | None = None,
                 overlay_budget: OverlayBudget | None = None, status: StatusLine | None = None,
                 max_frame_pixels: int = MAX_FRAME_PIXELS, review: ReviewFrames | None = None,
                 publisher=None):
        if not specs:
            raise ValueError("nothing to inspect: give at least one source")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"each lane needs its own name (camera serial); got {names}")
        self.out_dir = Path(out_dir)
        now = time.time()
        # start time for people, pid and a random tag so that runs started in the same second differ
        self.run_id = (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
                       + f"-{os.getpid()}-{secrets.token_hex(3)}")
        self.started = now
        self.status = status or StatusLine(enabled=False)
        self.stop_reason: str | None = None
        self.lanes = [Lane(s, self.out_dir if len(specs) == 1 else self.out_dir / s.name, self.run_id,
                           max_frames=max_frames, overlay_budget=overlay_budget, max_frame_pixels=max_frame_pixels,
                           review=review, publisher=publisher) for s in specs]
        self.publisher = publisher
        self.published: dict | None = None
        self.rss_mb = {"after_load": None, "first_frame": None, "end": None}
        self._last_tick = (time.monotonic(), 0)

    def open(self) -> None:
        """Load every model and open every source; on any failure, release what was opened."""
        opened = []
        try:
            threads = plan_threads(inspectors=len(self.lanes))     # the cores shared among the lanes
            for lane in self.lanes:
                lane.open(threads)
                opened.append(lane)
        except BaseException:
            for lane in opened:
                lane.source.close()
                lane.vlog.close()
            raise
        self.rss_mb["after_load"] = _round(rss_mb())

    def stop(self, reason: str = "stopped") -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        for lane in self.lanes:
            lane.stop(reason)

    def run(self) -> dict:
        """Run until every lane has ended; returns the summary (also written to OUT/summary.json)."""
        self.started = time.time()
        t0 = time.monotonic()
        self._last_tick = (t0, 0)
        for lane in self.lanes:
            lane.start()
        while any(lane.alive for lane in self.lanes):
            for lane in self.lanes:
                lane.join(0.2 / len(self.lanes))
            if self.rss_mb["first_frame"] is None and any(lane.taken for lane in self.lanes):
                self.rss_mb["first_frame"] = _round(rss_mb())
            if self.status.due():
                self.status.show(self.status_text())
        self.status.clear()
        self.rss_mb["end"] = _round(rss_mb())
        if self.publisher is not None:
            self.published = self.publisher.close(timeout_s=2.0)
        summary = self.summary(time.monotonic() - t0)
        try:
            write_file_atomic(self.out_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
        except OSError as exc:
            log.error("cannot write %s: %s", self.out_dir / "summary.json", exc)
        return summary

    # -- reporting -------------------------------------------------------------
    def status_text(self) -> str:
        now = time.monotonic()
        taken = sum(lane.taken for lane in self.lanes)
        then, before = self._last_tick
        self._last_tick = (now, taken)
        fps = (taken - before) / (now - then) if now > then else 0.0
        stats = [lane.stats for lane in self.lanes]
        p50 = LatencyHistogram.merged(s.latency for s in stats).percentile(50)
        rss = rss_mb()
        text = (f"{sum(s.frames for s in stats)} frames  NG {sum(s.ng for s in stats)}  "
                f"err {sum(_errors(lane) for lane in self.lanes)}  dropped {sum(s.dropped for s in stats)}  "
                f"{fps:.1f} fps  latency p50 {_ms(p50)}" + (f"  rss {rss:.0f} MB" if rss else ""))
        if len(self.lanes) > 1:
            text += "  | " + "  ".join(f"{lane.spec.name}: {lane.stats.frames}" for lane in self.lanes)
        return text

    def summary(self, elapsed_s: float) -> dict:
        lanes = [_lane_summary(lane) for lane in self.lanes]
        reasons = sorted({lane.end_reason or "stopped" for lane in self.lanes})
        failed = any(lane.fatal for lane in self.lanes)
        cannot_judge = any(l_["cannot_judge"] for l_ in lanes)
        frames = sum(l_["frames"] for l_ in lanes)
        return {
            "run": self.run_id,
            "started": _iso(self.started), "ended": _iso(time.time()), "duration_s": round(elapsed_s, 3),
            "stopped_by": "error" if failed else (self.stop_reason or ", ".join(reasons)),
            "ok": not failed and not cannot_judge,
            "cannot_judge": cannot_judge,
            "frames": frames, "ng": sum(l_["ng"] for l_ in lanes),
            "errors": sum(l_["errors"] for l_ in lanes), "dropped": sum(l_["dropped"] for l_ in lanes),
            "failed_buffers": sum(l_["failed_buffers"] for l_ in lanes),
            "reconnects": sum(l_["reconnects"] for l_ in lanes),
            "fps": round(sum(lane.taken for lane in self.lanes) / elapsed_s, 3) if elapsed_s > 0 else 0.0,
            "latency_ms": LatencyHistogram.merged(lane.stats.latency for lane in self.lanes).summary(),
            "check_ms": LatencyHistogram.merged(lane.stats.check for lane in self.lanes).summary(),
            "overlays": _overlay_totals([l_["overlays"] for l_ in lanes]),
            "rss_mb": dict(self.rss_mb),
            "threads": next((lane.inspector.threads for lane in self.lanes if lane.inspector is not None), None),
            "published": self.published,
            "lanes": lanes,
        }


def _errors(lane: Lane) -> int:
    s, src = lane.stats, (lane.source.stats if lane.source is not None else {})
    return (s.errors_judging + s.reject_errors + src.get("failed_buffers", 0)
            + src.get("errors", 0) + (1 if lane.fatal else 0))


def _cannot_judge(lane: Lane) -> bool:
    """The lane judged nothing: it ended after too many ERROR verdicts in a row, or it met
    frames (taken or unreadable) and gave not one of them an OK/NG verdict."""
    s, src = lane.stats, lane.source.stats
    return lane.too_many_errors or (s.frames == 0 and s.taken + src["errors"] > 0)


def _overlay_totals(per_lane: list[dict]) -> dict:
    """The overlay counts of all lanes: numbers summed, stop reasons joined."""
    numbers = [f.name for f in fields(OverlayCounts) if f.name != "stopped"]
    total = {k: sum(c.get(k, 0) for c in per_lane) for k in numbers}
    total["stopped"] = ", ".join(sorted({c["stopped"] for c in per_lane if c.get("stopped")})) or None
    return total


def _lane_summary(lane: Lane) -> dict:
    s, src = lane.stats, lane.source.stats
    return {
        "name": lane.spec.name, "source": lane.source.source_id, "kind": lane.spec.kind,
        "model_dir": str(lane.spec.model_dir), "out_dir": str(lane.out_dir), "log": str(lane.vlog.path),
        "frames": s.frames, "ok": s.frames - s.ng, "ng": s.ng, "errors": _errors(lane),
        "bad_frames": s.bad_frames, "score_errors": s.score_errors, "inspect_errors": s.inspect_errors,
        "reject_errors": s.reject_errors, "cannot_judge": _cannot_judge(lane),
        "too_many_errors": lane.too_many_errors,
        "failed_buffers": src["failed_buffers"], "unreadable_files": src["errors"],
        "reconnects": src["reconnects"], "dropped": s.dropped, "source_skipped": src["skipped"],
        "grabbed": lane.grabber.grabbed if lane.grabber else 0,
        "pipeline_dropped": lane.grabber.dropped if lane.grabber else 0,
        "ng_images": s.ng_images, "ng_images_skipped": s.ng_images_skipped,
        "overlays": lane.writer.counts.as_dict() if lane.writer else {},
        "overlay_priority": ("background" if lane.writer.background else "normal") if lane.writer else None,
        "fps": round(s.fps, 3), "latency_ms": s.latency.summary(), "check_ms": s.check.summary(),
        "end_reason": lane.end_reason, "error": lane.fatal,
    }


def summary_lines(summary: dict) -> list[str]:
    """Human summary: one line per lane when there are several, then the total line."""
    def line(d: dict, head: str) -> str:
        lat, chk = d["latency_ms"], d["check_ms"]
        return (f"{head}: {d['frames']} frames, {d['ng']} NG, {d['errors']} errors, {d['dropped']} dropped, "
                f"{d['fps']:.2f} fps, latency p50 {_ms(lat['p50'])} p95 {_ms(lat['p95'])} "
                f"(check p50 {_ms(chk['p50'])}), failed buffers {d['failed_buffers']}, "
                f"reconnects {d['reconnects']}")
    out = []
    if len(summary["lanes"]) > 1:
        out += [line(d, f"  [{d['name']}]") for d in summary["lanes"]]
    out.append(line(summary, "summary") + f", stopped by {summary['stopped_by']}")
    out += [f"  [{d['name']}] error: {d['error']}" for d in summary["lanes"] if d["error"]]
    out += [f"  [{d['name']}] no frame could be judged: {d['errors']} errors, 0 verdicts"
            for d in summary["lanes"] if d["cannot_judge"] and not d["error"]]
    o = summary["overlays"]
    if any(o.get(k) for k in ("dropped_budget", "dropped_queue_full", "failed", "abandoned")):
        out.append(f"  NG overlays: {o['written']} written ({o['bytes'] / 2**20:.1f} MB), {o['dropped_budget']} "
                   f"dropped by the budget" + (f" (stopped: {o['stopped']})" if o["stopped"] else "")
                   + f", {o['dropped_queue_full']} dropped (writer busy), {o['failed']} failed, "
                   f"{o['abandoned']} abandoned at the end")
    pub = summary.get("published")
    if pub:
        out.append(f"  MQTT {pub['target']}: {pub['sent']} of {pub['queued'] + pub['dropped']} verdicts acknowledged, "
                   f"{pub['dropped']} dropped, {pub['unsent']} unsent at the end (the verdict log has them all)")
    return out


def _ms(value) -> str:
    return "-" if value is None else f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="milliseconds")


def _round(value):
    return None if value is None else round(value, 1)
