"""Open a model dir: manifest, verified files, bank, index and graph, each checked before use.

The order is the point: the manifest's fields are validated
(:mod:`apc_edge.manifest`); every listed file is read once and checked against
its sha256 (:mod:`apc_edge.model_files`); the bank's header and values
(:mod:`apc_edge.bank_file`); the threshold against the bank's scale; the HNSW
file byte by byte against the bank (:mod:`apc_edge.hnsw_file`), then a
self-query; the graph is run once on a zero input, whose output must have the
manifest's shape and be finite. Anything wrong raises :class:`ModelDirError`
naming the file and key.

Example::

    model = open_model_dir("models/bottle")
    model.manifest.threshold.value, model.bank.shape, model.index.name, model.backend.name
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import graph_probe
from .backends import Backend, open_backend
from .bank_file import read_bank
from .bank_neighbours import read_bank_neighbours
from .hnsw_file import check_index
from .index import ExactIndex, HnswIndex, MissingLibrary, NeighbourIndex
from .threads import ThreadPlan
from .manifest import Manifest, ModelDirError, parse_threshold, read_manifest, threshold_limit
from .model_files import read_verified

SELF_QUERY_ROWS = 32
SELF_QUERY_MIN_EF = 16      # measured: at ef 1 hnswlib misses 0.1-0.3 % of a bank's own rows, at ef >= 4 none


@dataclass(frozen=True)
class ModelDir:
    """A loaded, checked model dir. ``threshold_limit``: the largest threshold this bank allows."""

    manifest: Manifest
    bank: np.ndarray              # (N, D) float32
    index: NeighbourIndex
    backend: Backend
    threshold_limit: float
    bank_neighbours: np.ndarray | None = None    # (N, >= b) int32: Eq. 7's neighbourhoods (None: searched)


def open_model_dir(model_dir: str | Path, device: str = "CPU", index: str = "manifest",
                   require_threshold: bool = True, threads: ThreadPlan | None = None) -> ModelDir:
    """Load and check ``model_dir``. ``index="exact"`` skips the manifest's HNSW index (its hash is still
    checked). ``require_threshold=False`` (apc-calibrate) accepts a missing or invalid threshold block:
    ``manifest.threshold`` is then None and ``manifest.threshold_problem`` says why. ``threads``: the graph's
    and the HNSW index's thread counts (None: the libraries' defaults)."""
    m = read_manifest(model_dir, threshold_required=require_threshold)
    hnsw = m.index.type == "hnsw" and index == "manifest"
    neighbours_file = m.memory_bank.neighbours
    blobs = read_verified(m.model_dir, m.files, keep={m.memory_bank.file, *m.graph.files,
                                                      *([m.index.file] if hnsw else []),
                                                      *([neighbours_file] if neighbours_file else [])})
    bank, dtype, max_norm = read_bank(blobs.pop(m.memory_bank.file), _where(m, m.memory_bank.file), m.embedding_dim)
    _check_bank_fields(m, bank, dtype)
    neighbours = (read_bank_neighbours(blobs.pop(neighbours_file), _where(m, neighbours_file), bank.shape[0],
                                       m.scoring.num_neighbours) if neighbours_file else None)
    limit = threshold_limit(max_norm)
    m = _check_threshold(m, limit, require_threshold)
    search = _open_hnsw(m, blobs.pop(m.index.file), bank) if hnsw else ExactIndex(bank)
    if threads is not None and isinstance(search, HnswIndex):
        search.threads = threads.hnsw
    backend = open_backend(m.graph, blobs, m.model_dir, device, threads=threads.backend if threads else 0)
    _check_graph(m, backend)
    return ModelDir(manifest=m, bank=bank, index=search, backend=backend, threshold_limit=limit,
                    bank_neighbours=neighbours)


def load_manifest(model_dir: str | Path) -> Manifest:
    """The validated manifest, with the sha256 of every file it lists checked (nothing else loaded)."""
    m = read_manifest(model_dir)
    read_verified(m.model_dir, m.files)
    return m


def _where(m: Manifest, name: str) -> str:
    return str(m.model_dir / name)


def _check_bank_fields(m: Manifest, bank: np.ndarray, dtype: str) -> None:
    rows = bank.shape[0]
    where = str(m.path)
    if m.memory_bank.rows is not None and m.memory_bank.rows != rows:
        raise ModelDirError(f"{where}: memory_bank.size {m.memory_bank.rows} does not match the {rows} rows of "
                            f"{m.memory_bank.file}")
    if m.memory_bank.dtype is not None and m.memory_bank.dtype != dtype:
        raise ModelDirError(f"{where}: memory_bank.dtype {m.memory_bank.dtype} does not match {m.memory_bank.file}"
                            f" ({dtype})")
    if m.scoring.num_neighbours > rows:
        raise ModelDirError(f"{where}: scoring.num_neighbours {m.scoring.num_neighbours} must be in [1, {rows}] "
                            f"(the rows of {m.memory_bank.file})")


def _check_threshold(m: Manifest, limit: float, require: bool) -> Manifest:
    if m.threshold is None:
        return m
    try:
        parse_threshold(m.get("threshold"), str(m.path), limit)
    except ModelDirError as exc:
        if require:
            raise
        return dataclasses.replace(m, threshold=None, threshold_problem=str(exc))
    return m


def _open_hnsw(m: Manifest, data: bytearray, bank: np.ndarray) -> HnswIndex:
    where = _where(m, m.index.file)
    check_index(data, bank.shape[0], bank.shape[1], m.index.M, where, bank=bank)
    try:
        index = HnswIndex.from_bytes(data, bank.shape[1], ef=m.index.ef)
    except (ValueError, MissingLibrary) as exc:
        raise ModelDirError(f"{where}: {exc}") from None
    rows = np.unique(np.linspace(0, bank.shape[0] - 1, min(SELF_QUERY_ROWS, bank.shape[0])).round().astype(int))
    index.ef = max(m.index.ef, SELF_QUERY_MIN_EF)
    _, found = index.search(bank[rows], k=1)
    index.ef = m.index.ef
    lost = ~(bank[found[:, 0]] == bank[rows]).all(axis=1)
    if lost.any():
        raise ModelDirError(f"{where}: {int(lost.sum())} of {rows.size} bank rows searched in the index do not "
                            f"find themselves (first: row {int(rows[lost][0])}); the index does not belong to "
                            f"this bank; re-export the model dir")
    return index


def _check_graph(m: Manifest, backend: Backend) -> None:
    h, w = m.preprocessor.input_hw
    where = _where(m, m.graph.file)
    try:
        out = backend.run(np.zeros((1, 3, h, w), np.float32))
    except Exception as exc:      # OpenVINO and ONNX Runtime raise their own types
        raise ModelDirError(f"{where} does not run on a 1x3x{h}x{w} input (preprocess.resize/crop in "
                            f"{m.path}): {exc}") from None
    want = (1, m.embedding_dim, *m.patch_grid)
    if tuple(out.shape) != want:
        raise ModelDirError(f"{where} outputs shape {tuple(out.shape)}, but {m.path} says (1, embedding_dim "
                            f"{m.embedding_dim}, patch_grid {list(m.patch_grid)})")
    if not np.isfinite(out).all():
        raise ModelDirError(f"{where} outputs NaN or inf on a zero input: its weights are not usable")
    if m.graph.probe is not None:
        if len(m.graph.probe) != m.embedding_dim:
            raise ModelDirError(f"{m.path}: graph.probe.channel_means has {len(m.graph.probe)} values, but "
                                f"embedding_dim is {m.embedding_dim}")
        diff = graph_probe.difference(list(m.graph.probe), backend, (h, w))
        if not diff <= m.graph.probe_tolerance:
            raise ModelDirError(f"{where} does not compute what was exported: its outputs on the probe image "
                                f"differ from graph.probe in {m.path} by {diff:.3g} (relative; at most "
                                f"{m.graph.probe_tolerance:g} allowed). The graph was replaced or altered; "
                                f"re-export the model dir")
