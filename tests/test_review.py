"""apc-review: labels for the kept frames of a run, and their export as plain folders."""
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from apc_edge.cli.inspect import main as inspect_main
from apc_edge.cli.review import main as review_main
from apc_edge.review import kept_frames, read_labels


@pytest.fixture
def run_out(model_dir_openvino, frames_dir, tmp_path):
    out = tmp_path / "out"
    assert inspect_main([str(model_dir_openvino), "--folder", str(frames_dir), "--out", str(out), "-q",
                         "--ok-frames-every", "2"]) == 0
    return out


def test_mark_list_and_export(run_out, tmp_path, capsys):
    frames = kept_frames(run_out)
    ng = [f for f in frames if f.verdict == "NG"]
    ok = [f for f in frames if f.verdict == "OK"]
    assert len(ng) >= 2 and ok
    first, second = Path(ng[0].frame).name, Path(ng[1].frame).name
    assert review_main([str(run_out), "--mark", first, "false_alarm", "--note", "dust"]) == 0
    shape = cv2.imread(str(run_out / ng[1].frame), cv2.IMREAD_UNCHANGED).shape[:2]
    mask = np.zeros(shape, np.uint8)
    mask[10:30, 10:30] = 255
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    assert review_main([str(run_out), "--mark", second, "defect", "--mask", str(tmp_path / "m.png")]) == 0
    assert review_main([str(run_out), "--mark", ok[0].frame, "good"]) == 0
    labels = read_labels(run_out)
    assert {v["label"] for v in labels.values()} == {"false_alarm", "defect", "good"}
    with (run_out / "review" / "labels.csv").open() as fh:
        assert next(csv.reader(fh)) == ["frame", "label", "mask", "note", "reviewed_at"]
    capsys.readouterr()
    assert review_main([str(run_out), "--json", str(tmp_path / "list.json")]) == 0
    listing = capsys.readouterr().out
    listed = json.loads((tmp_path / "list.json").read_text())
    assert len(listed) == len(frames) and sum(r["label"] is not None for r in listed) == 3
    assert "false_alarm" in listing and f"{len(frames)} kept frames, 3 reviewed" in listing
    assert review_main([str(run_out), "--export", str(tmp_path / "rev")]) == 0
    good = sorted(p.name for p in (tmp_path / "rev" / "good").iterdir())
    assert len(good) == 2 and (tmp_path / "rev" / "defect" / second.replace(".frame.png", ".png")).is_file()
    saved = cv2.imread(str(tmp_path / "rev" / "defect_masks" / second.replace(".frame.png", ".png")), 0)
    assert np.array_equal(saved, mask)
    assert review_main([str(run_out), "--mark", first, "clear"]) == 0
    assert len(read_labels(run_out)) == 2


@pytest.mark.parametrize("args, message", [
    (["--mark", "nope.png", "defect"], "not a kept frame"),
    (["--mark", "x", "maybe"], "--mark LABEL must be one of"),
    (["--mask", "m.png"], "--mask and --note go with --mark"),
    (["--export", "d"], "nothing reviewed"),
])
def test_refusals(run_out, args, message, capsys):
    assert review_main([str(run_out), *args]) == 2
    assert message in capsys.readouterr().err


def test_not_a_run_folder(tmp_path, capsys):
    assert review_main([str(tmp_path)]) == 2
    assert "not an apc-inspect run folder" in capsys.readouterr().err


def test_a_mask_must_fit_its_frame(run_out, tmp_path, capsys):
    ng = [f for f in kept_frames(run_out) if f.verdict == "NG"][0]
    cv2.imwrite(str(tmp_path / "small.png"), np.full((8, 8), 255, np.uint8))
    assert review_main([str(run_out), "--mark", ng.frame, "defect", "--mask", str(tmp_path / "small.png")]) == 2
    assert "the frame" in capsys.readouterr().err
