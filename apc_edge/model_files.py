"""The files of a model dir, each read once and checked against its sha256 before anything uses it.

Every file listed in the manifest's ``files`` is opened without following
symbolic links, must be a regular file, and is hashed as it is read. The bytes
of the files the loaders need are kept, so the bank, the index and the graph
are built from exactly the bytes that were verified (no second read, no window
in which the file could change). Files in the dir that the manifest does not
list are never opened.

Example::

    blobs = read_verified(Path("models/bottle"), manifest.files, keep={"memory_bank.npy"})
    bank_bytes = blobs["memory_bank.npy"]          # ModelDirError if missing, a link, or altered
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

from .manifest import ModelDirError, check_file_name

CHUNK = 1 << 20


def read_verified(model_dir: Path, files: Mapping[str, str], keep: Iterable[str] = ()) -> dict[str, bytearray]:
    """Verify the sha256 of every file in ``files``; return the bytes of those named in ``keep``."""
    keep = set(keep)
    out = {}
    for name, expected in files.items():
        data = _read_checked(model_dir, name, expected, name in keep)
        if name in keep:
            out[name] = data
    missing = keep - set(files)
    if missing:
        raise ModelDirError(f"{model_dir}: {', '.join(sorted(missing))} not listed in the manifest's files")
    return out


def _read_checked(model_dir: Path, name: str, expected: str, keep: bool) -> bytearray | None:
    check_file_name(name, "files", str(model_dir / "manifest.json"))
    path = model_dir / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ModelDirError(f"model dir {model_dir} is incomplete: {name} is missing") from None
    except OSError as exc:
        raise ModelDirError(f"cannot read {path}: {exc}") from None
    if stat.S_ISLNK(st.st_mode):
        raise ModelDirError(f"{path} is a symbolic link: a model dir holds its files itself (copy the file in "
                            f"place of the link)")
    if not stat.S_ISREG(st.st_mode):
        raise ModelDirError(f"{path} is not a regular file")
    h = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ModelDirError(f"{path} is not a regular file")
            data, pos = None, 0
            if keep:                      # read into one buffer: the loaders use these very bytes
                data = bytearray(st.st_size)
                view = memoryview(data)
                while pos < len(data) and (n := fh.readinto(view[pos:pos + CHUNK])):
                    h.update(view[pos:pos + n])
                    pos += n
            else:
                while block := fh.read(CHUNK):
                    h.update(block)
    except OSError as exc:               # includes ELOOP: replaced by a link after the lstat
        raise ModelDirError(f"cannot read {path}: {exc}") from None
    except MemoryError:
        raise ModelDirError(f"{path} ({st.st_size} bytes) does not fit in memory") from None
    actual = h.hexdigest()
    if actual != expected:
        raise ModelDirError(f"{path} was altered: sha256 {actual[:16]}... does not match the manifest's "
                            f"{expected[:16]}...; re-export the model dir")
    if keep and pos != len(data):
        raise ModelDirError(f"{path} shrank while it was read; load the model dir again")
    return data if keep else None


@contextlib.contextmanager
def private_copy(blobs: Mapping[str, bytes | bytearray]):
    """A fresh private (0700) temporary dir holding ``blobs`` (name -> bytes), for libraries that read only
    files (hnswlib; ONNX Runtime, which resolves external data beside the model file). Removed on exit.

    Example::

        with private_copy({"index.hnsw": data}) as tmp:
            index.load_index(str(tmp / "index.hnsw"))
    """
    with tempfile.TemporaryDirectory(prefix="apc-edge-", ignore_cleanup_errors=True) as tmp:
        for name, data in blobs.items():
            with open(Path(tmp) / name, "xb") as fh:
                fh.write(data)
        yield Path(tmp)
