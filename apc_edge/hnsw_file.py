"""The hnswlib 0.8 index file (``index.hnsw``), checked byte by byte before hnswlib reads it.

hnswlib trusts its file: a neighbour id beyond the element count, a list count
beyond its capacity, an entry point or a level that does not exist make
``knn_query`` read outside its arrays (SIGSEGV). :func:`check_index` proves
that none of this can happen and that the index is this bank's:

* the header (``saveIndex`` order, little-endian, 64-bit ``size_t``): 13
  fields, 96 bytes; element count and capacity equal the bank's rows; ``M``
  equals the manifest's, ``maxM = M`` and ``maxM0 = 2M``; the per-element
  layout (level-0 links, vector, label) matches ``dim`` and ``M``;
* level 0 (``count x size_data_per_element`` bytes): every list count is at
  most ``maxM0`` and every neighbour id is below the count; no element is
  marked deleted; the labels are a permutation of the bank's rows; each stored
  vector equals its bank row bit for bit;
* the upper levels (a 4-byte size, then ``level x (4 + 4 maxM)`` bytes per
  element) fill the rest of the file exactly; every list count is at most
  ``maxM``; a neighbour on level ``l`` exists and reaches level ``l``; the entry
  point sits on the top level.

Example::

    layout = check_index(index_bytes, len(bank), bank.shape[1], M=16, where="models/bottle/index.hnsw",
                         bank=bank)                                       # ModelDirError if not
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from .manifest import ModelDirError

HEADER = struct.Struct("<QQQQQQiIQQQdQ")     # offsetLevel0 .. ef_construction, as saveIndex writes them
HEADER_FIELDS = ("offset_level0", "max_elements", "count", "size_data_per_element", "label_offset", "offset_data",
                 "max_level", "entry_point", "maxM", "maxM0", "M", "mult", "ef_construction")
ID_BYTES = 4          # tableint
LIST_HEADER = 4       # linklistsizeint: a 16-bit count, then the deleted mark
LABEL_BYTES = 8       # labeltype (size_t)
MAX_LEVEL = 64        # levels are -ln(U) / ln(M): even at M = 2 and 10^9 elements, about 30


@dataclass(frozen=True)
class HnswLayout:
    """What :func:`check_index` read: the header fields and each element's top level."""

    header: dict
    levels: np.ndarray        # (count,) int: each element's top level


def check_index(data: bytes | bytearray, rows: int, dim: int, M: int | None, where: str,
                bank: np.ndarray | None = None) -> HnswLayout:
    """Check an hnswlib index file of ``rows`` vectors of ``dim`` (built with ``M``, None: any) and, given
    ``bank`` (rows, dim) float32, that it stores exactly the bank's rows; see the module doc."""
    h = _header(data, rows, dim, M, where)
    n, size = h["count"], h["size_data_per_element"]
    level0 = np.frombuffer(data, np.uint8, count=n * size, offset=HEADER.size).reshape(n, size)
    levels, uppers = _upper_levels(data, HEADER.size + n * size, n, h, where)
    _check_level0(level0, h, where)
    _check_upper(uppers, levels, h, where)
    labels = _labels(level0, h, rows, where)
    if bank is not None:
        _check_vectors(level0, h["offset_data"], labels, bank, where)
    top = int(levels.max(initial=0))
    if top != h["max_level"] or levels[h["entry_point"]] != top:
        raise ModelDirError(f"{where}: max level {h['max_level']} and entry point {h['entry_point']} (level "
                            f"{int(levels[h['entry_point']])}) do not match the elements' top level {top}")
    return HnswLayout(h, levels)


def _header(data, rows: int, dim: int, M: int | None, where: str) -> dict:
    if len(data) < HEADER.size:
        raise ModelDirError(f"{where}: {len(data)} bytes is too short for an hnswlib index header "
                            f"({HEADER.size} bytes)")
    h = dict(zip(HEADER_FIELDS, HEADER.unpack_from(data, 0)))
    m = h["M"]
    links0 = LIST_HEADER + ID_BYTES * h["maxM0"]
    expected = {
        "offset_level0": 0, "count": rows, "max_elements": rows,
        "maxM": m, "maxM0": 2 * m, "offset_data": links0, "label_offset": links0 + 4 * dim,
        "size_data_per_element": links0 + 4 * dim + LABEL_BYTES,
    }
    if h["count"] != rows:
        raise ModelDirError(f"HNSW index {where} holds {h['count']} vectors but the memory bank has {rows}")
    if not 2 <= m <= 1 << 16 or (M is not None and m != M):
        raise ModelDirError(f"{where}: header M {m} does not match the manifest's index.M {M}"
                            if M is not None else f"{where}: header M {m} is out of range")
    for key, want in expected.items():
        if h[key] != want:
            raise ModelDirError(f"{where}: header field {key} is {h[key]}, expected {want} for {rows} vectors "
                                f"of dimension {dim} with M={m}; not an hnswlib 0.8 index of this bank")
    if not 0 <= h["max_level"] <= MAX_LEVEL or h["entry_point"] >= rows:
        raise ModelDirError(f"{where}: max level {h['max_level']} (allowed 0..{MAX_LEVEL}) or entry point "
                            f"{h['entry_point']} (allowed below {rows}) out of range")
    if not (math.isfinite(h["mult"]) and abs(h["mult"] - 1.0 / math.log(m)) < 1e-9) or h["ef_construction"] < 1:
        raise ModelDirError(f"{where}: header mult {h['mult']} or ef_construction {h['ef_construction']} is not "
                            f"what hnswlib writes for M={m}")
    if HEADER.size + rows * h["size_data_per_element"] + 4 * rows > len(data):
        raise ModelDirError(f"{where}: {len(data)} bytes cannot hold {rows} elements of "
                            f"{h['size_data_per_element']} bytes and their link-list sizes")
    return h


