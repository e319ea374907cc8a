"""PatchCore scoring: nearest-neighbour patch distances, Eq. 7 image score, anomaly map.

Shared by training (to compute held-out scores and parity references) and the
runtime, so both score identically.

One scorer: :func:`score_patches` (search, exact refinement of an approximate
search, Eq. 7, patch map, with stage timings) is what the Inspector, training,
the HNSW sweep and the INT8 guard all call; :func:`score_embedding` is the same
for a whole (D, h, w) embedding.

Example::

    scores = score_embedding(emb[0], index, bank, num_neighbours=9)
    scores.image_score, scores.patch_map          # float, (h, w) float32
    score_embedding(emb[0], index, bank, peak_sigma=peak_sigma_cells(4.0, 8))   # the map's peak (apc-train's)
    scores.timings                                # {"search": ms, "scoring": ms}
    amap = smooth_map(scores.patch_map, (224, 224), sigma=4.0)
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from .index import ExactIndex, NeighbourIndex


class ScoreError(ValueError):
    """A score could not be computed as a finite number (NaN or inf): no verdict may rest on it."""


PEAK_KERNEL = 3   # the map's peak is read with a 3 x 3 Gaussian on the patch grid


def peak_sigma_cells(map_sigma: float, stride: float) -> float:
    """The Gaussian sigma, in patch cells, that the anomaly map's own blur gives one cell: the bilinear
    upsampling spreads a cell with variance stride^2 / 6, the blur adds map_sigma^2 (input pixels).
    ``peak_sigma_cells(4.0, 8)`` is 0.645: apc-train's image score is the peak of the patch map smoothed so.
    """
    return math.sqrt(map_sigma ** 2 + stride ** 2 / 6.0) / stride


@dataclass
class PatchScores:
    image_score: float       # Eq. 7 reweighted score of the map's peak (of the most anomalous patch at peak_sigma 0)
    max_patch_score: float   # s*: the largest distance of a patch to its nearest bank patch
    patch_map: np.ndarray    # (h, w) nearest-neighbour distance per patch
    nearest: np.ndarray | None = None      # (n,) each scored patch's nearest bank distance (after refinement)
    nearest_ids: np.ndarray | None = None  # (n,) its bank row
    search_ids: np.ndarray | None = None   # (n,) the index's own answer, before exact refinement
    refined: int = 0                       # patches searched again exactly
    timings: dict = field(default_factory=dict)  # ms: "search" (index + refinement), "scoring" (Eq. 7, map)


def _search(index: NeighbourIndex, queries: np.ndarray, k: int, exclude: np.ndarray | None):
    return index.search(queries, k=k) if exclude is None else index.search(queries, k=k, exclude=exclude)


def _search_exact(exact: NeighbourIndex, queries: np.ndarray, exclude: np.ndarray | None, upper: np.ndarray):
    """Each query's nearest row in ``exact``, which ``upper`` (distances to rows already found) helps an
    :class:`ExactIndex` rule rows out by."""
    if isinstance(exact, ExactIndex):
        return exact.search(queries, k=1, exclude=exclude, upper=upper)
    return _search(exact, queries, 1, exclude)


def eq7_weight(test_patch: np.ndarray, nearest_id: int, bank: np.ndarray, index: NeighbourIndex,
               num_neighbours: int, exclude: np.ndarray | None = None,
               neighbours: np.ndarray | None = None) -> float:
    """PatchCore Eq. 7: ``1 - exp(|m_test - m*|) / sum_{m in N_b(m*)} exp(|m_test - m|)``.

    ``N_b(m*)`` are the ``b`` bank patches nearest to ``m*`` (which include ``m*``).
    A test patch whose nearest bank patch sits in a dense neighbourhood gets a
    weight near ``1 - 1/b``; one whose ``m*`` is isolated is damped. ``neighbours``: the bank's
    table of each row's nearest rows (:mod:`apc_edge.bank_neighbours`), read instead of searching
    ``index`` (not with ``exclude``, whose rows the table may hold).
    """
    if num_neighbours <= 1:
        return 1.0
    if neighbours is not None and exclude is None:
        ids = np.asarray(neighbours[nearest_id][:num_neighbours], np.int64)
    else:
        ids = _search(index, bank[nearest_id][None, :], num_neighbours, exclude)[1][0]
    ids = np.concatenate([[nearest_id], ids[ids != nearest_id]])[:num_neighbours]
    dists = np.linalg.norm(bank[ids].astype(np.float64) - test_patch.astype(np.float64), axis=1)
    shifted = np.exp(dists - dists.max())
    return float(1.0 - shifted[0] / shifted.sum())


def embedding_patches(embedding: np.ndarray) -> np.ndarray:
    """(D, h, w) embedding -> (h * w, D) contiguous float32 patch rows.

    OpenCV's transpose, not numpy's strided copy: a check's 128 x 4096 embedding took 0.07 against 1.29 ms."""
    d, h, w = embedding.shape
    return cv2.transpose(np.ascontiguousarray(embedding.reshape(d, h * w), dtype=np.float32))


