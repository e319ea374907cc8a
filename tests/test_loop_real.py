"""The screening loop on real data (bottle): train, inspect, review, apc-update, inspect again.

Good bottles under a bluer light (a white-balance change) are flagged NG (false alarms); a reviewer marks some of them as false
alarms and the flagged defects as confirmed. After apc-update the reviewed false alarms pass, every
defect is still caught, and the old model dir is untouched.
"""
import hashlib
import json

import cv2
import numpy as np
import pytest

from apc_edge.cli.inspect import main as inspect_main
from apc_edge.cli.review import main as review_main
from apc_edge.cli.update import main as update_main
from apc_edge.preprocess import load_image
from runlog import lines, verdicts


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def bottle_model(real_data, tmp_path_factory):
    from apc_edge.export.cli_export import main as export_main
    from apc_edge.export.cli_train import main as train_main

    data = real_data("bottle")
    tmp = tmp_path_factory.mktemp("loop")
    assert train_main([str(data), "--out", str(tmp / "run"), "--resize", "256", "256"]) == 0
    assert export_main([str(tmp / "run"), "--target", "openvino", "--index", "exact", "--out",
                        str(tmp / "model")]) == 0
    return data, tmp / "model"


def test_review_and_update_close_the_loop(bottle_model, tmp_path):
    data, model = bottle_model
    line = tmp_path / "line"
    line.mkdir()
    goods = sorted((data / "test" / "good").glob("*.png"))[:12]
    defects = sorted((data / "test" / "broken_large").glob("*.png"))[:6]
    def bluer(p):
        img = load_image(p)
        return cv2.add(img, np.full(img.shape, (80, 0, 0), np.uint8))                # BGR: a bluer light

    for p in goods:
        cv2.imwrite(str(line / f"good_{p.name}"), bluer(p))
    for p in defects:
        cv2.imwrite(str(line / f"defect_{p.name}"), bluer(p))
    before = digest(model)

    out1 = tmp_path / "out1"
    assert inspect_main([str(model), "--folder", str(line), "--out", str(out1), "-q"]) == 0
    recs = verdicts(lines(out1 / "verdicts.jsonl"))
    false_alarms = [r for r in recs if r["file"].startswith("good_") and r["verdict"] == "NG"]
    caught = [r for r in recs if r["file"].startswith("defect_") and r["verdict"] == "NG"]
    assert len(false_alarms) >= 8, "the good bottles under a bluer light should be false alarms of the old model"
    assert len(caught) == len(defects)
    reviewed = false_alarms[:6]
    for r in reviewed:
        assert review_main([str(out1), "--mark", r["frame"], "false_alarm"]) == 0
    for r in caught:
        assert review_main([str(out1), "--mark", r["frame"], "defect"]) == 0
    assert review_main([str(out1), "--export", str(tmp_path / "reviewed")]) == 0

    new = tmp_path / "model_v2"
    assert update_main([str(model), "--good", str(tmp_path / "reviewed" / "good"), "--defects",
                        str(tmp_path / "reviewed" / "defect"), "--out", str(new)]) == 0
    out2 = tmp_path / "out2"
    assert inspect_main([str(new), "--folder", str(line), "--out", str(out2), "-q"]) == 0
    after = {r["file"]: r for r in verdicts(lines(out2 / "verdicts.jsonl"))}
    assert all(after[r["file"]]["verdict"] == "OK" for r in reviewed)            # the false alarms now pass
    assert all(after[f"defect_{p.name}"]["verdict"] == "NG" for p in defects)    # every defect still caught
    originals = sorted((data / "test" / "broken_large").glob("*.png"))
    assert inspect_main([str(new), "--folder", str(originals[0].parent), "--out", str(tmp_path / "out3"),
                         "-q"]) == 0
    assert all(r["verdict"] == "NG" for r in verdicts(lines(tmp_path / "out3" / "verdicts.jsonl")))
    assert digest(model) == before                                               # the old dir is untouched
    update = json.loads((new / "manifest.json").read_text())["update"]
    assert update["images_added"] and update["rows_added"] > 0
