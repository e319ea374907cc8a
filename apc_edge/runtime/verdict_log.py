"""Durable verdict log: one JSON object per line, on disk before ``append`` returns.

Each record is written with a single ``os.write`` on a file opened for
appending, then ``os.fsync``'d, so a process killed at any moment (kill -9, a
crash) leaves only complete lines. A line cut short by a power loss or a full
disk is moved to a side file when the log is opened again, so the log stays
valid JSON lines and no byte is thrown away. A full disk is waited out for up to
``DISK_FULL_WAIT_S`` (space freed meanwhile, e.g. by a failed overlay removing
its temporary file, lets the line complete) before the log gives up.
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

DISK_FULL_WAIT_S = 2.0


class VerdictLogError(OSError):
    """The verdict log cannot be written (disk full, permissions); inspection must stop."""


def _clean(value):
    """JSON-safe copy: non-finite floats become None, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class VerdictLog:
    """Append-only JSON-lines file with every record fsync'd.

    Example::

        with VerdictLog("out/verdicts.jsonl") as vlog:
            vlog.append({"frame_id": 3, "verdict": "OK", "score": 0.21})
        # reading it back: [json.loads(line) for line in open("out/verdicts.jsonl")]
    """

    def __init__(self, path: str | Path, fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync
        self.lines_written = 0
        self.recovered_tail: Path | None = None
        self._fd: int | None = None

    def open(self) -> "VerdictLog":
        if self._fd is not None:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            existed = self.path.exists()
            if existed:
                self.recovered_tail = self._repair_tail()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if not existed:
                _fsync_dir(self.path.parent)
        except OSError as exc:
            raise VerdictLogError(f"cannot open verdict log {self.path}: {exc.strerror or exc}") from exc
        return self

    def _repair_tail(self) -> Path | None:
        """Move an unterminated last line to ``<log>.partial-<time>``; return that file."""
        with open(self.path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return None
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return None
            cut, pos = 0, size
            while pos > 0:                                   # find the last newline, from the end
                start = max(0, pos - 65536)
                f.seek(start)
                i = f.read(pos - start).rfind(b"\n")
                if i >= 0:
                    cut = start + i + 1
                    break
                pos = start
            f.seek(cut)
            tail = f.read()
            side = self.path.with_name(f"{self.path.name}.partial-{time.strftime('%Y%m%dT%H%M%S')}")
            with open(side, "ab") as out:
                out.write(tail)
                out.flush()
                os.fsync(out.fileno())
            f.truncate(cut)
            f.flush()
            os.fsync(f.fileno())
        log.warning("verdict log %s ended in a partial line (%d bytes, e.g. after a power loss); "
                    "moved it to %s", self.path, len(tail), side)
        return side

    def append(self, record: dict) -> None:
        """Write ``record`` as one line; it is on disk when this returns."""
        if self._fd is None:
            raise VerdictLogError(f"verdict log {self.path} is not open")
        data = (json.dumps(_clean(record), ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        try:
            _write_all(self._fd, data)
            if self.fsync:
                os.fsync(self._fd)
        except OSError as exc:
            raise VerdictLogError(f"cannot write verdict log {self.path}: {exc.strerror or exc}") from exc
        self.lines_written += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "VerdictLog":
        return self.open()

    def __exit__(self, *exc_info) -> None:
        self.close()


def _write_all(fd: int, data: bytes, disk_full_wait_s: float = DISK_FULL_WAIT_S) -> None:
    """Write all of ``data``; on a full disk retry for up to ``disk_full_wait_s``, then raise."""
    view, deadline = memoryview(data), None
    while view:
        try:
            view = view[os.write(fd, view):]
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            deadline = deadline or time.monotonic() + disk_full_wait_s
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _fsync_dir(path: Path) -> None:
    """Make a new directory entry durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_file_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: never a half file.

    On any failure (a full disk, an error in the rename, an exception in this
    thread) the temporary file is removed before the error propagates.

    Example::

        write_file_atomic("out/summary.json", b"{}\n")
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
