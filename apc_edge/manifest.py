"""The one manifest parser: ``manifest.json`` -> a typed, frozen, validated :class:`Manifest`.

A model dir is data, never code: ``manifest.json`` plus IR/ONNX, ``.npy`` arrays
and (optionally) an hnswlib index, each with a sha256 in the manifest. This
module checks every field the runtime uses for type and range, and the rules
for file names (plain names listed in ``files``). Checks that need the files
themselves (hashes, the bank, the index, the graph) live in
:mod:`apc_edge.model_dir`. A bad value raises :class:`ModelDirError` naming the
file, the key and the allowed range.

Example::

    manifest = read_manifest("models/bottle")      # ModelDirError on any bad field
    manifest.scoring.num_neighbours, manifest.threshold.value, manifest.graph.files
    raw = manifest.raw                             # a deep copy of the JSON, to edit and write back
    raw["threshold"] = new_block
    write_manifest("models/bottle", raw)           # re-validates, re-hashes the files, writes atomically
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from .preprocess import CHANNEL_KINDS, Preprocessor

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "apc-edge-model"
FORMAT_VERSION = 1
# Older format versions this runtime still reads: version -> function that turns its raw dict into the next
# version (fields the newer version requires get their defaults there). Version 1 is the first, so none yet.
UPGRADES: dict[int, Callable[[dict], dict]] = {}
REQUIRED_KEYS = ("format", "format_version", "graph", "preprocess", "patch_grid", "embedding_dim",
                 "memory_bank", "index", "scoring", "threshold", "files")

MAX_MANIFEST_BYTES = 4 << 20          # a manifest is a few kB; the HNSW sweep report adds tens of kB
MAX_JSON_DEPTH = 64
MAX_FILES = 64
MAX_NAME_CHARS = 255
MAX_INPUT_SIDE = 8192                 # model input pixels per side
MAX_GRID_SIDE = 4096
MAX_EMBEDDING_DIM = 65536
MAX_MAP_SIGMA = 64.0                  # input pixels; the Gaussian kernel has 8 sigma + 1 taps
MAX_PEAK_SIGMA = 8.0                  # cells; the peak kernel is 3 x 3, so larger sigmas only flatten it
STD_RANGE = (1e-3, 10.0)              # of values scaled to 0..1; below 1e-3 a grey level moves the input by > 4
SCALE_RANGE = (1e-3, 1e3)
MAX_HNSW_M = 1024
MAX_HNSW_EF = 10000
MAX_REFINE_TOP = 1 << 20
# No frame scores above this many times the bank's diameter bound (2 x its largest row norm): a threshold or
# normalization bound beyond it could never be reached, so every part would pass.
THRESHOLD_LIMIT_FACTOR = 10.0
LIMIT_RULE = (f"a threshold must lie below {THRESHOLD_LIMIT_FACTOR:g} x the memory bank's diameter bound "
              f"(2 x its largest row norm), which no raw score of a real frame reaches")
GRAPH_FORMATS = ("openvino", "onnx")
PRECISIONS = ("fp32", "fp16", "int8")
BANK_DTYPES = ("float32", "float16")
INDEX_TYPES = ("exact", "hnsw")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_REQUIRED = object()


class ModelDirError(ValueError):
    """A model dir is missing, incomplete, altered, inconsistent or of an unknown format."""


@dataclass(frozen=True)
class GraphSpec:
    """The image -> patch-embedding graph: ``file`` (``.xml`` for OpenVINO, its ``weights`` ``.bin`` beside it)."""

    file: str
    format: str                        # "openvino" | "onnx"
    precision: str                     # "fp32" | "fp16" | "int8"
    weights: str | None                # OpenVINO: the .bin with the same stem as the .xml
    external_data: tuple[str, ...]     # ONNX: external-data files (manifest key graph.external_data)
    probe: tuple[float, ...] | None = None   # channel means on the probe input (graph_probe); None: not recorded
    probe_tolerance: float = 0.05

    @property
    def files(self) -> tuple[str, ...]:
        """Every file the backend reads."""
        return (self.file, *((self.weights,) if self.weights else ()), *self.external_data)


@dataclass(frozen=True)
class BankSpec:
    """``memory_bank``: the ``.npy`` file; ``rows``/``dtype`` as recorded (None: not recorded); ``neighbours``:
    the table of each row's nearest rows (Eq. 7, :mod:`apc_edge.bank_neighbours`; None: searched per check)."""

    file: str
    rows: int | None
    dtype: str | None
    neighbours: str | None = None


