"""Argument checks shared by the command-line tools: a bad value is refused before any work starts,
with a one-line message and exit code 2, never a traceback.

Each checker is an argparse ``type=``: it takes the string and returns the value,
or raises :class:`ArgumentValueError` (an argparse ``ArgumentTypeError`` that is
also a ``ValueError``, so the same checks serve config files and code).
:class:`ArgumentParser` reports every error on one line, and :func:`parse` returns
the exit code instead of raising ``SystemExit``, so ``main(argv)`` returns 2 to
its caller. Torch-free, like all of ``apc_edge``, so the workstation CLIs use it too.

Example::

    from apc_edge.cli import args as A
    p = A.ArgumentParser(prog="apc-x")
    p.add_argument("data", type=A.existing_dir)
    p.add_argument("--frames", type=A.positive_int, default=100)
    p.add_argument("--rate", type=A.float_range(0.0, 1.0, low_open=True, high_open=True))
    args = A.parse(p, ["data/", "--frames", "0"])
    # stderr: "apc-x: --frames must be an integer >= 1, got '0' (see apc-x --help)"; args == 2
"""
from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Callable, NoReturn

from ..sources.video import VIDEO_EXTS

# OpenVINO device names (CPU, GPU, GPU.1, NPU, AUTO:GPU,CPU, ...) and CUDA for ONNX Runtime
DEVICE_FAMILIES = ("CPU", "GPU", "NPU", "AUTO", "MULTI", "HETERO", "BATCH", "CUDA")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


class ArgumentValueError(argparse.ArgumentTypeError, ValueError):
    """A command-line (or config) value is out of range or of the wrong kind; the message says which."""


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help lines end with the option's default when it has one and the text does not already say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (default in (None, False, argparse.SUPPRESS) or "default" in text.lower() or not action.option_strings
                or isinstance(action, (argparse._VersionAction, argparse._HelpAction))):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default {shown})".lstrip() if text else f"default {shown}"


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line: ``prog: message (see prog --help)``, exit 2,
    with ``--version`` on every command and the defaults in its help lines."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)
        from .. import __version__

        self.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

    def error(self, message: str) -> NoReturn:
        message = re.sub(r"^argument ([^:]+): (must )", r"\1 \2", one_line(message))
        self.exit(2, f"{self.prog}: {re.sub(r'^argument ', '', message)} (see {self.prog} --help)\n")


