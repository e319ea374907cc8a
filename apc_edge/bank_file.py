"""The memory bank ``.npy``: its header checked before any allocation, then its values.

Only a C-order 2-D float32 or float16 array whose header matches the bytes
present is read (never a pickle, never a header that promises more rows than
the file holds); then every value must be finite and every row norm bounded,
so that squared distances in float32 cannot overflow.

Example::

    bank, dtype, max_norm = read_bank(verified_bytes, "models/bottle/memory_bank.npy", embedding_dim=128)
"""
from __future__ import annotations

import io

import numpy as np

from .manifest import ModelDirError

DTYPES = {np.dtype("<f4"): "float32", np.dtype("<f2"): "float16"}
MAX_ROW_NORM = 1e6          # squared distances of such rows stay far below float32's 3.4e38


def read_bank(data: bytes | bytearray, where: str, embedding_dim: int) -> tuple[np.ndarray, str, float]:
    """``(bank as float32 (N, embedding_dim), stored dtype name, largest row norm)`` from a ``.npy`` file's bytes."""
    rows, dtype, offset = _header(data, where, embedding_dim)
    stored = np.frombuffer(data, dtype=dtype, count=rows * embedding_dim, offset=offset)
    bank = stored.reshape(rows, embedding_dim).astype(np.float32, copy=False)
    finite = np.isfinite(bank).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ModelDirError(f"{where} holds NaN or inf values in {bad.size} of {rows} rows (first: row {bad[0]}); "
                            f"every bank value must be finite; re-export the model dir")
    norms = np.sqrt(np.einsum("ij,ij->i", bank, bank))     # float32: overflow gives inf, refused below
    if norms.max() > MAX_ROW_NORM:
        raise ModelDirError(f"{where}: row {int(norms.argmax())} has norm {norms.max():.3g}, above the "
                            f"{MAX_ROW_NORM:g} a bank row may have (float32 distances would overflow)")
    return bank, DTYPES[dtype], float(norms.max())


def _header(data: bytes | bytearray, where: str, dim: int) -> tuple[int, np.dtype, int]:
    """Rows, dtype and data offset from the ``.npy`` header, checked against the bytes present."""
    shape, dtype, offset = read_npy_header(data, where, DTYPES, "a memory bank is little-endian float32 or float16",
                                           "the bank")
    if len(shape) != 2 or shape[1] != dim:
        raise ModelDirError(f"{where}: memory bank shape {tuple(shape)} does not match (rows, embedding_dim "
                            f"{dim}) from the manifest")
    rows = int(shape[0])
    if rows < 1:
        raise ModelDirError(f"{where}: the memory bank has no rows; it needs at least one")
    return rows, dtype, offset


def read_npy_header(data: bytes | bytearray, where: str, dtypes, allowed: str,
                    what: str = "the array") -> tuple[tuple, np.dtype, int]:
    """``(shape, dtype, data offset)`` of a C-order ``.npy`` file whose dtype is one of ``dtypes`` and whose
    header promises exactly the bytes present; ``allowed`` (which dtypes) and ``what`` name them in messages."""
    fh = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"npy format version {version[0]}.{version[1]} is not read (1.0 or 2.0 only)")
    except Exception as exc:    # numpy's header parser raises ValueError, SyntaxError, tokenize.TokenError, ...
        raise ModelDirError(f"cannot read array {where}: not a valid .npy header ({exc})") from None
    if dtype not in dtypes:
        raise ModelDirError(f"cannot read array {where}: dtype {dtype} is not allowed; {allowed} (never an "
                            f"object array, which needs pickle)")
    if fortran:
        raise ModelDirError(f"{where}: {what} must be stored in C order, the header says Fortran order")
    offset = fh.tell()
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if expected != len(data) - offset:
        raise ModelDirError(f"{where}: header claims {' x '.join(str(n) for n in shape)} {dtype.name} ({expected} "
                            f"bytes) but the file holds {len(data) - offset} bytes of data")
    return tuple(int(n) for n in shape), dtype, offset