@dataclass(frozen=True)
class IndexSpec:
    """``index``: ``exact`` search, or an hnswlib graph ``file`` built with ``M`` and searched with ``ef``."""

    type: str
    file: str | None = None
    M: int | None = None
    ef: int | None = None
    refine_top: int = 16               # approximate search: top patches searched again exactly


@dataclass(frozen=True)
class ScoringSpec:
    num_neighbours: int                # Eq. 7 neighbourhood b (1: no reweighting)
    map_sigma: float                   # anomaly-map Gaussian sigma, input pixels (0: no blur)
    part_only: bool                    # pad mode: score only the cells on the part
    peak_sigma: float = 0.0            # image score: the patch map's peak at this 3x3 Gaussian sigma, in cells
                                       # (0, and dirs made before it: the most anomalous patch)


@dataclass(frozen=True)
class ThresholdSpec:
    """Raw-score threshold and the normalization range: finite, ``norm_lo <= value < norm_hi``, ``value > 0``.

    ``norm_lo == value`` is what one held-out image gives (its score is both); the normalizer stays monotone.
    """

    value: float
    norm_lo: float
    norm_hi: float


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated ``manifest.json``. Fields the runtime uses are typed; the informational blocks
    (``training``, ``backbone``, ``quantization``, ...) are read with ``manifest.get(key)`` (deep copies),
    and :attr:`raw` is a deep copy of the whole JSON to edit and write back.

    ``threshold`` is None only when parsed with ``threshold_required=False`` (apc-calibrate, which sets
    one); ``threshold_problem`` then says what was wrong with the block.
    """

    path: Path                         # the manifest.json file
    format_version: int
    graph: GraphSpec
    preprocessor: Preprocessor
    patch_grid: tuple[int, int]
    embedding_dim: int
    memory_bank: BankSpec
    index: IndexSpec
    scoring: ScoringSpec
    threshold: ThresholdSpec | None
    threshold_problem: str | None
    files: Mapping[str, str]           # plain file name -> sha256
    _raw: Mapping[str, Any] = field(repr=False)

    @property
    def model_dir(self) -> Path:
        return self.path.parent

    @property
    def raw(self) -> dict:
        """A deep copy of the manifest's JSON object."""
        return copy.deepcopy(dict(self._raw))

    def get(self, key: str, default: Any = None) -> Any:
        """A deep copy of the top-level block ``key`` (``default`` if absent)."""
        return copy.deepcopy(self._raw[key]) if key in self._raw else default

    def __getitem__(self, key: str) -> Any:
        if key not in self._raw:
            raise KeyError(key)
        return copy.deepcopy(self._raw[key])

    def __contains__(self, key: object) -> bool:
        return key in self._raw


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_file_name(name: object, key: str, where: str) -> str:
    """``name`` if it is a plain file name inside the model dir (no separators, no ``..``, not absolute)."""
    if not isinstance(name, str) or not name:
        raise ModelDirError(f"{where}: {key} must be a non-empty file name, got {_show(name)}")
    if (len(name) > MAX_NAME_CHARS or name in (".", "..") or any(c in name for c in "/\\:\0")
            or name != name.strip() or name == MANIFEST_NAME):
        raise ModelDirError(f"{where}: {key} {_show(name, MAX_NAME_CHARS)} is not a plain file name: names with "
                            f"path separators, '..', drive letters or absolute paths could reach outside the model "
                            f"dir (and {MANIFEST_NAME} cannot list itself)")
    return name


