"""apc-inspect: score frames from Basler cameras, a folder or a video; log every verdict.

Examples::

    apc-inspect models/bottle --camera 40123456 --trigger hardware --reject-line Line2 --out runs/line1
    apc-inspect models/bottle --folder frames/ --out runs/offline
    apc-inspect --camera 40123456=models/bottle --camera 40123457=models/cap --trigger software --out runs/l2
    apc-inspect --config line.json --out runs/line3          # cameras and their models in a JSON file
    PYLON_CAMEMU=1 apc-inspect models/bottle --camera --trigger software --emu-images frames/ --max-frames 50

Per frame: ``Inspector.check``, one JSON line in ``OUT/verdicts.jsonl`` (fsync'd
before the next frame is taken), NG overlays in ``OUT/ng/<run>/``. With several
cameras each gets ``OUT/<serial>/``. Each NG frame is kept twice, as its overlay and as the
original (lossless: ``ng/<run>/<id>.frame.png``, for review and ``apc-update``), with
``--ok-frames-every N`` every N-th OK frame too; each verdict line names its files. They stay within ``--ng-images-max``,
``--ng-bytes-max`` and ``--min-free-mb`` (free space kept for the verdict log);
beyond that, or on a full disk or a hung write, they are dropped and counted,
never a verdict. Ctrl-C or SIGTERM stops after the frame in hand and prints the
summary (also in ``OUT/summary.json``).

Exit codes: 0 done or stopped; 1 a lane failed while running (the verdict log
cannot be written, a camera lost for good); 2 bad arguments, model dir, config
or camera at start; 3 a lane could not judge frames: ``MAX_CONSECUTIVE_ERRORS``
ERROR verdicts in a row, or frames met and not one judged OK/NG (1 wins over 3).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from ..manifest import ModelDirError
from ..preprocess import MAX_FRAME_PIXELS, MIN_FRAME_SIDE
from ..runtime import InspectRun, LaneSpec, ReviewFrames, StatusAwareHandler, StatusLine, VerdictLogError, summary_lines
from ..runtime.config import SETTING_CHECKS as CHECK, ConfigError, camera_lane, load_config
from ..runtime.overlay_writer import OverlayBudget
from ..runtime.publish import MqttPublisher, parse_mqtt_url
from ..sources import SourceError, list_cameras
from ..sources.stream import STREAM_SCHEMES, is_stream_spec
from . import args as A

PROG = "apc-inspect"
EXIT_OK, EXIT_LANE_FAILED, EXIT_USAGE, EXIT_CANNOT_JUDGE = 0, 1, 2, 3
# options that describe the camera lanes; with --config they belong in the file
LANE_OPTIONS = ("trigger", "trigger_line", "trigger_edge", "strategy", "exposure_us", "gain", "width", "height",
                "pixel_format", "output_format", "max_num_buffer", "grab_timeout_ms", "reconnect_max_wait_s",
                "node", "emu_images", "threshold", "device", "reject_line", "reject_pulse_ms")
CAMERA_ONLY = tuple(o for o in LANE_OPTIONS if o not in ("threshold", "device"))
DEFAULT_NG_BYTES_MAX = "2G"
DEFAULT_MIN_FREE_MB = 100.0


def build_parser() -> argparse.ArgumentParser:
    p = A.ArgumentParser(prog=PROG, description="Inspect frames with an exported model dir and log "
                                "every verdict (verdicts.jsonl, NG overlays, summary).")
    p.add_argument("model_dir", nargs="?", help="exported model dir (optional when every --camera names one)")
    src = p.add_argument_group("frame source (one kind)")
    src.add_argument("--camera", action="append", nargs="?", const="", metavar="SERIAL[=MODEL_DIR]",
                     help="a Basler camera by serial number or user-defined name (no value: the first found); "
                          "repeat for several cameras, each optionally with its own model dir")
    src.add_argument("--folder", type=Path, help="a folder of images, in file-name order")
    src.add_argument("--video", help="a video file")
    src.add_argument("--stream", metavar="URL|usb:N",
                     help="any camera OpenCV opens: a network stream (rtsp://, http:// MJPEG, ...) or a USB/UVC "
                          "device (usb:0); reconnects when it drops (--reconnect-max-wait)")
    src.add_argument("--config", type=Path, help="JSON file listing cameras and their model dirs")
    src.add_argument("--loop", action="store_true", help="replay --folder/--video forever")
    src.add_argument("--list-cameras", action="store_true", help="list the cameras found and exit")
    cam = p.add_argument_group("camera")
    cam.add_argument("--trigger", choices=("none", "software", "hardware"),
                     help="none: free-run (latest image wins, default); software: one trigger per frame; "
                          "hardware: --trigger-line")
    cam.add_argument("--trigger-line", help="hardware trigger input (default Line1)")
    cam.add_argument("--trigger-edge", choices=("RisingEdge", "FallingEdge"))
    cam.add_argument("--strategy", choices=("latest", "one_by_one"),
                     help="grab strategy (default: latest for free-run, one_by_one when triggered)")
    cam.add_argument("--exposure-us", type=CHECK["exposure_us"])
    cam.add_argument("--gain", type=CHECK["gain"], help="gain in dB")
    cam.add_argument("--width", type=CHECK["width"])
    cam.add_argument("--height", type=CHECK["height"])
    cam.add_argument("--pixel-format", help="camera pixel format, e.g. Mono8, BGR8Packed, BayerRG8")
    cam.add_argument("--output-format", choices=("BGR8", "Mono8"), help="what the model gets (default BGR8)")
    cam.add_argument("--max-num-buffer", type=CHECK["max_num_buffer"])
    cam.add_argument("--grab-timeout-ms", type=CHECK["grab_timeout_ms"])
    cam.add_argument("--reconnect-max-wait", dest="reconnect_max_wait_s", type=CHECK["reconnect_max_wait_s"],
                     metavar="S",
                     help="give up on a lost camera after S seconds (default: keep trying)")
    cam.add_argument("--node", action="append", metavar="NAME[=VALUE]",
                     help="raw camera node setting, written last (a command when no value); repeatable")
    cam.add_argument("--emu-images", type=Path, metavar="DIR",
                     help="pylon camera emulator only: replay the images of DIR")
    p.add_argument("--reject-line", help="on NG, pulse this camera output line (e.g. Line2)")
    p.add_argument("--reject-pulse-ms", type=CHECK["reject_pulse_ms"],
                   help="reject pulse length (default 50 ms)")
    p.add_argument("--threshold", type=CHECK["threshold"], help="raw-score threshold (default: the model's)")
    p.add_argument("--device", type=CHECK["device"], help="OpenVINO device (default CPU)")
    out = p.add_argument_group("output")
    out.add_argument("--out", type=A.output_dir, default=Path("apc-inspect-out"),
                     help="output folder (default %(default)s)")
    out.add_argument("--max-frames", type=A.positive_int, metavar="N", help="stop after N frames (per camera)")
    p.add_argument("--max-frame-pixels", type=A.int_range(MIN_FRAME_SIDE ** 2, 10 ** 10), default=MAX_FRAME_PIXELS,
                   metavar="N", help="larger frames get an ERROR verdict instead of seconds of resizing "
                                     "(default %(default)s)")
    out.add_argument("--mqtt", metavar="mqtt://HOST[:PORT]/PREFIX", type=_mqtt_target,
                     help="also publish every verdict line to this MQTT broker as <PREFIX>/<camera>/verdict (JSON; "
                          "QoS 1, never blocking: the verdict log stays the record); needs apc-edge[mqtt]")
    out.add_argument("--no-ng-frames", action="store_true",
                     help="keep only the overlay of an NG frame, not the frame itself (default: both; the frame "
                          "as a lossless PNG beside its overlay, for review and apc-update)")
    out.add_argument("--ok-frames-every", type=A.non_negative_int, default=0, metavar="N",
                     help="also keep every N-th OK frame for review, under the same budget (default 0: none)")
    out.add_argument("--ng-images-max", type=A.non_negative_int, metavar="N",
                     help="keep at most N NG overlays (with their frames) and OK samples per camera and run "
                          "(default: all; 0: none)")
    out.add_argument("--ng-bytes-max", type=A.size_bytes, default=DEFAULT_NG_BYTES_MAX, metavar="SIZE",
                     help="NG overlays and kept frames per camera and run take at most SIZE on disk (e.g. 500M, 2G; "
                          "default %(default)s)")
    out.add_argument("--min-free-mb", type=A.non_negative_float, default=DEFAULT_MIN_FREE_MB, metavar="MB",
                     help="stop writing overlays when less than MB would stay free on the verdict log's "
                          "filesystem (default %(default)s)")
    out.add_argument("-q", "--quiet", action="store_true", help="no live stats line")
    out.add_argument("-v", "--verbose", action="store_true", help="log reconnect attempts and other details")
    return p


def _node_settings(items: list[str] | None) -> dict:
    nodes = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not name.strip():
            raise ConfigError(f"--node needs NAME[=VALUE], got {item!r}")
        nodes[name.strip()] = value if sep else None
    return nodes


def _mqtt_target(text: str) -> str:
    try:
        parse_mqtt_url(text)
    except ValueError as exc:
        raise A.ArgumentValueError(str(exc)) from None
    return text


def build_specs(args: argparse.Namespace) -> list[LaneSpec]:
    """The lanes the arguments ask for; ConfigError (or ArgumentValueError, a ValueError) names what is wrong."""
    kinds = [k for k in ("camera", "folder", "video", "stream", "config") if getattr(args, k) is not None]
    if len(kinds) != 1:
        raise ConfigError("give exactly one frame source: --camera, --folder, --video, --stream or --config"
                          + (f" (got {', '.join('--' + k for k in kinds)})" if kinds else ""))
    kind = kinds[0]
    if kind == "config":
        given = [o for o in LANE_OPTIONS if getattr(args, o) is not None]
        if given or args.model_dir:
            named = ", ".join("--" + o.replace("_", "-") for o in given) or "MODEL_DIR"
            raise ConfigError(f"with --config, put camera and model settings in the file, not on the command "
                              f"line ({named})")
        return load_config(A.checked("--config", A.existing_file, args.config))
    if kind == "stream":
        if not is_stream_spec(args.stream):
            raise ConfigError(f"--stream {args.stream!r} is not a stream URL ({', '.join(STREAM_SCHEMES)}) or usb:N")
        other = [o for o in CAMERA_ONLY if o != "reconnect_max_wait_s" and getattr(args, o) is not None]
        if other or args.loop:
            raise ConfigError(f"{', '.join(['--' + o.replace('_', '-') for o in other] + (['--loop'] if args.loop else []))} "
                              f"does not apply to --stream")
        if not args.model_dir:
            raise ConfigError("no model dir given (MODEL_DIR)")
        return [LaneSpec(args.model_dir, "stream", path=args.stream, threshold=args.threshold,
                         device=args.device or "CPU", reconnect_max_wait_s=args.reconnect_max_wait_s)]
    if kind != "camera":
        cam_only = [o for o in CAMERA_ONLY if getattr(args, o) is not None]
        if cam_only:
            raise ConfigError(f"{', '.join('--' + o.replace('_', '-') for o in cam_only)} applies to --camera only")
        if not args.model_dir:
            raise ConfigError("no model dir given (MODEL_DIR)")
        path = (A.checked("--folder", A.existing_dir, args.folder) if kind == "folder" else
                A.checked("--video", A.video_file, args.video))
        return [LaneSpec(args.model_dir, kind, path=path, loop=args.loop, threshold=args.threshold,
                         device=args.device or "CPU")]
    if args.loop:
        raise ConfigError("--loop applies to --folder and --video only")
    common = {k: getattr(args, k) for k in LANE_OPTIONS if k not in ("node",) and getattr(args, k) is not None}
    common["nodes"] = _node_settings(args.node)
    specs = []
    for item in args.camera:
        serial, sep, model = item.partition("=")
        model = model if sep else args.model_dir
        if not model:
            raise ConfigError(f"camera {serial or '(first found)'}: no model dir; give MODEL_DIR or "
                              f"--camera SERIAL=MODEL_DIR")
        specs.append(camera_lane({**common, "serial": serial or None, "model": model},
                                 where=f"camera {serial or '(first found)'}"))
    if len(specs) > 1 and any(s.camera.serial is None for s in specs):
        raise ConfigError("with several cameras, name each one by serial number (--camera SERIAL)")
    return specs


def _setup_logging(status: StatusLine, verbose: bool) -> logging.Handler:
    handler = StatusAwareHandler(status)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    return handler


def _install_signals(run: InspectRun) -> dict:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, _frame):
        name = signal.Signals(signum).name
        if run.stop_reason is not None:
            sys.stderr.write(f"\n{PROG}: second {name}: exiting now (verdicts so far are on disk)\n")
            os._exit(130)
        sys.stderr.write(f"\n{PROG}: {name}: stopping after the frames already grabbed (again to exit at once)\n")
        run.stop(name)

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def _describe(spec: LaneSpec) -> str:
    if spec.kind != "camera":
        return f"{spec.kind} {spec.path}"
    cam = spec.camera
    mode = "free-run" if cam.trigger == "none" else f"{cam.trigger} trigger"
    text = f"camera {cam.serial or '(first found)'} ({mode}"
    return text + (f", reject {spec.reject_line})" if spec.reject_line else ")")


def exit_code(summary: dict) -> int:
    """0, or 1 when a lane failed (log, camera), else 3 when a lane could not judge frames."""
    lanes = summary["lanes"]
    if any(lane["error"] and not lane["too_many_errors"] for lane in lanes):
        return EXIT_LANE_FAILED
    if any(lane["cannot_judge"] for lane in lanes):
        return EXIT_CANNOT_JUDGE
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = A.parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    if args.list_cameras:
        try:
            cameras = list_cameras()
        except SourceError as exc:
            print(f"{PROG}: {A.one_line(exc)}", file=sys.stderr)
            return EXIT_USAGE
        for c in cameras:
            print(f"{c['serial']}\t{c['model']}\t{c['device_class']}\t{c['name']}")
        if not cameras:
            print(f"{PROG}: no Basler camera found", file=sys.stderr)
        return EXIT_OK
    status = StatusLine(enabled=not args.quiet)
    handler = _setup_logging(status, args.verbose)
    try:
        try:
            specs = build_specs(args)
            for spec in specs:
                if not spec.model_dir.is_dir():
                    raise ConfigError(f"model dir not found: {spec.model_dir}")
            budget = OverlayBudget(max_images=args.ng_images_max, max_bytes=args.ng_bytes_max,
                                   min_free_bytes=int(args.min_free_mb * 2**20))
            publisher = MqttPublisher(args.mqtt) if args.mqtt else None
            run = InspectRun(specs, args.out, max_frames=args.max_frames, overlay_budget=budget, status=status,
                             max_frame_pixels=args.max_frame_pixels,
                             review=ReviewFrames(ng_frames=not args.no_ng_frames, ok_every=args.ok_frames_every),
                             publisher=publisher)
            try:
                run.open()
            except BaseException:
                if publisher is not None:
                    publisher.close(timeout_s=0.0)
                raise
        except (ConfigError, ModelDirError, SourceError, VerdictLogError, ValueError) as exc:
            print(f"{PROG}: {A.one_line(exc)}", file=sys.stderr)
            return EXIT_USAGE
        for lane in run.lanes:
            print(f"{PROG}: {_describe(lane.spec)} -> model {lane.spec.model_dir}, verdicts {lane.vlog.path}",
                  file=sys.stderr)
        previous = _install_signals(run)
        try:
            summary = run.run()
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
        for line in summary_lines(summary):
            print(line)
        print(f"verdicts: {', '.join(lane['log'] for lane in summary['lanes'])}; "
              f"summary: {run.out_dir / 'summary.json'}")
        return exit_code(summary)
    finally:
        logging.getLogger().removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
