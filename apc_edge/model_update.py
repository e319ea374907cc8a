"""Teach an exported model dir new good images on the camera PC, without torch or the training data.

What a reviewer confirmed as good (false alarms above all) goes into the memory bank by the coreset's
own rule, and the result is a new model dir beside the old one (kept for rollback):

1. Each good image is embedded with the model dir's own graph (the INT8 one in an INT8 dir), so the
   new rows live in the same space as the bank.
2. **Coverage, the coreset's rule.** The greedy k-center coreset stopped when every training patch lay
   within its covering radius ``r`` of a bank row; the bank's rows are at least about ``r`` apart, so
   ``r`` is estimated from the distances between bank rows (:func:`covering_radius_estimate`). The new patches farther than ``r``
   from the bank are added greedily, farthest first, until every new patch is within ``r``.
3. The HNSW index (if any) is rebuilt with the dir's settings and its recall@1 re-measured on the new
   patches against exact search; an index that misses 0.98 is replaced by exact search.
4. **Threshold.** Each new good image is scored against the updated bank without the rows it added
   (leave-one-out). The threshold stays, unless more than the target share of those scores lie above
   it: then it is raised to the robust threshold of those scores (the same rule as training).
5. Confirmed defects (``defects``) must still score at or above the threshold; if any would pass,
   nothing is written (:class:`UpdateRefused`).
6. The new dir is written to a temporary sibling and renamed into place, with ``update`` provenance
   (the parent manifest's sha256, the images added, rows added, when).

Example::

    report = update_model("models/bottle", "models/bottle_v2", good=["reviewed/good"],
                          defects=["reviewed/defect"])
    report["rows_added"], report["threshold"]["value"]
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .bank_neighbours import FILE_NAME as NEIGHBOURS_FILE, extend_bank_neighbours
from .calibration.imagesets import collect_images
from .calibration.thresholds import robust_good_threshold
from .coreset import extend_coreset
from .index import ExactIndex, HnswIndex, found_nearest
from .inspector import Inspector
from .manifest import MANIFEST_NAME, write_manifest
from .preprocess import load_image
from .scoring import region_patches, score_neighbours, score_patches
from .threads import apply_thread_plan, resolve_blas

MIN_RECALL = 0.98              # recall@1 after the exact refinement, as apc-export's HNSW targets
MAX_SCORE_CHANGE = 0.005       # largest relative image-score change against exact search
MAX_NEW_ROWS_SHARE = 1.0       # an update may at most double the bank (a new product needs a retrain)


class UpdateRefused(ValueError):
    """The update would make the model worse in a way a line cannot accept; nothing was written."""


RADIUS_QUANTILE = 0.01     # of the bank rows' nearest-neighbour distances (see covering_radius_estimate)


def covering_radius_estimate(bank: np.ndarray, chunk: int = 4096) -> float:
    """The coreset's covering radius, from the bank alone: greedy k-center picks lie at least that radius
    apart, so every row's distance to its nearest other row is at least it, and the last picks sit right at
    it. The 1st percentile of those distances is used, not their minimum: an INT8 dir's bank was re-embedded
    with the INT8 graph, whose rounding moves a few rows close together (bottle: minimum 1.015, 1st
    percentile 1.249; its FP32 bank: 1.341 and 1.343)."""
    index = ExactIndex(bank)
    nearest = []
    for start in range(0, len(bank), chunk):
        d, ids = index.search(bank[start:start + chunk], k=2)
        own = ids[:, 0] == np.arange(start, start + len(d))
        nearest.append(np.where(own, d[:, 1], d[:, 0]))
    return float(np.quantile(np.concatenate(nearest), RADIUS_QUANTILE))


def greedy_additions(patches: np.ndarray, bank: np.ndarray, radius: float, limit: int,
                     nearest: np.ndarray | None = None) -> np.ndarray:
    """Rows of ``patches`` to add so that every patch lies within ``radius`` of the bank: the coreset's greedy
    rule continued (:func:`coreset.extend_coreset`, farthest first). ``nearest``: each patch's distance to
    the bank, when already searched."""
    if nearest is None:
        nearest = ExactIndex(bank).search(patches, k=1)[0][:, 0]
    picks = extend_coreset(patches, nearest.astype(np.float32) ** 2, radius, limit)
    if len(picks) >= limit:
        raise UpdateRefused(f"these images would add more than {limit} rows to a bank of {len(bank)} "
                            f"({MAX_NEW_ROWS_SHARE:.0%}): they differ too much from what the model was trained on; "
                            f"retrain on the workstation with them in train/good")
    return np.asarray(picks, np.int64)


def _embed(inspector: Inspector, paths: list[Path]) -> list[tuple[np.ndarray, np.ndarray | None, tuple]]:
    out = []
    for p in paths:
        frame = load_image(p)
        emb = inspector.embed(frame)
        region = inspector.preprocessor.patch_region(frame.shape, inspector.patch_grid) if inspector.part_only else None
        patches, cells = region_patches(emb, region)
        out.append((patches, cells, frame.shape))
    return out


def nearest_after_update(patches: np.ndarray, old_nearest: tuple[np.ndarray, np.ndarray], added: ExactIndex | None,
                         offset: int, own: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each patch's exact nearest row of the updated bank (the old ``offset`` rows, then the added ones) from its
    nearest old row ``old_nearest`` (distances, ids) and a search of the added rows only: the old bank is
    searched once for the whole update. ``own``: added rows (ids in the updated bank) the patches may not
    match, for leave-one-out scores."""
    dist, ids = (np.array(a) for a in old_nearest)
    if added is None or (own is not None and own.size >= added.size):
        return dist, ids
    d, j = added.search(patches, k=1) if own is None else added.search(patches, k=1, exclude=own - offset)
    closer = d[:, 0] < dist
    dist[closer], ids[closer] = d[closer, 0], j[closer, 0] + offset
    return dist, ids