def read_manifest(model_dir: str | Path, threshold_required: bool = True) -> Manifest:
    """Read and validate ``model_dir/manifest.json`` (fields only; :mod:`apc_edge.model_dir` checks the files)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirError(f"model dir {model_dir} does not exist or is not a directory")
    path = model_dir / MANIFEST_NAME
    return parse_manifest(_load_json(path), path, threshold_required)


def parse_manifest(raw: object, path: str | Path, threshold_required: bool = True) -> Manifest:
    """Validate a manifest's JSON object (as read from ``path``, named in messages) into a :class:`Manifest`."""
    path = Path(path)
    where = str(path)
    if not isinstance(raw, dict):
        raise ModelDirError(f"{where} must hold a JSON object, got {_kind(raw)}")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise ModelDirError(f"{where} lacks required keys: {', '.join(missing)}")
    if raw["format"] != FORMAT_NAME:
        raise ModelDirError(f"{where}: format is {_show(raw['format'])}, expected {FORMAT_NAME!r}")
    raw = _upgrade(copy.deepcopy(raw), where)
    top = _Block(raw, "", where)
    files = _files(raw["files"], where)
    graph = _graph(top.block("graph"), files)
    preprocessor = validate_preprocess(top.block("preprocess"))
    bank_block, index_block, scoring_block = top.block("memory_bank"), top.block("index"), top.block("scoring")
    bank = BankSpec(file=bank_block.file_name("file", files), rows=bank_block.int("size", 1, None, default=None),
                    dtype=bank_block.choice("dtype", BANK_DTYPES, default=None),
                    neighbours=bank_block.file_name("neighbours", files, default=None))
    index = _index(index_block, files)
    scoring = ScoringSpec(num_neighbours=scoring_block.int("num_neighbours", 1, None),
                          map_sigma=scoring_block.number("map_sigma", 0.0, MAX_MAP_SIGMA),
                          part_only=scoring_block.flag("part_only", default=False),
                          peak_sigma=scoring_block.number("peak_sigma", 0.0, MAX_PEAK_SIGMA, default=0.0))
    threshold, problem = None, None
    try:
        threshold = parse_threshold(raw["threshold"], where)
    except ModelDirError as exc:
        if threshold_required:
            raise
        problem = str(exc)
    return Manifest(path=path, format_version=FORMAT_VERSION, graph=graph, preprocessor=preprocessor,
                    patch_grid=top.ints("patch_grid", 2, 1, MAX_GRID_SIDE),
                    embedding_dim=top.int("embedding_dim", 1, MAX_EMBEDDING_DIM),
                    memory_bank=bank, index=index, scoring=scoring, threshold=threshold, threshold_problem=problem,
                    files=MappingProxyType(files), _raw=MappingProxyType(raw))


def parse_threshold(block: object, where: str, limit: float | None = None) -> ThresholdSpec:
    """The ``threshold`` block: ``0 < value``, ``norm_lo <= value < norm_hi``, all finite and, given ``limit``
    (see :func:`threshold_limit`), of magnitude below it."""
    b = _Block(block, "threshold", where)
    try:
        value = b.number("value", 0.0, limit, open_lo=True, open_hi=limit is not None)
        lo = b.number("norm_lo", -limit if limit is not None else None, value)
        hi = b.number("norm_hi", value, limit, open_lo=True)
    except ModelDirError as exc:
        raise ModelDirError(f"{exc}{'' if limit is None else f' ({LIMIT_RULE})'}; set a sound threshold with "
                            f"apc-calibrate MODEL_DIR (--good FOLDER of good parts)") from None
    return ThresholdSpec(value, lo, hi)


