"""Pad mode scores only the part: training, export (INT8 guard, HNSW sweep) and runtime agree on it."""
import json

import numpy as np
import pytest

from apc_edge import Inspector
from apc_edge.index import ExactIndex
from apc_edge.preprocess import Preprocessor, load_image
from apc_edge.scoring import score_embedding

class CountingIndex(ExactIndex):
    """Exact search that remembers how many query rows the last per-frame search had."""

    def search(self, queries, k=1):
        if k == 1:
            self.last_queries = np.atleast_2d(queries).shape[0]
        return super().search(queries, k)


def test_runtime_scores_the_part_as_training_did(pad_run, synthetic_category, tmp_path):
    from apc_edge.export.model_export import ExportOptions, export_model

    info = json.loads((pad_run / "run.json").read_text())
    assert info["scoring"]["part_only"] is True
    out = tmp_path / "m"
    export_model(pad_run, out, options=ExportOptions(index="exact"))
    inspector = Inspector(out)
    assert inspector.part_only
    held = [synthetic_category / "train" / "good" / name for name in info["training"]["holdout_images"]]
    runtime = [inspector.check(load_image(p), with_map=False).raw_score for p in held]
    np.testing.assert_allclose(runtime, info["holdout_scores"], rtol=1e-3)

    counting = CountingIndex(inspector.bank)
    frame = load_image(held[0])
    result = Inspector(out, index=counting).check(frame)
    region = inspector.preprocessor.patch_region(frame.shape, inspector.patch_grid)
    assert counting.last_queries == region.sum() < region.size          # the canvas is not searched
    assert result.anomaly_map.shape == frame.shape[:2]


def test_int8_guard_and_hnsw_sweep_measure_the_part(pad_run, tmp_path):
    from apc_edge.export.model_export import ExportOptions, export_model

    out = tmp_path / "m8"
    export_model(pad_run, out, options=ExportOptions(precision="int8", index="hnsw", calibration_images=6))
    m = json.loads((out / "manifest.json").read_text())
    assert m["scoring"]["part_only"] is True and m["quantization"]["passed"]
    grid = tuple(m["patch_grid"])
    region = Preprocessor.from_dict(m["preprocess"]).patch_region((256, 256), grid)
    assert m["index"]["measurement"]["n_queries"] == m["index"]["measurement"]["n_images"] * region.sum()


def test_canvas_cells_extend_the_parts_edge_so_blur_keeps_border_defects():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(50, 8)).astype(np.float32)
    emb = rng.normal(size=(8, 4, 6)).astype(np.float32)
    region = np.zeros((4, 6), bool)
    region[1:3, 2:5] = True
    scores = score_embedding(emb, ExactIndex(bank), bank, 5, region=region)
    part = scores.patch_map[region]
    m = scores.patch_map
    assert np.all(m[0, 2:5] == m[1, 2:5]) and np.all(m[3, 2:5] == m[2, 2:5])     # rows above/below: edge row
    assert np.all(m[1:3, :2] == m[1:3, 2:3]) and np.all(m[1:3, 5:] == m[1:3, 4:5])  # columns left/right
    assert m[0, 0] == m[1, 2] and m[3, 5] == m[2, 4]                                # corners: corner cell
    ragged = region.copy()
    ragged[1, 2] = False                                   # not a rectangle: the rest holds the lowest distance
    r = score_embedding(emb, ExactIndex(bank), bank, 5, region=ragged).patch_map
    assert np.all(r[~ragged] == r[ragged].min())
    assert scores.max_patch_score == part.max()
    whole = score_embedding(emb, ExactIndex(bank), bank, 5)
    np.testing.assert_allclose(part, whole.patch_map[region], rtol=1e-6)
    with pytest.raises(ValueError, match="patch region"):
        score_embedding(emb, ExactIndex(bank), bank, 5, region=np.zeros((4, 6), bool))
