"""Every command on every preprocessing mode: a stretch model and a pad-mode model through apc-eval
--report, apc-calibrate, apc-bench --folder and apc-inspect --folder."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from apc_edge import Inspector
from apc_edge.calibration.cli_calibrate import main as calibrate_main
from apc_edge.calibration.cli_eval import main as eval_main
from apc_edge.calibration.evaluate import evaluate
from apc_edge.calibration.report import frame_map
from apc_edge.cli.bench import main as bench_main
from apc_edge.cli.inspect import main as inspect_main
from apc_edge.preprocess import Preprocessor, load_image
from runlog import lines, overlay_files, verdicts

MODES = ["stretch", "pad"]



@pytest.fixture(params=MODES)
def model(request, model_dir_openvino, model_dir_pad):
    model_dir = {"stretch": model_dir_openvino, "pad": model_dir_pad}[request.param]
    assert Inspector(model_dir).preprocessor.mode == request.param
    return model_dir


def test_eval_with_report(model, synthetic_category, tmp_path):
    report = tmp_path / "report"
    assert eval_main([str(model), str(synthetic_category), "--json", str(tmp_path / "m.json"),
                      "--report", str(report)]) == 0
    for name in ("false_alarms.png", "misses.png"):            # original | overlay | ground truth, per image
        rows = cv2.imread(str(report / name))
        assert rows is not None and rows.shape[1] > 2 * rows.shape[0] // 6
    assert "original | heatmap overlay" in (report / "report.html").read_text()
    assert json.loads((tmp_path / "m.json").read_text())["n_test"] == 12


def test_report_maps_land_on_the_frame_as_check_put_them(model, synthetic_category):
    """The report brings evaluate's model-input maps back to the frame: equal to check()'s own frame map
    up to the resampling there and back."""
    _, scored, inspector = evaluate(model, synthetic_category)
    s = max(scored, key=lambda s: s.raw_score)
    frame = load_image(s.sample.path)
    back = frame_map(inspector.preprocessor, s.input_map, frame.shape)
    direct = inspector.check(frame).anomaly_map
    assert back.shape == direct.shape == frame.shape[:2]
    assert abs(float(back.max()) - float(direct.max())) <= 0.1 * float(direct.max())
    # the hottest pixel of one is hot in the other
    y, x = divmod(int(back.argmax()), back.shape[1])
    assert direct[y, x] >= 0.5 * float(direct.max())


def test_calibrate(model, synthetic_category, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    assert calibrate_main([str(copy), "--good", str(synthetic_category / "test" / "good"),
                           "--max-false-alarm", "0.25"]) == 0
    assert Inspector(copy).manifest["threshold"]["method"] == "good_only_false_alarm"


def test_bench_folder(model, synthetic_category, tmp_path):
    assert bench_main([str(model), "--frames", "2", "--warmup", "0", "--no-throughput", "--folder",
                       str(synthetic_category / "test" / "spot"), "--json", str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["frames"]["frame_shape"] == [256, 256, 3]


def test_inspect_folder(model, frames_dir, tmp_path):
    out = tmp_path / "out"
    assert inspect_main([str(model), "--folder", str(frames_dir), "--threshold", "1e-6", "--out", str(out),
                         "-q", "--min-free-mb", "0"]) == 0
    recs = lines(out / "verdicts.jsonl")
    assert len(recs) == 6 and verdicts(recs) == recs and all(r["verdict"] == "NG" for r in recs)
    pngs = sorted(overlay_files(out))
    assert len(pngs) == 6 and all(cv2.imread(str(p)).shape == (256, 256, 3) for p in pngs)


def test_frame_map_on_a_wide_pad_canvas():
    """The shape that crashed apc-eval --report: the part sits right of its own width on the canvas."""
    pre = Preprocessor(resize=(64, 256), mode="pad", scale=0.25)
    full = np.zeros((128, 128), np.float32)
    full[32:64, 64:96] = 1.0
    grid = pre.to_input_grid(full)
    assert pre.placement(full.shape)[1] >= grid.shape[1]           # left offset beyond the grid: the old crash
    back = frame_map(pre, grid, full.shape)
    assert back.shape == full.shape and back[48, 80] == pytest.approx(1.0) and back[100, 20] == 0.0