def threshold_limit(max_row_norm: float) -> float:
    """The largest threshold (and normalization bound magnitude) a bank with this largest row norm allows."""
    return THRESHOLD_LIMIT_FACTOR * 2.0 * float(max_row_norm)


def validate_preprocess(block: "_Block") -> Preprocessor:
    """Range checks of the preprocessing keys (``resize``, ``crop``, ``mean``, ``std``, ``mode``, ``scale``,
    ``channels``, ``bit_depth``), then :meth:`Preprocessor.from_dict` on the whole block."""
    resize = block.ints("resize", 2, 1, MAX_INPUT_SIDE)
    crop = block.ints("crop", 2, 1, MAX_INPUT_SIDE, default=None)
    if crop is not None and (crop[0] > resize[0] or crop[1] > resize[1]):
        raise block.error("crop", f"must lie inside preprocess.resize {list(resize)}", list(crop))
    block.numbers("mean", 3, 0.0, 1.0)
    block.numbers("std", 3, *STD_RANGE)
    mode = block.choice("mode", ("stretch", "pad"), default="stretch")
    block.number("scale", *SCALE_RANGE, default=1.0)
    block.choice("channels", CHANNEL_KINDS, default="any")
    block.int("bit_depth", 8, 16, default=8)
    if mode == "pad" and crop is not None:
        raise block.error("crop", "must be null in pad mode", list(crop))
    try:
        return Preprocessor.from_dict(block.value)
    except ValueError as exc:
        raise ModelDirError(f"{block.where}: preprocess: {exc}") from None


def write_manifest(model_dir: str | Path, manifest: dict, rehash: bool = True) -> Path:
    """Validate ``manifest`` (the fields :func:`parse_manifest` checks) and write ``manifest.json`` atomically.

    ``rehash=True`` hashes every file named in ``files`` (keys or list) as it is now; ``False`` keeps the
    digests ``files`` holds (apc-calibrate: the files were verified at load and must not be re-blessed).
    """
    model_dir = Path(model_dir)
    manifest = dict(manifest)
    manifest["format"] = FORMAT_NAME
    manifest["format_version"] = FORMAT_VERSION
    if rehash:
        where = str(model_dir / MANIFEST_NAME)
        names = [check_file_name(name, "files", where) for name in manifest.get("files", ())]
        manifest["files"] = {name: sha256_file(model_dir / name) for name in sorted(names)}
    path = model_dir / MANIFEST_NAME
    parse_manifest(manifest, path)
    text = json.dumps(manifest, indent=2, sort_keys=False, allow_nan=True) + "\n"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------------------------------------------
# reading the JSON, bounded


