"""The runtime entry point: ``Inspector(model_dir).check(frame)``.

Example::

    from apc_edge import Inspector
    inspector = Inspector("models/bottle")            # verifies hashes, loads OpenVINO or ONNX Runtime
    result = inspector.check(frame)                   # frame: uint8 HxW or HxWx3 BGR
    if result.is_anomalous:
        print(result.score, result.timings)
    inspector.threshold = 1.2 * inspector.threshold   # runtime override, no re-export
    Inspector("models/bottle", index="exact")         # ignore a model dir's HNSW index, search exactly
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backends import Backend, open_backend
from .index import ExactIndex, HnswIndex, NeighbourIndex
from .manifest import ModelDirError, load_array, load_manifest
from .preprocess import Preprocessor, validate_frame
from .scoring import ScoreNormalizer, refine_top_patches, region_patches, score_neighbours, smooth_map


@dataclass
class Result:
    """Outcome of one :meth:`Inspector.check`.

    ``score`` is normalized so that 0.5 is the threshold; ``raw_score`` is the
    PatchCore Eq. 7 score. ``anomaly_map`` (frame size, float32) holds raw patch
    distances, smoothed; ``timings`` are milliseconds per stage: ``preprocess``,
    ``backbone``, ``search`` (nearest bank patch of every patch), ``scoring``
    (Eq. 7 reweighting), ``map`` and ``total``.
    """

    score: float
    raw_score: float
    is_anomalous: bool
    threshold: float
    anomaly_map: np.ndarray | None
    timings: dict = field(default_factory=dict)


class Inspector:
    """Score frames with an exported model dir, on the CPU (or another OpenVINO device).

    ``threshold`` overrides the manifest's raw threshold; ``with_map=False`` in
    :meth:`check` skips the anomaly map for the fastest verdict-only path.
    ``index``: None uses the manifest's index (``exact`` or ``hnsw``); ``"exact"``
    forces exact search; a :class:`NeighbourIndex` is used as given.
    """

    def __init__(self, model_dir: str | Path, device: str = "CPU", threshold: float | None = None,
                 index: NeighbourIndex | str | None = None):
        self.model_dir = Path(model_dir)
        self.manifest = load_manifest(self.model_dir)
        m = self.manifest
        try:
            self.preprocessor = Preprocessor.from_dict(m["preprocess"])
            self.patch_grid = tuple(int(v) for v in m["patch_grid"])
            self.embedding_dim = int(m["embedding_dim"])
            self.num_neighbours = int(m["scoring"]["num_neighbours"])
            self.map_sigma = float(m["scoring"]["map_sigma"])
            # pad mode: score only the cells on the part, not the canvas around it (runs since part_only)
            self.part_only = bool(m["scoring"].get("part_only", False))
            self._normalizer = ScoreNormalizer.from_dict(m["threshold"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelDirError(f"{self.model_dir}/manifest.json has an invalid field: {exc}") from None
        self.bank = load_array(self.model_dir, m["memory_bank"]["file"]).astype(np.float32, copy=False)
        if self.bank.ndim != 2 or self.bank.shape[1] != self.embedding_dim:
            raise ModelDirError(f"memory bank shape {self.bank.shape} does not match embedding_dim "
                                f"{self.embedding_dim} in the manifest")
        if isinstance(index, str) and index not in ("exact", "manifest"):
            raise ValueError(f"index must be 'exact', 'manifest' or a NeighbourIndex, got {index!r}")
        if index == "exact":
            self.index: NeighbourIndex = ExactIndex(self.bank)
        elif index is None or index == "manifest":
            self.index = self._open_index()
        else:
            self.index = index
        # approximate search: the top patches are searched again exactly, so the image score is exact
        try:
            self.refine_top = int(self.manifest["index"].get("refine_top", 16))
        except (TypeError, ValueError):
            raise ModelDirError(f"{self.model_dir}/manifest.json: index.refine_top must be an integer") from None
        self._exact = ExactIndex(self.bank) if self.index.approximate else None
        self.backend: Backend = open_backend(self.model_dir, m, device)
        if threshold is not None:
            self.threshold = threshold

    def _open_index(self) -> NeighbourIndex:
        block = self.manifest["index"]
        kind = block.get("type", "exact")
        if kind == "exact":
            return ExactIndex(self.bank)
        if kind == "hnsw":
            try:
                return HnswIndex.load(self.model_dir / block["file"], dim=self.embedding_dim,
                                      size=self.bank.shape[0], ef=int(block["ef"]))
            except KeyError as exc:
                raise ModelDirError(f"{self.model_dir}/manifest.json: index block lacks {exc}") from None
            except ValueError as exc:
                raise ModelDirError(str(exc)) from None
        raise ModelDirError(f"index type {kind!r} in the manifest is not supported by this runtime "
                            f"(expected 'exact' or 'hnsw')")

    @property
    def threshold(self) -> float:
        """Raw-score threshold; the normalized score is 0.5 exactly here."""
        return self._normalizer.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        value = float(value)
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"threshold must be a positive finite raw score, got {value}")
        self._normalizer = self._normalizer.with_threshold(value)

    def normalize(self, raw_score):
        """Normalized score(s) for raw score(s) under the current threshold."""
        return self._normalizer(raw_score)

    def embed(self, frame: np.ndarray) -> np.ndarray:
        """Patch embeddings (D, h, w) of one frame, as the backend computes them."""
        return self.backend.run(self.preprocessor(frame))[0]

    def check(self, frame: np.ndarray, with_map: bool = True) -> Result:
        """Score one frame. Raises ``ValueError`` naming the problem for a malformed frame."""
        t0 = time.perf_counter()
        validate_frame(frame)
        x = self.preprocessor(frame)
        t1 = time.perf_counter()
        emb = self.backend.run(x)[0]
        if emb.shape != (self.embedding_dim, *self.patch_grid):
            raise ModelDirError(f"graph output shape {emb.shape} does not match the manifest "
                                f"({self.embedding_dim}, {self.patch_grid[0]}, {self.patch_grid[1]})")
        t2 = time.perf_counter()
        region = self.preprocessor.patch_region(frame.shape, self.patch_grid) if self.part_only else None
        patches, cells = region_patches(emb, region)
        dist, ids = self.index.search(patches, k=1)
        dist, ids = dist[:, 0], ids[:, 0]
        if self._exact is not None:
            dist, ids, _ = refine_top_patches(patches, dist, ids, self._exact, self.refine_top)
        t3 = time.perf_counter()
        scores = score_neighbours(patches, dist, ids, self.patch_grid, self.index, self.bank, self.num_neighbours,
                                  cells)
        t4 = time.perf_counter()
        amap = None
        if with_map:
            small = smooth_map(scores.patch_map, self.preprocessor.input_hw, self.map_sigma)
            amap = self.preprocessor.map_to_frame(small, frame.shape)
        t5 = time.perf_counter()
        raw = scores.image_score
        ms = lambda a, b: (b - a) * 1e3  # noqa: E731
        return Result(score=float(self._normalizer(raw)), raw_score=raw, is_anomalous=raw >= self.threshold,
                      threshold=self.threshold, anomaly_map=amap,
                      timings={"preprocess": ms(t0, t1), "backbone": ms(t1, t2), "search": ms(t2, t3),
                               "scoring": ms(t3, t4), "map": ms(t4, t5), "total": ms(t0, t5)})
