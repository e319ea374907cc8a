"""The HTML evaluation report: what it holds, and how it renders in a real headless browser."""
import csv
import json
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from apc_edge.calibration.cli_eval import main as eval_main


@pytest.fixture(scope="module")
def report_dir(model_dir_openvino, synthetic_category, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert eval_main([str(model_dir_openvino), str(synthetic_category), "--report", str(out / "r")]) == 0
    return out / "r"


def test_report_holds_the_numbers_a_quality_engineer_reads(report_dir, synthetic_category):
    html = (report_dir / "report.html").read_text()
    assert "data:image/png;base64," in html and "<img" in html and "src=\"http" not in html   # self-contained
    for words in ("Per defect type", "Confusion matrix at the threshold", "deployed threshold", "original | heatmap"):
        assert words in html
    metrics = json.loads((report_dir / "metrics.json").read_text())
    c = metrics["confusion_at_threshold"]
    assert c["tp"] + c["fn"] + c["fp"] + c["tn"] == metrics["n_test"]
    assert {r["type"] for r in metrics["per_defect_type"]} == {"scratch", "spot"}
    rows = list(csv.DictReader((report_dir / "scores.csv").open()))
    assert len(rows) == metrics["n_test"] and {"file", "label", "raw_score", "verdict"} == set(rows[0])
    assert sum(r["verdict"] == "NG" for r in rows) == c["tp"] + c["fp"]
    for png in ("histogram.png", "roc.png", "false_alarms.png", "misses.png"):
        img = cv2.imread(str(report_dir / png))
        assert img is not None and img.std() > 5, png            # drawn, not blank


def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (CI installs Debian's chromium): headless rendering not tested")
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1400,2400", (report_dir / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (2400, 1400)
    # the inlined plots were drawn into the page: many non-white pixels, and the histogram's colours
    assert (img < 200).any(axis=2).mean() > 0.05
    shutil.copy(shot, report_dir / "screenshot.png")              # kept for a person to look at