def region_patches(embedding: np.ndarray, region: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(patch rows, flat cell ids) of a (D, h, w) embedding: all cells, or only those set in ``region``
    (pad mode: the cells on the part; see ``Preprocessor.patch_region``). Cell ids are ``None`` for all."""
    patches = embedding_patches(embedding)
    if region is None:
        return patches, None
    if region.shape != embedding.shape[1:] or not region.any():
        raise ValueError(f"patch region of shape {region.shape} with {int(region.sum())} cells does not fit an "
                         f"embedding grid {embedding.shape[1:]}")
    cells = np.flatnonzero(region)
    return np.ascontiguousarray(patches[cells]), cells


def score_neighbours(patches: np.ndarray, dist: np.ndarray, ids: np.ndarray, grid: tuple[int, int],
                     index: NeighbourIndex, bank: np.ndarray, num_neighbours: int = 9,
                     cells: np.ndarray | None = None, exclude: np.ndarray | None = None,
                     neighbours: np.ndarray | None = None, peak_sigma: float = 0.0) -> PatchScores:
    """Image score and patch map from each patch's nearest bank distance ``dist`` and row ``ids`` (n,).

    ``cells``: the flat grid cells the patches came from (default: all, in order). Elsewhere the map holds
    the nearest scored cell's distance when the cells form a rectangle (pad mode's part: its edge is
    extended outwards, so the map's blur does not dilute defects on the part's border), else the
    lowest scored distance. ``peak_sigma`` > 0: the image score is the peak of the patch map smoothed by a
    3 x 3 Gaussian of that sigma (cells, :func:`peak_sigma_cells`), reweighted by Eq. 7 at the peak's
    patch; 0: the most anomalous patch's distance, reweighted (the PatchCore paper's rule).
    """
    patch_map = patch_distance_map(dist, grid, cells)
    s_star = float(dist.max())
    peak, value = map_peak(patch_map, cells, peak_sigma)
    worst = int(np.argmax(dist)) if peak_sigma <= 0 else _patch_of_cell(peak, cells)
    weight = eq7_weight(patches[worst], int(ids[worst]), bank, index, num_neighbours, exclude, neighbours)
    return PatchScores(image_score=weight * value, max_patch_score=s_star, patch_map=patch_map)


def patch_distance_map(dist: np.ndarray, grid: tuple[int, int], cells: np.ndarray | None = None) -> np.ndarray:
    """The (h, w) float32 map of the patch distances ``dist``, laid out as :func:`score_neighbours` says."""
    if cells is None:
        return dist.reshape(grid).astype(np.float32)
    patch_map = np.full(int(np.prod(grid)), dist.min(), np.float32)
    patch_map[cells] = dist
    return _extend_rectangle(patch_map.reshape(grid), cells)


def map_peak(patch_map: np.ndarray, cells: np.ndarray | None, peak_sigma: float) -> tuple[int, float]:
    """(flat cell, value) of the patch map's peak over the scored ``cells`` (default: all), after a 3 x 3
    Gaussian of ``peak_sigma`` cells (none at 0)."""
    flat = _smoothed(patch_map, peak_sigma).ravel()
    cell = int(np.argmax(flat)) if cells is None else int(cells[np.argmax(flat[cells])])
    return cell, float(flat[cell])


def _patch_of_cell(cell: int, cells: np.ndarray | None) -> int:
    return cell if cells is None else int(np.flatnonzero(cells == cell)[0])


def _patches_near(marked: np.ndarray, grid: tuple[int, int], cells: np.ndarray | None) -> np.ndarray:
    """The scored patches (indices into the scored rows) in the 3 x 3 neighbourhoods of the ``marked`` flat
    cells: what the smoothed map reads at those cells. One dilation of the grid (the union of thousands of
    cells costs less so than through :func:`_cell_neighbours`, which keeps each cell's own patches)."""
    h, w = grid
    mask = np.zeros(h * w, np.uint8)
    mask[marked] = 1
    near = cv2.dilate(mask.reshape(h, w), np.ones((PEAK_KERNEL, PEAK_KERNEL), np.uint8)).ravel() > 0
    return np.flatnonzero(near) if cells is None else np.flatnonzero(near[cells])


def _cell_neighbours(flat_cells: np.ndarray, grid: tuple[int, int], cells: np.ndarray | None) -> np.ndarray:
    """(n, 9) int64: the scored patch (index into the scored rows) at each of the 3 x 3 cells around each of
    ``flat_cells``, -1 where that cell lies outside the grid or is not scored (the smoothed map's border reflects,
    so a cell reads only these)."""
    h, w = grid
    if cells is None:
        row_of = np.arange(h * w, dtype=np.int64)
    else:
        row_of = np.full(h * w, -1, np.int64)
        row_of[cells] = np.arange(cells.size)
    r, c = np.divmod(flat_cells, w)
    nr = r[:, None] + np.repeat(np.arange(-1, 2), 3)[None, :]
    nc = c[:, None] + np.tile(np.arange(-1, 2), 3)[None, :]
    inside = (nr >= 0) & (nr < h) & (nc >= 0) & (nc < w)
    return np.where(inside, row_of[np.clip(nr, 0, h - 1) * w + np.clip(nc, 0, w - 1)], -1)


def _extend_rectangle(patch_map: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """``patch_map`` with the cells outside the rectangle ``cells`` covers set to its nearest edge cell."""
    h, w = patch_map.shape
    rows, cols = np.divmod(np.asarray(cells), w)
    r0, r1, c0, c1 = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
    if cells.size != (r1 - r0 + 1) * (c1 - c0 + 1):
        return patch_map
    inner = np.ascontiguousarray(patch_map[r0:r1 + 1, c0:c1 + 1])
    return cv2.copyMakeBorder(inner, r0, h - 1 - r1, c0, w - 1 - c1, cv2.BORDER_REPLICATE)


LANDMARK_ROWS = 1024   # the bank's first rows: the greedy coreset's first picks, spread over all of it
LANDMARK_TOP = 4       # x the first exact pass: the patches whose HNSW distance is checked against them


def landmark_index(bank: np.ndarray) -> ExactIndex:
    """Exact search over the bank's first ``LANDMARK_ROWS`` rows (see :func:`refine_top_patches`)."""
    return ExactIndex(np.ascontiguousarray(bank[:LANDMARK_ROWS], np.float32))


def refine_top_patches(patches: np.ndarray, dist: np.ndarray, ids: np.ndarray, exact: NeighbourIndex,
                       top: int = 16, exclude: np.ndarray | None = None,
                       landmarks: NeighbourIndex | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Exact distances for the patches an approximate search ranks highest, until the maximum is certain.

    An approximate index never reports a distance below the true one, so once the
    largest exactly-searched distance is at least every distance not yet searched
    exactly, it is the true maximum: the image score (and the map's hottest
    patches) are exact while the other patches keep their approximate distances.
    Starts with the ``top`` highest; when no more than that many patches then still have an
    approximate distance above the largest exact one, one more pass searches exactly those (the
    maximum can only rise, so that settles it), else the count doubles. ``exclude``: bank rows neither
    search may return (leave-one-out). Returns new ``(dist, ids, n_refined)``.

    ``landmarks`` (:func:`landmark_index`): before that, the ``LANDMARK_TOP x top`` highest are also
    searched among the bank's first rows, and keep the nearer of the two rows. Those rows are the
    coreset's first, farthest-apart picks, so they include the rows of the bank's outlying corners,
    which an HNSW graph may not reach from its entry point: on bottle, the images' black corners came
    back at distances 7-10 where the true ones are 0.1-1.3, above the image's maximum, and 33-80
    patches a frame needed exact passes (the 16-patch first pass settles it after this, 0.35 ms).
    """
    dist, ids, refined = _refine_top(patches, dist, ids, exact, top, exclude, landmarks)
    return dist, ids, int(refined.sum())


def _refine_top(patches, dist, ids, exact, top, exclude, landmarks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`refine_top_patches`, returning the mask of the patches searched exactly."""
    dist, ids = np.array(dist, np.float32), np.array(ids, np.int64)
    refined = np.zeros(dist.size, bool)
    want = max(1, int(top))
    if landmarks is not None:
        _tighten_with_landmarks(patches, dist, ids, landmarks, LANDMARK_TOP * want, exclude)
    todo = np.argsort(-dist, kind="stable")[:want]
    while True:
        if todo.size:
            d, j = _search_exact(exact, patches[todo], exclude, dist[todo])
            dist[todo], ids[todo] = d[:, 0], j[:, 0]
            refined[todo] = True
        above = np.flatnonzero(~refined & (dist > dist[refined].max()))
        if above.size == 0:
            return dist, ids, refined
        if above.size <= want:
            todo = above
        else:
            want *= 2
            order = np.argsort(-dist, kind="stable")[:want]
            todo = order[~refined[order]]


PEAK_WIDE_K = 16       # a wider approximate search (hnswlib walks max(ef, k) candidates) before an exact one
PEAK_WIDE_BATCH = 64   # open cells' patches searched wider at once
PEAK_BATCH = 32        # open cells' patches in the first exact pass after the top patches', doubled after each


def _refine_map_peak(patches, dist, ids, index, exact, top, exclude, landmarks, grid, cells, peak_sigma
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact distances for the patches that the smoothed map's peak and the map's maximum rest on, until both
    are certain; returns new ``(dist, ids)`` and the mask of the patches searched exactly.

    The approximate distances are upper bounds, so the smoothed map is one too. A cell whose 3 x 3 patches are
    all exact has its true value; the largest such value bounds the peak from below, so only cells whose bound
    lies above it (open cells) can still be the peak, and only patches above the largest exact distance can
    still be the maximum. The first exact pass takes the ``top`` highest patches and the approximate peak's
    3 x 3 (after the bank's first rows, ``landmarks``), which settles most frames. Then both are settled
    highest bound first: the next ``PEAK_BATCH`` patches of the open cells and the next ``top`` patches above
    the maximum (each doubled after every exact pass) are searched exactly, once each of them has been searched
    again in ``index`` with a wider candidate list (``PEAK_WIDE_K``, up to ``PEAK_WIDE_BATCH`` patches of open
    cells at a time). That wider search costs far less than an exact pass and closes most open cells by
    itself: the graph's first answers overestimate a few hundred patches of a bottle frame (its dark corners
    most), and those alone keep cells open, often with the approximate peak among them. Searching every open
    cell's patches exactly at once, as before, searched 3 000 of a good bottle frame's 4 096 patches exactly
    (2.5 s at 80 000 bank rows)."""
    dist, ids = np.array(dist, np.float32), np.array(ids, np.int64)
    scored = np.arange(int(np.prod(grid))) if cells is None else cells
    peak_budget, top_budget = PEAK_BATCH, max(1, int(top))
    if landmarks is not None:
        _tighten_with_landmarks(patches, dist, ids, landmarks, LANDMARK_TOP * top_budget, exclude)
    peak_cell = map_peak(patch_distance_map(dist, grid, cells), cells, peak_sigma)[0]
    head = np.union1d(np.argsort(-dist, kind="stable")[:top_budget], _patches_near(np.array([peak_cell]), grid, cells))
    refined, widened = np.zeros(dist.size, bool), np.zeros(dist.size, bool)
    while True:
        d, j = _search_exact(exact, patches[head], exclude, dist[head])
        dist[head], ids[head] = d[:, 0], j[:, 0]
        refined[head] = widened[head] = True
        while True:
            smooth = _smoothed(patch_distance_map(dist, grid, cells), peak_sigma).ravel()[scored]
            unsettled = np.zeros(dist.size, bool)
            unsettled[_patches_near(scored[~refined], grid, cells)] = True
            lower = smooth[~unsettled].max() if (~unsettled).any() else -np.inf
            open_at = np.flatnonzero(unsettled & (smooth > lower))
            above = np.flatnonzero(~refined & (dist > dist[refined].max()))
            above = above[_highest(dist[above], top_budget)]
            head = np.union1d(_open_patches(open_at, smooth, cells, refined, grid, peak_budget), above)
            if head.size == 0:
                return dist, ids, refined
            if widened[head].all():
                break
            # cheap first: tighter upper bounds from the graph itself
            todo = np.union1d(_open_patches(open_at, smooth, cells, widened, grid, PEAK_WIDE_BATCH),
                              above[~widened[above]])
            d, j = _search(index, patches[todo], PEAK_WIDE_K, exclude)
            closer = d[:, 0] < dist[todo]
            dist[todo[closer]], ids[todo[closer]] = d[closer, 0], j[closer, 0]
            widened[todo] = True
        peak_budget, top_budget = 2 * peak_budget, 2 * top_budget


def _highest(values: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` largest ``values``, largest first (a partial sort when there are more)."""
    if values.size > count:
        part = np.argpartition(-values, count - 1)[:count]
        return part[np.argsort(-values[part], kind="stable")]
    return np.argsort(-values, kind="stable")


def _open_patches(open_at, bound, cells, skip, grid, budget: int) -> np.ndarray:
    """The patches (indices into the scored rows) of the open cells ``open_at`` (indices into the scored rows) that
    ``skip`` does not mark: whole cells, highest ``bound`` first, until about ``budget`` patches (at least those
    of the first cell that has any). Only as many of the highest cells as that needs are sorted."""
    window = budget + 1
    while True:
        cells_first = open_at[_highest(bound[open_at], window)]
        chosen, enough = _cell_patches(cells_first, cells, skip, grid, budget)
        if enough or cells_first.size == open_at.size:
            return chosen
        window *= 4


def _cell_patches(cells_first, cells, skip, grid, budget: int) -> tuple[np.ndarray, bool]:
    """:func:`_open_patches` over the cells ``cells_first`` in their order, and whether they held ``budget``."""
    if cells_first.size == 0:
        return np.zeros(0, np.int64), True
    near = _cell_neighbours(cells_first if cells is None else cells[cells_first], grid, cells)
    todo = (near >= 0) & ~skip[np.maximum(near, 0)]
    counts = np.cumsum(todo.sum(axis=1))
    take = max(int(np.searchsorted(counts, budget, side="right")), int(np.searchsorted(counts, 0, side="right")) + 1)
    return np.unique(near[:take][todo[:take]]), bool(counts[-1] >= budget)


def _smoothed(patch_map: np.ndarray, peak_sigma: float) -> np.ndarray:
    if peak_sigma <= 0:
        return patch_map
    return cv2.GaussianBlur(patch_map, (PEAK_KERNEL, PEAK_KERNEL), sigmaX=peak_sigma, sigmaY=peak_sigma,
                            borderType=cv2.BORDER_REFLECT)


def _tighten_with_landmarks(patches: np.ndarray, dist: np.ndarray, ids: np.ndarray, landmarks: NeighbourIndex,
                            count: int, exclude: np.ndarray | None) -> None:
    """In place: the ``count`` highest of ``dist`` lowered to their nearest landmark row where that is nearer."""
    if exclude is not None:
        exclude = np.asarray(exclude, np.int64)
        exclude = exclude[exclude < landmarks.size]
        if exclude.size >= landmarks.size:
            return
    top = np.argsort(-dist, kind="stable")[:count]
    d, j = _search(landmarks, patches[top], 1, exclude if exclude is not None and exclude.size else None)
    closer = d[:, 0] < dist[top]
    dist[top[closer]], ids[top[closer]] = d[closer, 0], j[closer, 0]


def score_patches(patches: np.ndarray, grid: tuple[int, int], index: NeighbourIndex, bank: np.ndarray,
                  num_neighbours: int = 9, cells: np.ndarray | None = None, exact: NeighbourIndex | None = None,
                  refine_top: int = 16, exclude: np.ndarray | None = None,
                  neighbours: np.ndarray | None = None, landmarks: NeighbourIndex | None = None,
                  peak_sigma: float = 0.0) -> PatchScores:
    """Score one image's patch rows (n, D) against the bank: the one scorer.

    ``grid``: the patch grid; ``cells``: the flat cells the rows came from (default: all, in order).
    With an approximate ``index`` the top patches are searched again in ``exact`` (built from ``bank``
    when not given) so the maximum is exact (:func:`refine_top_patches`, after the bank's first rows,
    ``landmarks``, built from ``bank`` when not given), and Eq. 7's neighbourhood of
    that patch's bank row is searched in ``exact`` too (an HNSW graph can miss it for a row in a
    poorly connected corner of the bank: 3 of 32 bottle test images scored up to 0.07 off), so the image
    score is exact search's; with ``neighbours`` (the bank's neighbour table) that neighbourhood is read,
    not searched. ``exclude``: bank rows that must not be matched, e.g. the rows that came
    from the image being scored, which scores a bank image as if it had been left out (an approximate
    index searches with them marked deleted). ``peak_sigma``: how the image score reads the map
    (:func:`score_neighbours`); with an approximate index the peak's own patches are searched exactly
    too. ``timings`` holds the stages in ms.
    """
    t0 = time.perf_counter()
    dist, ids = _search(index, patches, 1, exclude)
    dist, ids = dist[:, 0], ids[:, 0]
    search_ids, refined = ids, 0
    if index.approximate:
        exact = exact if exact is not None else index.exact if index.exact is not None else ExactIndex(bank)
        landmarks = landmarks if landmarks is not None else landmark_index(bank)
        if peak_sigma > 0:
            dist, ids, exact_rows = _refine_map_peak(patches, dist, ids, index, exact, refine_top, exclude, landmarks,
                                                     grid, cells, peak_sigma)
        else:
            dist, ids, exact_rows = _refine_top(patches, dist, ids, exact, refine_top, exclude, landmarks)
        refined = int(exact_rows.sum())
    t1 = time.perf_counter()
    eq7_index = exact if index.approximate else index
    scores = score_neighbours(patches, dist, ids, grid, eq7_index, bank, num_neighbours, cells, exclude, neighbours,
                              peak_sigma)
    t2 = time.perf_counter()
    return replace(scores, nearest=dist, nearest_ids=ids, search_ids=search_ids, refined=refined,
                   timings={"search": (t1 - t0) * 1e3, "scoring": (t2 - t1) * 1e3})


def score_embedding(embedding: np.ndarray, index: NeighbourIndex, bank: np.ndarray,
                    num_neighbours: int = 9, exact: NeighbourIndex | None = None, refine_top: int = 16,
                    region: np.ndarray | None = None, exclude: np.ndarray | None = None,
                    peak_sigma: float = 0.0) -> PatchScores:
    """Score one image's patch embedding, shape (D, h, w) (:func:`score_patches`); with ``region``,
    only the cells set there."""
    patches, cells = region_patches(embedding, region)
    return score_patches(patches, embedding.shape[1:], index, bank, num_neighbours, cells, exact, refine_top,
                         exclude, peak_sigma=peak_sigma)


def smooth_map(patch_map: np.ndarray, input_hw: tuple[int, int], sigma: float = 4.0) -> np.ndarray:
    """Bilinear upsampling of the patch map to the model-input size, then Gaussian blur (sigma in input pixels)."""
    h, w = input_hw
    up = cv2.resize(patch_map.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    if sigma > 0:
        ksize = 2 * int(4.0 * sigma + 0.5) + 1
        up = cv2.GaussianBlur(up, (ksize, ksize), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    return up


@dataclass(frozen=True)
class ScoreNormalizer:
    """Maps raw scores so that the threshold lands on 0.5: ``clip(0.5 + (s - t) / (hi - lo), 0, 1)``.

    ``lo``/``hi`` are the score range seen at calibration (good images' minimum and
    the larger of the anomalies' maximum or ``2t - lo``), so 0 and 1 mean "as normal /
    as anomalous as anything calibrated".
    """

    threshold: float
    lo: float
    hi: float

    def __call__(self, raw):
        span = max(self.hi - self.lo, 1e-12)
        return np.clip(0.5 + (np.asarray(raw, np.float64) - self.threshold) / span, 0.0, 1.0)

    def with_threshold(self, threshold: float) -> "ScoreNormalizer":
        return ScoreNormalizer(float(threshold), self.lo, self.hi)

    @classmethod
    def from_dict(cls, d: dict) -> "ScoreNormalizer":
        return cls(float(d["value"]), float(d["norm_lo"]), float(d["norm_hi"]))