def write_json(path: str | Path | None, value) -> None:
    """Write ``value`` as indented JSON to ``path`` (a command's ``--json``), creating its folder; None: nothing."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """``-q/--quiet``: no progress bars (the result lines and errors still print); see :func:`parse`."""
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, only results and errors")


def parse(parser: argparse.ArgumentParser, argv: list[str] | None = None,
          check: Callable[[argparse.Namespace], str | None] | None = None) -> argparse.Namespace | int:
    """``parser.parse_args(argv)``, then ``check(args)`` (a message naming a wrong combination, or None);
    on an error, the exit code (2, message on stderr), and 0 after ``--help``.

    Example::

        args = parse(build_parser(), argv, check=lambda a: "--f1 needs --anomalies" if a.f1 and not a.anomalies
                     else None)
        if isinstance(args, int):
            return args
    """
    try:
        args = parser.parse_args(argv)
        problem = check(args) if check is not None else None
        if problem:
            parser.error(problem)
        from ..progress import set_quiet

        set_quiet(bool(getattr(args, "quiet", False)))       # -q: no progress bars in this command
        return args
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


def checked(flag: str, check: Callable, value):
    """``check(value)`` for a check made after parsing (e.g. once the combination of flags is known);
    its message names ``flag``.

    Example::

        folder = checked("--folder", existing_dir, args.folder)
    """
    try:
        return check(str(value))
    except ArgumentValueError as exc:
        raise ArgumentValueError(f"argument {flag}: {exc}") from None


def one_line(message: object) -> str:
    """``message`` with its line breaks and runs of spaces folded into single spaces."""
    return " ".join(str(message).split())


def _refuse(what: str, text: object) -> NoReturn:
    raise ArgumentValueError(f"must be {what}, got {text!r}")


def int_range(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """A checker of integers in ``[low, high]`` (either end may be None: unbounded).

    Example::

        p.add_argument("--threads", type=int_range(0, 256))
    """
    what = ("an integer" + (f" >= {low}" if low is not None and high is None else "")
            + (f" <= {high}" if high is not None and low is None else "")
            + (f" from {low} to {high}" if low is not None and high is not None else ""))

    def check(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            _refuse(what, text)
        if (low is not None and value < low) or (high is not None and value > high):
            _refuse(what, text)
        return value

    check.__name__ = "integer"
    return check


def float_range(low: float | None = None, high: float | None = None, low_open: bool = False,
                high_open: bool = False) -> Callable[[str], float]:
    """A checker of finite numbers between ``low`` and ``high`` (``*_open``: the end itself is excluded).

    Example::

        p.add_argument("--max-false-alarm", type=float_range(0.0, 1.0, low_open=True, high_open=True))
    """
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    what = "a finite number" + (" " + " and ".join(parts) if parts else "")

    def check(text: str) -> float:
        try:
            value = float(str(text).strip())
        except ValueError:
            _refuse(what, text)
        if not math.isfinite(value):
            _refuse(what, text)
        if low is not None and (value < low or (low_open and value == low)):
            _refuse(what, text)
        if high is not None and (value > high or (high_open and value == high)):
            _refuse(what, text)
        return value

    check.__name__ = "number"
    return check


positive_int = int_range(1)
non_negative_int = int_range(0)
finite_float = float_range()
positive_float = float_range(0.0, low_open=True)
non_negative_float = float_range(0.0)


def existing_dir(text: str) -> Path:
    """A folder that exists."""
    path = Path(text)
    if not path.is_dir():
        raise ArgumentValueError(f"{text!r} is not a folder" if path.exists() else f"folder {text!r} does not exist")
    return path


def existing_file(text: str) -> Path:
    """A file that exists (not a folder)."""
    path = Path(text)
    if not path.is_file():
        raise ArgumentValueError(f"{text!r} is a folder, not a file" if path.is_dir()
                                 else f"file {text!r} does not exist")
    return path


def existing_path(text: str) -> Path:
    """A file or folder that exists."""
    path = Path(text)
    if not path.exists():
        raise ArgumentValueError(f"{text!r} does not exist")
    return path


def video_file(text: str) -> Path:
    """An existing file with a video extension (``VIDEO_EXTS`` of :mod:`apc_edge.sources.video`)."""
    from ..sources.stream import is_stream_spec

    if is_stream_spec(str(text)):
        raise ArgumentValueError(f"{text!r} is a stream, not a file: give it as --stream {text}")
    path = existing_file(text)
    if path.suffix.lower() not in VIDEO_EXTS:
        raise ArgumentValueError(f"{text!r} is not a video file (expected one of {', '.join(VIDEO_EXTS)})")
    return path


def output_dir(text: str) -> Path:
    """A folder to write into: an existing folder, or a path where none of the parents is a file."""
    path = Path(text)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise ArgumentValueError(f"{text!r} cannot be an output folder: {str(p)!r} is a file")
            return path
    return path


def output_file(text: str) -> Path:
    """A file to write: not an existing folder, and no parent is a file."""
    path = Path(text)
    if path.is_dir():
        raise ArgumentValueError(f"{text!r} is a folder; give a file name")
    output_dir(str(path.parent))
    return path


def size_bytes(text: str) -> int:
    """A size in bytes, with an optional unit K, M, G or T (powers of 1024): ``"500M"``, ``"2G"``, ``"1048576"``."""
    match = _SIZE.match(str(text))
    if not match:
        _refuse("a size such as 500M, 2G or 1048576 (bytes)", text)
    value = float(match.group(1)) * 1024 ** " kmgt".index(match.group(2).lower() or " ")
    if value < 1 or not math.isfinite(value):
        _refuse("a size of at least 1 byte", text)
    return int(value)


def device(text: str) -> str:
    """An inference device name: CPU, GPU[.N], NPU, AUTO / MULTI / HETERO / BATCH[:DEV,...] or CUDA."""
    name = str(text).strip().upper()
    family, _, rest = name.partition(":")
    base = family.split(".")[0]
    names = [family] + ([d for d in rest.split(",")] if rest else [])
    ok = base in DEVICE_FAMILIES and all(re.fullmatch(r"[A-Z]+(\.\d+)?", d) for d in names)
    ok = ok and all(d.split(".")[0] in DEVICE_FAMILIES for d in names)
    if not ok:
        _refuse(f"a device name ({', '.join(DEVICE_FAMILIES)}, e.g. GPU.1 or AUTO:GPU,CPU)", text)
    return name


def int_list(low: int = 1) -> Callable[[str], list[int]]:
    """A checker of comma-separated integers, each >= ``low``: ``"1000,4000"`` -> ``[1000, 4000]``."""
    def check(text: str) -> list[int]:
        try:
            values = [int(part) for part in str(text).split(",") if part.strip()]
        except ValueError:
            values = []
        if not values or min(values) < low:
            _refuse(f"comma-separated integers >= {low}", text)
        return values

    check.__name__ = "integer list"
    return check