def _upper_levels(data, pos: int, n: int, h: dict, where: str) -> tuple[np.ndarray, list]:
    """Walk the upper-level section: each element's level and its (level, 1 + maxM) uint32 lists."""
    per_level = LIST_HEADER + ID_BYTES * h["maxM"]
    levels = np.zeros(n, np.int64)
    uppers = []
    end = len(data)
    size_at = struct.Struct("<I").unpack_from
    for i in range(n):
        if pos + 4 > end:
            raise ModelDirError(f"{where}: the file ends inside the link lists (element {i} of {n})")
        (size,) = size_at(data, pos)
        pos += 4
        if size:
            level, rest = divmod(size, per_level)
            if rest or level > h["max_level"] or pos + size > end:
                raise ModelDirError(f"{where}: element {i} has an upper link-list block of {size} bytes, not "
                                    f"1..{h['max_level']} levels of {per_level} bytes inside the file")
            levels[i] = level
            uppers.append(np.frombuffer(data, "<u4", count=size // 4, offset=pos).reshape(level, -1))
            pos += size
    if pos != end:
        raise ModelDirError(f"{where}: {end - pos} bytes follow the last link list; the file is not one hnswlib "
                            f"index")
    return levels, uppers


def _check_level0(level0: np.ndarray, h: dict, where: str) -> None:
    n, cap = level0.shape[0], h["maxM0"]
    head = np.ascontiguousarray(level0[:, :LIST_HEADER])
    counts = head[:, :2].copy().view("<u2")[:, 0]
    if (head[:, 2:] != 0).any():
        i = int(np.flatnonzero((head[:, 2:] != 0).any(axis=1))[0])
        raise ModelDirError(f"{where}: element {i} is marked deleted (or its list header is corrupt)")
    ids = np.ascontiguousarray(level0[:, LIST_HEADER:LIST_HEADER + ID_BYTES * cap]).view("<u4")
    _check_lists(counts, ids, cap, n, "level 0", where)


def _check_upper(uppers: list, levels: np.ndarray, h: dict, where: str) -> None:
    if not uppers:
        return
    owners = np.repeat(np.flatnonzero(levels), levels[levels > 0])
    lists = np.concatenate(uppers)                               # (total lists, 1 + maxM)
    level_of_list = np.concatenate([np.arange(1, len(u) + 1) for u in uppers])
    counts = lists[:, 0] & 0xFFFF
    ids = lists[:, 1:]
    _check_lists(counts, ids, h["maxM"], len(levels), "upper levels", where)
    used = np.arange(ids.shape[1])[None, :] < counts[:, None]
    low = used & (levels[np.minimum(ids, len(levels) - 1)] < level_of_list[:, None])
    if low.any():
        r = int(np.flatnonzero(low.any(axis=1))[0])
        raise ModelDirError(f"{where}: element {int(owners[r])} links on level {int(level_of_list[r])} to an "
                            f"element that does not reach that level")


def _check_lists(counts: np.ndarray, ids: np.ndarray, cap: int, n: int, what: str, where: str) -> None:
    if (counts > cap).any():
        raise ModelDirError(f"{where}: a {what} link list holds {int(counts.max())} neighbours, more than its "
                            f"capacity {cap}")
    bad = (np.arange(ids.shape[1])[None, :] < counts[:, None]) & (ids >= n)
    if bad.any():
        raise ModelDirError(f"{where}: a {what} link list names neighbour {int(ids[bad].max())}, but the index "
                            f"holds {n} elements")


def _check_vectors(level0: np.ndarray, offset: int, labels: np.ndarray, bank: np.ndarray, where: str,
                   chunk: int = 8192) -> None:
    """Each stored vector equals its bank row bit for bit (in chunks: the bank may be large)."""
    bits = np.ascontiguousarray(bank, np.float32).view(np.uint32)
    width = 4 * bank.shape[1]
    for start in range(0, len(labels), chunk):
        stored = np.ascontiguousarray(level0[start:start + chunk, offset:offset + width]).view("<u4")
        if not np.array_equal(stored, bits[labels[start:start + chunk]]):
            raise ModelDirError(f"{where} was not built from this memory bank: the vectors it stores differ from "
                                f"the bank's rows (one of the two files was changed); re-export the model dir")


def _labels(level0: np.ndarray, h: dict, rows: int, where: str) -> np.ndarray:
    at = h["label_offset"]
    labels = np.ascontiguousarray(level0[:, at:at + LABEL_BYTES]).view("<u8")[:, 0]
    if labels.max(initial=0) >= rows or np.unique(labels).size != rows:
        raise ModelDirError(f"{where}: the labels are not the bank's row numbers 0..{rows - 1}, each once")
    return labels.astype(np.int64)
