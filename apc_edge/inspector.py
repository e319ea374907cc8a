"""The runtime entry point: ``Inspector(model_dir).check(frame)``.

Example::

    from apc_edge import Inspector
    inspector = Inspector("models/bottle")            # checks the model dir (ModelDirError), loads the graph
    result = inspector.check(frame)                   # frame: uint8 HxW or HxWx3 BGR; ScoreError if not finite
    if result.is_anomalous:
        print(result.score, result.timings)
    inspector.threshold = 1.2 * inspector.threshold   # runtime override, no re-export
    Inspector("models/bottle", index="exact")         # ignore a model dir's HNSW index, search exactly
    Inspector("models/line2", threads=plan_threads(inspectors=2))   # two cameras in one process
    inspector.threads                                 # what was used: {"cores": 2, "backend": 2, "blas": 1, ...}
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backends import Backend
from .index import ExactIndex, NeighbourIndex
from .model_dir import open_model_dir
from .preprocess import MAX_FRAME_PIXELS, MIN_FRAME_SIDE, validate_frame
from .scoring import ScoreError, ScoreNormalizer, landmark_index, region_patches, score_patches, smooth_map
from .threads import ThreadPlan, apply_thread_plan, available_cores, plan_threads, resolve_blas


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


def _search_threads(plan: ThreadPlan | None) -> int:
    """Threads an Inspector's own searches may use: the plan's index share (-1: every core), 1 without a plan."""
    if plan is None:
        return 1
    return available_cores() if plan.hnsw < 0 else max(1, plan.hnsw)


class Inspector:
    """Score frames with an exported model dir, on the CPU (or another OpenVINO device).

    ``threshold`` overrides the manifest's raw threshold; ``with_map=False`` in
    :meth:`check` skips the anomaly map for the fastest verdict-only path.
    ``index``: None uses the manifest's index (``exact`` or ``hnsw``); ``"exact"``
    forces exact search; a :class:`NeighbourIndex` is used as given.
    ``max_frame_pixels``: larger frames raise ``ValueError`` (default 100 megapixels).
    ``threads``: ``"auto"`` (default) sizes the thread pools for one Inspector on this machine's cores
    (:func:`threads.plan_threads`; BLAS and OpenCV are set for the whole process), a
    :class:`~apc_edge.threads.ThreadPlan` is used as given, None leaves every library at its own default.
    """

    def __init__(self, model_dir: str | Path, device: str = "CPU", threshold: float | None = None,
                 index: NeighbourIndex | str | None = None, require_threshold: bool = True,
                 max_frame_pixels: int = MAX_FRAME_PIXELS, threads: ThreadPlan | str | None = "auto"):
        if isinstance(index, str) and index not in ("exact", "manifest"):
            raise ValueError(f"index must be 'exact', 'manifest' or a NeighbourIndex, got {index!r}")
        if not (isinstance(max_frame_pixels, int) and max_frame_pixels >= MIN_FRAME_SIDE ** 2):
            raise ValueError(f"max_frame_pixels must be an integer >= {MIN_FRAME_SIDE ** 2}, got {max_frame_pixels!r}")
        if not (threads is None or threads == "auto" or isinstance(threads, ThreadPlan)):
            raise ValueError(f"threads must be 'auto', a ThreadPlan or None, got {threads!r}")
        self.max_frame_pixels = max_frame_pixels
        self.model_dir = Path(model_dir)
        plan = plan_threads() if threads == "auto" else threads
        model = open_model_dir(self.model_dir, device, index="manifest" if index in (None, "manifest") else "exact",
                               require_threshold=require_threshold, threads=plan)
        self.manifest = m = model.manifest
        self.preprocessor = m.preprocessor
        self.patch_grid = m.patch_grid
        self.embedding_dim = m.embedding_dim
        self.num_neighbours = m.scoring.num_neighbours
        self.map_sigma = m.scoring.map_sigma
        # the image score: the patch map's peak at this sigma (cells), or at 0 the most anomalous patch
        self.peak_sigma = m.scoring.peak_sigma
        # pad mode: score only the cells on the part, not the canvas around it (runs since part_only)
        self.part_only = m.scoring.part_only
        # approximate search: the top patches are searched again exactly, so the image score is exact
        self.refine_top = m.index.refine_top
        self.index: NeighbourIndex = index if isinstance(index, NeighbourIndex) else model.index
        self.bank = model.bank
        # the refinement's exact passes split the bank over the index's threads (BLAS stays on one beside it),
        # through a lower bound built now rather than in the first check
        self._exact = ExactIndex(self.bank, threads=_search_threads(plan)) if self.index.approximate else None
        if self._exact is not None:
            self._exact.prepare_bound()
        self._landmarks = landmark_index(self.bank) if self.index.approximate else None
        self.bank_neighbours = model.bank_neighbours     # Eq. 7's neighbourhoods, when the export stored them
        if plan is not None:
            plan = self.thread_plan = resolve_blas(plan, exact_search=not self.index.approximate)
            self.threads = {**plan.describe(), "in_effect": apply_thread_plan(plan)}
            if self._exact is not None:
                self.threads["refinement"] = self._exact.threads     # the exact passes after an HNSW search
        else:
            self.thread_plan, self.threads = None, {"plan": None}
        self.backend: Backend = model.backend
        self.threshold_limit = model.threshold_limit
        t = m.threshold
        self._normalizer = ScoreNormalizer(t.value, t.norm_lo, t.norm_hi) if t is not None else None
        if threshold is not None:
            self.threshold = threshold

    @property
    def threshold(self) -> float | None:
        """Raw-score threshold; the normalized score is 0.5 exactly here. None only for a model dir loaded
        with ``require_threshold=False`` whose manifest has no valid threshold (set one to score)."""
        return self._normalizer.threshold if self._normalizer is not None else None

    @threshold.setter
    def threshold(self, value: float) -> None:
        value = float(value)
        if not math.isfinite(value) or not 0 < value < self.threshold_limit:
            raise ValueError(f"threshold must be a finite raw score in (0, {self.threshold_limit:.4g}) for this "
                             f"model (10 x its bank's diameter bound), got {value}")
        base = self._normalizer or ScoreNormalizer(value, 0.0, 2.0 * value)
        self._normalizer = base.with_threshold(value)

    def normalize(self, raw_score):
        """Normalized score(s) for raw score(s) under the current threshold."""
        return self._normalizer(raw_score)

    def embed(self, frame: np.ndarray) -> np.ndarray:
        """Patch embeddings (D, h, w) of one frame, as the backend computes them."""
        return self.backend.run(self.preprocessor(frame))[0]

    def check(self, frame: np.ndarray, with_map: bool = True) -> Result:
        """Score one frame. Raises ``ValueError`` naming the problem for a malformed frame, and
        :class:`ScoreError` (a ``ValueError``) when the score is not a finite number."""
        if self._normalizer is None:
            raise ScoreError(f"{self.model_dir} has no valid threshold ({self.manifest.threshold_problem}); "
                             f"set Inspector.threshold or calibrate with apc-calibrate")
        raw, amap, timings = self._score(frame, with_map)
        return Result(score=float(self._normalizer(raw)), raw_score=raw, is_anomalous=raw >= self.threshold,
                      threshold=self.threshold, anomaly_map=amap, timings=timings)

    def raw_score(self, frame: np.ndarray) -> float:
        """The PatchCore Eq. 7 score of one frame, without a verdict (what calibration needs)."""
        return self._score(frame, with_map=False)[0]

    def _score(self, frame: np.ndarray, with_map: bool) -> tuple[float, np.ndarray | None, dict]:
        t0 = time.perf_counter()
        validate_frame(frame, self.max_frame_pixels)
        x = self.preprocessor(frame)
        t1 = time.perf_counter()
        emb = self.backend.run(x)[0]
        if emb.shape != (self.embedding_dim, *self.patch_grid):
            raise ScoreError(f"graph output shape {emb.shape} does not match the manifest "
                             f"({self.embedding_dim}, {self.patch_grid[0]}, {self.patch_grid[1]})")
        if not np.isfinite(emb).all():
            raise ScoreError("the graph output NaN or inf for this frame: no score, no verdict")
        t2 = time.perf_counter()
        region = self.preprocessor.patch_region(frame.shape, self.patch_grid) if self.part_only else None
        patches, cells = region_patches(emb, region)
        scores = score_patches(patches, self.patch_grid, self.index, self.bank, self.num_neighbours, cells,
                               self._exact, self.refine_top, neighbours=self.bank_neighbours,
                               landmarks=self._landmarks, peak_sigma=self.peak_sigma)
        raw = float(scores.image_score)
        if not math.isfinite(raw):
            raise ScoreError(f"the image score is {raw} (patch distances overflowed or are undefined): no verdict")
        t4 = time.perf_counter()
        amap = None
        if with_map:
            small = smooth_map(scores.patch_map, self.preprocessor.input_hw, self.map_sigma)
            amap = self.preprocessor.map_to_frame(small, frame.shape)
        t5 = time.perf_counter()
        ms = lambda a, b: (b - a) * 1e3  # noqa: E731
        search = scores.timings["search"]
        return raw, amap, {"preprocess": ms(t0, t1), "backbone": ms(t1, t2), "search": search,
                           "scoring": ms(t2, t4) - search, "map": ms(t4, t5), "total": ms(t0, t5)}