def _load_json(path: Path) -> dict:
    where = str(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ModelDirError(f"{path.parent} has no {MANIFEST_NAME}: not an apc-edge model dir "
                            f"(run apc-export first)") from None
    except OSError as exc:
        raise ModelDirError(f"cannot read {path}: {exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ModelDirError(f"{where} must be a regular file (not a symbolic link or special file)")
    if st.st_size > MAX_MANIFEST_BYTES:
        raise ModelDirError(f"{where} is {st.st_size} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may hold")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ModelDirError(f"cannot read {path}: {exc}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise ModelDirError(f"{where} is more than the {MAX_MANIFEST_BYTES} bytes a manifest may hold")
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ModelDirError(f"{where} is not valid: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except UnicodeDecodeError as exc:
        raise ModelDirError(f"{where} is not valid JSON: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:          # json.JSONDecodeError and duplicate keys
        raise ModelDirError(f"{where} is not valid JSON: {exc}") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise ModelDirError(f"{where} is not valid: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {_show(key)}")
        out[key] = value
    return out


def _depth(value: object) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            todo.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _upgrade(raw: dict, where: str) -> dict:
    version = raw["format_version"]
    known = sorted({FORMAT_VERSION, *UPGRADES})
    if type(version) is not int:
        raise ModelDirError(f"{where}: format_version must be an integer (one of {known}), got {_show(version)}")
    if version > FORMAT_VERSION:
        raise ModelDirError(f"{where}: format_version {version} is newer than this runtime reads ({known}): "
                            f"upgrade apc-edge on this machine, or export the model with this version")
    if version not in known:
        raise ModelDirError(f"{where}: format_version {version} is not supported (this runtime reads {known})")
    while version < FORMAT_VERSION:
        raw = UPGRADES[version](raw)
        version += 1
    raw["format_version"] = FORMAT_VERSION
    return raw


# ---------------------------------------------------------------------------------------------------------------
# blocks


def _files(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise ModelDirError(f"{where}: files must map file names to sha256 hex digests, got {_kind(value)}")
    if len(value) > MAX_FILES:
        raise ModelDirError(f"{where}: files lists {len(value)} files, at most {MAX_FILES} allowed")
    for name, digest in value.items():
        check_file_name(name, "files", where)
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ModelDirError(f"{where}: files[{name!r}] must be a sha256 of 64 lowercase hex digits, "
                                f"got {_show(digest)}")
    return dict(value)


def _graph(b: "_Block", files: dict) -> GraphSpec:
    fmt = b.value.get("format")
    if fmt not in GRAPH_FORMATS:
        raise b.error("format", f"is an unknown graph format (expected {' or '.join(map(repr, GRAPH_FORMATS))})",
                      fmt)
    file = b.file_name("file", files)
    weights, external = None, ()
    if fmt == "openvino":
        if not file.endswith(".xml"):
            raise b.error("file", "must name an OpenVINO IR .xml file", file)
        weights = file[:-len(".xml")] + ".bin"
        if weights not in files:
            raise ModelDirError(f"{b.where}: graph.file {file} needs its weights {weights} listed in files "
                                f"(with its sha256); re-export the model dir")
    elif "external_data" in b.value:
        names = b.value["external_data"]
        if not isinstance(names, list) or len(names) > MAX_FILES:
            raise b.error("external_data", f"must be a list of at most {MAX_FILES} file names", names)
        external = tuple(b.file_name_value(name, "external_data", files) for name in names)
    probe, tolerance = None, 0.05
    if b.value.get("probe") is not None:
        p = _Block(b.value["probe"], "graph.probe", b.where)
        means = p.value.get("channel_means")
        if not isinstance(means, list) or not 1 <= len(means) <= MAX_EMBEDDING_DIM:
            raise p.error("channel_means", f"must be a list of 1 to {MAX_EMBEDDING_DIM} finite numbers", means)
        probe = p.numbers("channel_means", len(means), -1e6, 1e6)
        tolerance = p.number("tolerance", 0.0, 1.0, default=0.05, open_lo=True)
    return GraphSpec(file=file, format=fmt, precision=b.choice("precision", PRECISIONS, default="fp32"),
                     weights=weights, external_data=external, probe=probe, probe_tolerance=float(tolerance))


def _index(b: "_Block", files: dict) -> IndexSpec:
    kind = b.value.get("type", "exact")
    if kind not in INDEX_TYPES:
        raise ModelDirError(f"{b.where}: index type {_show(kind)} is not supported by this runtime "
                            f"(expected 'exact' or 'hnsw')")
    refine_top = b.int("refine_top", 1, MAX_REFINE_TOP, default=16)
    if kind == "exact":
        return IndexSpec("exact", refine_top=refine_top)
    b.choice("space", ("l2",), default="l2")
    return IndexSpec("hnsw", file=b.file_name("file", files), M=b.int("M", 2, MAX_HNSW_M),
                     ef=b.int("ef", 1, MAX_HNSW_EF), refine_top=refine_top)


class _Block:
    """One JSON object of the manifest, read field by field; errors name the file, the key and the range."""

    def __init__(self, value: object, key: str, where: str):
        if not isinstance(value, dict):
            raise ModelDirError(f"{where}: {key} must be a JSON object, got {_kind(value)}")
        self.value, self.key, self.where = value, key, where

    def error(self, name: str, allowed: str, got: object) -> ModelDirError:
        return ModelDirError(f"{self.where}: {self._key(name)} {allowed}, got {_show(got)}")

    def _key(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def _get(self, name: str, default: object) -> object:
        if name in self.value and self.value[name] is not None:
            return self.value[name]
        if default is _REQUIRED:
            raise ModelDirError(f"{self.where}: {self._key(name)} is required")
        return default

    def block(self, name: str) -> "_Block":
        return _Block(self._get(name, _REQUIRED), self._key(name), self.where)

    def int(self, name: str, lo: int, hi: int | None, default: object = _REQUIRED):
        v = self._get(name, default)
        if v is default and default is not _REQUIRED:
            return v
        if type(v) is not int or v < lo or (hi is not None and v > hi):
            raise self.error(name, f"must be an integer >= {lo}" if hi is None else
                             f"must be an integer in [{lo}, {hi}]", v)
        return v

    def number(self, name: str, lo: float | None, hi: float | None, default: object = _REQUIRED,
               open_lo: bool = False, open_hi: bool = False):
        v = self._get(name, default)
        if v is default and default is not _REQUIRED:
            return v
        ok = type(v) in (int, float) and math.isfinite(v)
        if ok and lo is not None:
            ok = v > lo if open_lo else v >= lo
        if ok and hi is not None:
            ok = v < hi if open_hi else v <= hi
        if not ok:
            raise self.error(name, f"must be a finite number in {_interval(lo, hi, open_lo, open_hi)}", v)
        return float(v)

    def ints(self, name: str, n: int, lo: int, hi: int, default: object = _REQUIRED):
        v = self._get(name, default)
        if v is default and default is not _REQUIRED:
            return v
        if (not isinstance(v, list) or len(v) != n
                or not all(type(x) is int and lo <= x <= hi for x in v)):
            raise self.error(name, f"must be a list of {n} integers in [{lo}, {hi}]", v)
        return tuple(v)

    def numbers(self, name: str, n: int, lo: float, hi: float):
        v = self._get(name, _REQUIRED)
        if (not isinstance(v, list) or len(v) != n
                or not all(type(x) in (int, float) and math.isfinite(x) and lo <= x <= hi for x in v)):
            raise self.error(name, f"must be a list of {n} finite numbers in [{lo:g}, {hi:g}]", v)
        return tuple(float(x) for x in v)

    def choice(self, name: str, choices: tuple, default: object = _REQUIRED):
        v = self._get(name, default)
        if v is default and default is not _REQUIRED:
            return v
        if not isinstance(v, str) or v not in choices:
            raise self.error(name, f"must be one of {', '.join(map(repr, choices))}", v)
        return v

    def flag(self, name: str, default: bool) -> bool:
        v = self._get(name, default)
        if type(v) is not bool:
            raise self.error(name, "must be true or false", v)
        return v

    def file_name(self, name: str, files: dict, default: object = _REQUIRED) -> str:
        value = self._get(name, default)
        if value is default and default is not _REQUIRED:
            return value
        return self.file_name_value(value, name, files)

    def file_name_value(self, value: object, name: str, files: dict) -> str:
        check_file_name(value, self._key(name), self.where)
        if value not in files:
            raise ModelDirError(f"{self.where}: {self._key(name)} {value} is not listed in files with a sha256: "
                                f"the runtime reads no file it has not verified; re-export the model dir")
        return value


def _interval(lo, hi, open_lo, open_hi) -> str:
    left = "(-inf" if lo is None else ("(" if open_lo else "[") + f"{lo:g}"
    right = "inf)" if hi is None else f"{hi:g}" + (")" if open_hi else "]")
    return f"{left}, {right}"


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__)


def _show(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
