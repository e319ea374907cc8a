"""apc-eval --scores-csv and apc-compare: per-image scores and a paired bootstrap of the AUROC difference."""
import csv

import numpy as np
import pytest

from apc_edge.calibration import metrics
from apc_edge.calibration.cli_eval import main as eval_main
from apc_edge.calibration.compare import main as compare_main, paired_auroc_difference, read_scores, write_scores


def test_paired_interval_brackets_the_difference_and_excludes_zero_for_a_clear_win():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(100), np.ones(100)].astype(bool)
    strong = np.where(y, rng.normal(2, 1, 200), rng.normal(0, 1, 200))
    weak = strong + rng.normal(0, 2, 200)
    r = paired_auroc_difference(y, strong, weak, resamples=500)
    assert r["difference"] == pytest.approx(metrics.auroc(y, strong) - metrics.auroc(y, weak))
    assert r["low"] <= r["difference"] <= r["high"] and r["low"] > 0
    same = paired_auroc_difference(y, strong, strong, resamples=200)
    assert same["low"] == same["high"] == 0.0


def test_eval_writes_scores_that_compare_reads(model_dir_openvino, synthetic_category, tmp_path, capsys):
    out = tmp_path / "s.csv"
    assert eval_main([str(model_dir_openvino), str(synthetic_category), "--scores-csv", str(out)]) == 0
    rows = list(csv.DictReader(open(out)))
    n_test = sum(1 for _ in (synthetic_category / "test").rglob("*.png"))
    assert len(rows) == n_test and {r["verdict"] for r in rows} <= {"OK", "NG"}
    assert all(r["image"].startswith("test/") for r in rows)
    scores = read_scores(out)
    flipped = tmp_path / "flipped.csv"
    write_scores(flipped, [{"image": k, "label": v[0], "raw_score": -v[1]} for k, v in scores.items()])
    capsys.readouterr()
    assert compare_main([str(out), str(flipped), "--resamples", "200"]) == 0
    line = capsys.readouterr().out
    assert "A - B +" in line and f"{len(scores)} images" in line


def test_compare_refuses_files_that_do_not_match(tmp_path, capsys):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    write_scores(a, [{"image": "x.png", "label": 1, "raw_score": 1.0}, {"image": "y.png", "label": 0, "raw_score": 0.}])
    write_scores(b, [{"image": "x.png", "label": 0, "raw_score": 1.0}, {"image": "y.png", "label": 0, "raw_score": 0.}])
    assert compare_main([str(a), str(b)]) == 2
    assert "disagree on the label" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("name,score\nx,1\n")
    assert compare_main([str(a), str(tmp_path / "bad.csv")]) == 2