def _score(inspector, bank, index, exact, items) -> list[float]:
    """Image scores as the updated dir's runtime computes them (its index, refined exactly)."""
    return [score_patches(patches, inspector.patch_grid, index, bank, inspector.num_neighbours, cells,
                          exact if index.approximate else None, inspector.refine_top,
                          peak_sigma=inspector.peak_sigma).image_score
            for patches, cells, _ in items]


def update_model(model_dir: str | Path, out_dir: str | Path, good: list[str | Path],
                 defects: list[str | Path] | None = None, max_false_alarm: float | None = None) -> dict:
    """Write ``out_dir``: ``model_dir`` with the ``good`` images (files or folders) learnt; returns a report."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; an update never overwrites a model dir (keep the old "
                              f"one for rollback, choose a new name)")
    if out_dir.resolve() == model_dir.resolve():
        raise ValueError("the updated model dir must be a new dir beside the old one")
    good_paths = collect_images(good)
    if len(good_paths) < 2:
        raise ValueError(f"an update needs at least 2 good images (each is scored against the bank without "
                         f"itself), got {len(good_paths)}")
    defect_paths = collect_images(defects) if defects else []
    t0 = time.perf_counter()
    inspector = Inspector(model_dir, threads="auto")
    # a batch job, not a line: the bank-sized products below get every core
    apply_thread_plan(resolve_blas(dataclasses.replace(inspector.thread_plan, blas=0), exact_search=True))
    m = inspector.manifest
    bank = inspector.bank
    items = _embed(inspector, good_paths)
    new_patches = np.concatenate([p for p, _, _ in items])
    radius = covering_radius_estimate(bank)
    # the one search of the old bank: it decides the rows to add, and with a search of the added rows alone
    # gives every exact and leave-one-out score below
    old_d, old_i = ExactIndex(bank).search(new_patches, k=1)
    old_d, old_i = old_d[:, 0], old_i[:, 0]
    picks = greedy_additions(new_patches, bank, radius, int(MAX_NEW_ROWS_SHARE * len(bank)), nearest=old_d)
    new_bank = np.ascontiguousarray(np.concatenate([bank, new_patches[picks]]), np.float32)
    # which image each added row came from, for the leave-one-out scores
    owner = np.repeat(np.arange(len(items)), [len(p) for p, _, _ in items])[picks]
    added_rows = [len(bank) + np.flatnonzero(owner == k) for k in range(len(items))]
    starts = np.cumsum([0] + [len(p) for p, _, _ in items])
    added = ExactIndex(new_bank[len(bank):]) if len(picks) else None

    def old_nearest(k: int) -> tuple[np.ndarray, np.ndarray]:
        return old_d[starts[k]:starts[k + 1]], old_i[starts[k]:starts[k + 1]]

    exact = ExactIndex(new_bank)
    index_report, index = {"type": "exact"}, exact
    if m.index.type == "hnsw":
        block = m.get("index")
        hnsw = HnswIndex.build(new_bank, M=m.index.M, ef_construction=int(block.get("ef_construction", 200)),
                               ef=m.index.ef)
        # measured as the runtime searches: HNSW, then the top patches again exactly (score_patches)
        approx = [score_patches(p, inspector.patch_grid, hnsw, new_bank, inspector.num_neighbours, c, exact,
                                inspector.refine_top, peak_sigma=inspector.peak_sigma) for p, c, _ in items]
        truth = []
        for k, (p, c, _) in enumerate(items):
            d, i = nearest_after_update(p, old_nearest(k), added, len(bank))
            truth.append(dataclasses.replace(score_neighbours(p, d, i, inspector.patch_grid, exact, new_bank,
                                                              inspector.num_neighbours, c,
                                                              peak_sigma=inspector.peak_sigma),
                                             nearest=d, nearest_ids=i))
        recall = float(np.mean(np.concatenate([found_nearest(a.nearest_ids, a.nearest, t.nearest_ids, t.nearest)
                                               for a, t in zip(approx, truth)])))
        change = max(abs(a.image_score - t.image_score) / max(abs(t.image_score), 1e-12) for a, t in zip(approx, truth))
        measured = {"recall_at_1": recall, "image_score_max_rel_change": change, "n_images": len(items)}
        if recall >= MIN_RECALL and change <= MAX_SCORE_CHANGE:
            index, index_report = hnsw, {**block, "measured_after_update": measured}
        else:
            index_report = {"type": "exact", "measured_after_update": measured,
                            "chosen_by": f"update: the rebuilt HNSW index missed recall@1 >= {MIN_RECALL} or "
                                         f"image-score change <= {MAX_SCORE_CHANGE} on the new images"}

    loo = []
    for k, (p, c, _) in enumerate(items):
        d, i = nearest_after_update(p, old_nearest(k), added, len(bank), own=added_rows[k])
        loo.append(score_neighbours(p, d, i, inspector.patch_grid, exact, new_bank, inspector.num_neighbours, c,
                                    exclude=added_rows[k], peak_sigma=inspector.peak_sigma).image_score)
    old = dict(m.get("threshold"))
    target = float(max_false_alarm or old.get("target_false_alarm", 0.01))
    above = float(np.mean(np.asarray(loo) >= old["value"]))
    threshold = old
    if above > target:
        fresh = robust_good_threshold(loo, target)
        if fresh["value"] > old["value"]:
            threshold = {**fresh, "raised_from": old["value"], "computed_with": old.get("computed_with")}
    defect_scores = []
    if defect_paths:
        d_items = _embed(inspector, defect_paths)
        defect_scores = _score(inspector, new_bank, index, exact, d_items)
        passed = [p.name for p, s in zip(defect_paths, defect_scores) if not s >= threshold["value"]]
        if passed:
            raise UpdateRefused(f"after the update {len(passed)} of {len(defect_paths)} confirmed defects would pass "
                                f"(score below the threshold {threshold['value']:.4g}), e.g. {passed[0]}; nothing "
                                f"written. Review the good images given (a defect among them?)")

    parent_hash = hashlib.sha256((model_dir / MANIFEST_NAME).read_bytes()).hexdigest()
    report = {
        "parent": str(model_dir.resolve()), "parent_manifest_sha256": parent_hash,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "images_added": [p.name for p in good_paths], "rows_added": int(len(picks)),
        "bank_rows": [int(len(bank)), int(len(new_bank))], "covering_radius": round(radius, 6),
        "good_leave_one_out_scores": [round(s, 6) for s in loo],
        "share_above_old_threshold": round(above, 4),
        "defects_checked": len(defect_paths), "defect_scores": [round(s, 6) for s in defect_scores],
        "threshold": threshold, "index": index_report,
    }
    _write(model_dir, out_dir, inspector, new_bank, index, index_report, threshold, report)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report


def _write(model_dir: Path, out_dir: Path, inspector: Inspector, bank: np.ndarray, index, index_report: dict,
           threshold: dict, report: dict) -> None:
    m = inspector.manifest
    manifest = copy.deepcopy(m.raw)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for name in m.graph.files:
            shutil.copyfile(model_dir / name, tmp / name)
        dtype = m.memory_bank.dtype or "float32"
        stored = bank.astype(dtype)
        np.save(tmp / m.memory_bank.file, stored, allow_pickle=False)
        files = [*m.graph.files, m.memory_bank.file]
        bank_block = {k: v for k, v in manifest["memory_bank"].items() if k != "neighbours"}
        if m.scoring.num_neighbours > 1:     # the new rows change neighbourhoods: the table is made again
            table = extend_bank_neighbours(inspector.bank_neighbours, stored.astype(np.float32),
                                           len(inspector.bank), m.scoring.num_neighbours)
            np.save(tmp / NEIGHBOURS_FILE, table, allow_pickle=False)
            files.append(NEIGHBOURS_FILE)
            bank_block["neighbours"] = NEIGHBOURS_FILE
        if index_report.get("type") == "hnsw":
            index.save(tmp / index_report["file"])
            files.append(index_report["file"])
        manifest["memory_bank"] = {**bank_block, "size": int(len(bank)),
                                   "source": f"{bank_block.get('source', '')}; "
                                             f"{report['rows_added']} rows added by an update"}
        manifest["index"] = index_report
        manifest["threshold"] = threshold
        manifest["update"] = report
        manifest["files"] = files
        write_manifest(tmp, manifest)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    Inspector(out_dir)              # the new dir loads, verified, before anyone relies on it
