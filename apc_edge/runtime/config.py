"""Camera lanes from plain settings: the command line and a JSON config file share this.

A config file lists cameras, each with its own model dir; ``defaults`` apply to
every camera, and relative paths are taken from the config file's folder::

    {
      "defaults": {"trigger": "hardware", "pixel_format": "BayerRG8", "exposure_us": 800},
      "cameras": [
        {"serial": "40123456", "model": "models/bottle", "reject_line": "Line2", "reject_pulse_ms": 40},
        {"serial": "40123457", "model": "models/cap", "threshold": 2.3, "nodes": {"LineDebouncerTime": 10}}
      ]
    }

Keys: see :data:`CAMERA_KEYS`. ``nodes`` are raw camera node settings written last,
in order; ``emu_images`` (pylon camera emulator only) replays the images of a folder.
Numbers are checked by :data:`SETTING_CHECKS`, the same checks as apc-inspect's flags.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..cli import args as A
from ..sources import CameraConfig
from .lane import LaneSpec

CAMERA_FIELDS = ("serial", "trigger", "trigger_line", "trigger_edge", "strategy", "exposure_us", "gain", "width",
                 "height", "pixel_format", "output_format", "max_num_buffer", "grab_timeout_ms", "reconnect",
                 "reconnect_max_wait_s")
LANE_FIELDS = ("threshold", "device", "reject_line", "reject_pulse_ms", "name")
CAMERA_KEYS = ("model", *CAMERA_FIELDS, *LANE_FIELDS, "nodes", "emu_images")
MAX_PULSE_MS = 10_000.0              # a reject pulse longer than 10 s is a typo, not a setting
# range checks of the settings, shared by the config file and apc-inspect's flags
SETTING_CHECKS = {
    "exposure_us": A.positive_float, "gain": A.finite_float, "width": A.positive_int, "height": A.positive_int,
    "max_num_buffer": A.positive_int, "grab_timeout_ms": A.positive_int,
    "reconnect_max_wait_s": A.non_negative_float, "threshold": A.positive_float, "device": A.device,
    "reject_pulse_ms": A.float_range(0.0, MAX_PULSE_MS, low_open=True),
}


class ConfigError(ValueError):
    """A config file or a camera setting is wrong; the message names the key or file."""


def emulator_replay_nodes(folder: str | Path) -> dict[str, str]:
    """Node settings that make a pylon emulated camera replay the image files of ``folder`` (or one file).

    ``ConfigError`` when it does not exist: the emulator would otherwise fail every grab.
    """
    path = Path(folder)
    if not path.exists():
        raise ConfigError(f"emulator images: {path} does not exist (give a folder of image files)")
    return {"TestImageSelector": "Off", "ImageFileMode": "On", "ImageFilename": str(path.resolve())}


def camera_lane(settings: dict[str, Any], where: str = "camera settings") -> LaneSpec:
    """A camera :class:`LaneSpec` from a flat dict of :data:`CAMERA_KEYS`.

    Example::

        camera_lane({"model": "models/bottle", "serial": "40123456", "trigger": "software"})
    """
    unknown = sorted(set(settings) - set(CAMERA_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {list(CAMERA_KEYS)}")
    settings = dict(settings)
    for key, check in SETTING_CHECKS.items():
        if settings.get(key) is not None:
            if isinstance(settings[key], bool):
                raise ConfigError(f"{where}: {key} must be a number, got {settings[key]!r}")
            try:
                settings[key] = check(str(settings[key]))
            except ValueError as exc:
                raise ConfigError(f"{where}: {key} {exc}") from None
    if not settings.get("model"):
        raise ConfigError(f"{where}: no model dir ('model') given")
    nodes = settings.get("nodes") or {}
    if not isinstance(nodes, dict):
        raise ConfigError(f"{where}: 'nodes' must be an object of node names to values, got {nodes!r}")
    extra = dict(emulator_replay_nodes(settings["emu_images"])) if settings.get("emu_images") else {}
    extra.update(nodes)
    cam = {k: settings[k] for k in CAMERA_FIELDS if settings.get(k) is not None}
    cam.setdefault("reconnect_max_wait_s", settings.get("reconnect_max_wait_s"))   # None: wait forever
    lane = {k: settings[k] for k in LANE_FIELDS if settings.get(k) is not None}
    try:
        return LaneSpec(settings["model"], "camera", camera=CameraConfig(extra=extra, **cam), **lane)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_config(path: str | Path) -> list[LaneSpec]:
    """Camera lanes of a JSON config file (see the module docstring for the format)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), list) or not data["cameras"]:
        raise ConfigError(f"config file {path}: expected an object with a non-empty 'cameras' list")
    extra_top = sorted(set(data) - {"defaults", "cameras"})
    if extra_top:
        raise ConfigError(f"config file {path}: unknown top-level key(s) {extra_top}; use 'defaults' and 'cameras'")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"config file {path}: 'defaults' must be an object")
    specs = []
    for i, cam in enumerate(data["cameras"]):
        if not isinstance(cam, dict):
            raise ConfigError(f"config file {path}: cameras[{i}] must be an object")
        settings = {**defaults, **cam}
        for key in ("model", "emu_images"):
            if settings.get(key):
                settings[key] = str(path.parent / Path(settings[key]).expanduser())
        specs.append(camera_lane(settings, where=f"config file {path}, cameras[{i}]"))
    return specs
