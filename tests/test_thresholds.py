"""Threshold calibration: good-only and with anomalies, the apc-calibrate CLI, normalization and override."""
import json
import shutil

import numpy as np
import pytest

from apc_edge import Inspector
from apc_edge.calibration.cli_calibrate import main as calibrate_main
from apc_edge.calibration.thresholds import anomaly_threshold, good_only_threshold, normalization_range
from apc_edge.model_dir import load_manifest
from apc_edge.preprocess import load_image
from apc_edge.scoring import ScoreNormalizer


def test_good_only_threshold_reaches_the_target():
    good = np.linspace(1.0, 2.0, 200)
    block = good_only_threshold(good, 0.05)
    assert np.mean(good >= block["value"]) <= 0.05
    assert np.mean(good >= block["value"]) == block["achieved"]["false_alarm_rate"] == pytest.approx(0.05)
    assert block["method"] == "good_only_false_alarm" and block["resolution"] == pytest.approx(1 / 200)
    assert "note" not in block


def test_good_only_target_below_resolution_is_reported():
    good = np.linspace(1.0, 2.0, 21)
    block = good_only_threshold(good, 0.01)
    assert block["value"] > good.max() and block["achieved"]["false_alarm_rate"] == 0.0
    assert "below 1/21" in block["note"]
    with pytest.raises(ValueError, match="at least one held-out good"):
        good_only_threshold([], 0.01)


def test_anomaly_thresholds_f1_and_recall():
    good, bad = np.array([1.0, 1.2, 1.4, 1.6, 2.5]), np.array([1.5, 2.0, 3.0, 3.5])
    f1 = anomaly_threshold(good, bad)
    assert f1["method"] == "best_f1" and 0 < f1["f1"] <= 1
    r = anomaly_threshold(good, bad, target_recall=1.0)
    assert r["value"] == 1.5 and r["achieved"]["recall"] == 1.0
    assert r["achieved"]["false_alarm_rate"] == pytest.approx(0.4)
    assert r["norm_hi"] >= 3.5 and r["norm_lo"] <= 1.0
    with pytest.raises(ValueError, match="good and anomalous"):
        anomaly_threshold(good, [])


def test_normalization_puts_threshold_at_half_and_spans_the_scores():
    good, bad = [1.0, 1.5, 2.0], [4.0, 6.0]
    lo, hi = normalization_range(good, 2.5, bad)
    n = ScoreNormalizer(2.5, lo, hi)
    assert n(2.5) == pytest.approx(0.5)
    assert n(1.0) < 0.5 < n(4.0) and 0.0 <= n(1.0) and n(6.0) <= 1.0
    assert n(100.0) == 1.0 and n(-100.0) == 0.0
    lo, hi = normalization_range(good, 2.5)            # good only: symmetric around the threshold
    assert hi - 2.5 == pytest.approx(2.5 - lo)


@pytest.fixture
def model_copy(model_dir_onnx, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(model_dir_onnx, dst)
    return dst


def test_calibrate_cli_good_only(model_copy, synthetic_category, tmp_path, capsys):
    goods = synthetic_category / "test" / "good"
    rc = calibrate_main([str(model_copy), "--good", str(goods), "--max-false-alarm", "0.25",
                         "--json", str(tmp_path / "c.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "manifest threshold rewritten" in out and "false alarms" in out
    m = load_manifest(model_copy)                      # hashes still verify
    t = m["threshold"]
    assert t["method"] == "good_only_false_alarm" and t["target_false_alarm"] == 0.25
    assert t["images"]["held_out_good"] == len(m["training"]["holdout_images"]) and t["images"]["extra_good"] == 4
    scores = json.loads((tmp_path / "c.json").read_text())["good_scores"]
    assert np.mean(np.array(scores) >= t["value"]) <= 0.25 == t["target_false_alarm"]
    inspector = Inspector(model_copy)
    assert inspector.threshold == pytest.approx(t["value"])
    r = inspector.check(load_image(sorted(goods.iterdir())[0]))
    assert r.score == pytest.approx(float(inspector.normalize(r.raw_score)))
    override = 0.5 * inspector.threshold_limit                            # any value the model can reach
    assert Inspector(model_copy, threshold=override).threshold == override     # override beats calibration


def test_calibrate_cli_with_anomalies_reaches_target_recall(model_copy, synthetic_category, capsys):
    rc = calibrate_main([str(model_copy), "--anomalies", str(synthetic_category / "test" / "scratch"),
                         str(synthetic_category / "test" / "spot"), "--target-recall", "1.0"])
    assert rc == 0
    t = load_manifest(model_copy)["threshold"]
    assert t["method"] == "target_recall" and t["achieved"]["recall"] == 1.0
    inspector = Inspector(model_copy)
    for kind in ("scratch", "spot"):
        for p in sorted((synthetic_category / "test" / kind).iterdir()):
            r = inspector.check(load_image(p), with_map=False)
            assert r.is_anomalous and r.score >= 0.5
    assert "recall 1.0000" in capsys.readouterr().out


def test_calibrate_cli_dry_run_and_errors(model_copy, tmp_path, capsys):
    before = (model_copy / "manifest.json").read_bytes()
    assert calibrate_main([str(model_copy), "--dry-run"]) == 0
    assert (model_copy / "manifest.json").read_bytes() == before
    assert calibrate_main([str(model_copy), "--f1"]) == 2
    assert "need --anomalies" in capsys.readouterr().err
    assert calibrate_main([str(model_copy), "--anomalies", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert calibrate_main([str(model_copy), "--data", str(tmp_path)]) == 2
    assert "train/good" in capsys.readouterr().err
    assert calibrate_main([str(tmp_path / "nomodel")]) == 2
    assert (model_copy / "manifest.json").read_bytes() == before
