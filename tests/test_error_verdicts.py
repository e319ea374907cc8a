"""A frame that cannot be judged is an ERROR verdict, rejected, counted, and never a silent exit 0."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from apc_edge.cli.inspect import EXIT_CANNOT_JUDGE, main
from apc_edge.runtime.lane import MAX_CONSECUTIVE_ERRORS, error_kind
from runlog import lines


class NonFiniteScoreError(ValueError):
    """Stands for the ValueError subclass Inspector.check raises for a NaN/inf image score."""


@pytest.mark.parametrize("exc, kind", [
    (NonFiniteScoreError("image score is nan: the memory bank or the graph gives non-finite distances"), "score"),
    (ValueError("image score is inf"), "score"),
    (ValueError("anomaly score not finite (nan)"), "score"),
    (ValueError("frame is too small: 16x16 pixels, need at least 32 on each side"), "bad_frame"),
    (ValueError("frame dtype must be uint8, got float32"), "bad_frame"),
    (RuntimeError("cand error"), "inspect"),
])
def test_error_kind_tells_score_problems_from_bad_frames(exc, kind):
    assert error_kind(exc) == kind


@pytest.fixture
def tiny_frames(tmp_path):
    """Frames every model refuses (smaller than the 32-pixel minimum)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.full((16, 16, 3), 90 + 10 * i, np.uint8))
    return folder


def test_a_run_that_judges_no_frame_exits_3(model_dir_openvino, tiny_frames, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(model_dir_openvino), "--folder", str(tiny_frames), "--out", str(out), "-q"]) == EXIT_CANNOT_JUDGE
    stdout = capsys.readouterr().out
    assert "summary: 0 frames, 0 NG, 6 errors" in stdout and "no frame could be judged" in stdout
    recs = lines(out / "verdicts.jsonl")
    assert [r["verdict"] for r in recs] == ["ERROR"] * 6 and {r["error_kind"] for r in recs} == {"bad_frame"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cannot_judge"] and not summary["ok"] and summary["errors"] == 6


def test_a_folder_of_unreadable_files_exits_3(model_dir_openvino, tmp_path, capsys):
    folder = tmp_path / "junk"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_text("not an image")
    out = tmp_path / "out"
    assert main([str(model_dir_openvino), "--folder", str(folder), "--out", str(out), "-q"]) == EXIT_CANNOT_JUDGE
    assert "3 errors" in capsys.readouterr().out
    assert [r["error_kind"] for r in lines(out / "verdicts.jsonl")] == ["source"] * 3


def test_consecutive_errors_end_the_camera_lane_and_each_part_is_rejected(monkeypatch, model_dir_openvino,
                                                                          tiny_frames, tmp_path, capsys):
    pytest.importorskip("pypylon.pylon", reason="pypylon not installed: camera tests need its emulator")
    monkeypatch.setenv("PYLON_CAMEMU", "1")
    out = tmp_path / "out"
    rc = main([str(model_dir_openvino), "--camera", "--trigger", "software", "--pixel-format", "BGR8Packed",
               "--emu-images", str(tiny_frames), "--reject-line", "Line2", "--reject-pulse-ms", "5",
               "--out", str(out), "-q"])                              # no --max-frames: only the errors end it
    assert rc == EXIT_CANNOT_JUDGE
    recs = lines(out / "verdicts.jsonl")
    judged, last = recs[:-1], recs[-1]
    assert len(judged) == MAX_CONSECUTIVE_ERRORS and [r["frame_id"] for r in judged] == list(range(len(judged)))
    assert all(r["verdict"] == "ERROR" and r["error_kind"] == "bad_frame" and r["rejected"] is True for r in judged)
    assert last["error_kind"] == "fatal" and f"{MAX_CONSECUTIVE_ERRORS} frames in a row" in last["error"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lanes"][0]["end_reason"] == "consecutive errors" and summary["cannot_judge"]
    assert "could not be judged" in capsys.readouterr().out


def test_a_good_frame_resets_the_error_count(model_dir_openvino, frames_dir, tiny_frames, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i in range(MAX_CONSECUTIVE_ERRORS + 5):                      # more bad frames than the limit in all,
        src = tiny_frames / "00.png" if i % 10 else sorted(frames_dir.glob("*.png"))[0]   # never 20 in a row
        (mixed / f"{i:03d}.png").write_bytes(src.read_bytes())
    out = tmp_path / "out"
    assert main([str(model_dir_openvino), "--folder", str(mixed), "--out", str(out), "-q"]) == 0
    kinds = [r["verdict"] for r in lines(out / "verdicts.jsonl")]
    assert kinds.count("ERROR") == MAX_CONSECUTIVE_ERRORS + 2 and kinds.count("ERROR") + kinds.count("OK") == 25
