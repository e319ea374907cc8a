"""apc-inspect end to end on pylon's camera emulator, folders and subprocesses (no mocks).

Emulated cameras (``PYLON_CAMEMU``) replay image files the tests write, with a
software trigger, so every frame is known; device removal is the emulator's
``FirePnPCallback`` and failed buffers its ``ForceFailedBuffer`` command. Tests
assert behaviour (every frame judged, every line intact, counts), never timing.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from apc_edge import Inspector
from apc_edge.cli.inspect import build_parser, build_specs, main
from apc_edge.runtime import InspectRun, LatencyHistogram, VerdictLog
from apc_edge.runtime.config import ConfigError
from runlog import lines, overlay_files, verdicts

pytest.importorskip("pypylon.pylon", reason="pypylon not installed: camera tests need its emulator")

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "apc_edge.cli.inspect"]
CAM0, CAM1 = "0815-0000", "0815-0001"



# -- helpers -----------------------------------------------------------------------

@pytest.fixture
def emu(monkeypatch):
    monkeypatch.setenv("PYLON_CAMEMU", "2")
    return CAM0, CAM1


def camera_args(model, folder, out, *extra, serial=CAM0):
    return [str(model), "--camera", serial, "--trigger", "software", "--pixel-format", "BGR8Packed",
            "--emu-images", str(folder), "--out", str(out), "-q", *extra]


def expected_raw_scores(model, folder) -> list[float]:
    inspector = Inspector(model)
    return [inspector.check(cv2.imread(str(f), cv2.IMREAD_COLOR)).raw_score for f in sorted(folder.glob("*.png"))]


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        assert proc.poll() is None, f"apc-inspect ended early: {proc.communicate()}"
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"{path} did not reach {n} lines")


def start_cli(args, env_extra=None) -> subprocess.Popen:
    env = dict(os.environ, PYLON_CAMEMU="2", **(env_extra or {}))
    return subprocess.Popen(CLI + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)


# -- camera runs -----------------------------------------------------------------

def test_camera_software_trigger_every_frame_judged(emu, model_dir_openvino, frames_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(camera_args(model_dir_openvino, frames_dir, out, "--max-frames", "8",
                            "--reject-line", "Line2", "--reject-pulse-ms", "5")) == 0
    stdout = capsys.readouterr().out
    assert "summary: 8 frames" in stdout and "stopped by max frames" in stdout
    recs = lines(out / "verdicts.jsonl")
    assert len(recs) == 8 and recs == verdicts(recs)
    assert [r["frame_id"] for r in recs] == list(range(8))
    assert {r["source"] for r in recs} == {CAM0} and all(r["skipped_before"] == 0 for r in recs)
    # the emulator replays the files in order and pixel-exact: scores equal a direct check of each file
    expected = expected_raw_scores(model_dir_openvino, frames_dir)
    assert [r["raw_score"] for r in recs] == pytest.approx([expected[i % 6] for i in range(8)], rel=1e-4)
    ng = [r for r in recs if r["verdict"] == "NG"]
    assert ng, "the spot images should be NG"
    assert all(r["rejected"] is True for r in ng) and all("rejected" not in r for r in recs if r not in ng)
    assert sorted(p.relative_to(out).as_posix() for p in overlay_files(out)) == sorted(r["overlay"] for r in ng)
    assert all(cv2.imread(str(out / r["overlay"])).shape == (256, 256, 3) for r in ng)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["frames"], summary["ng"], summary["errors"], summary["dropped"]) == (8, len(ng), 0, 0)
    assert summary["lanes"][0]["ng_images"] == len(ng) and summary["ok"]
    assert summary["lanes"][0]["overlay_priority"] == "background"      # a live source: checks come first

    # a second run appends to the same log; the first run's lines stay as they were
    assert main(camera_args(model_dir_openvino, frames_dir, out, "--max-frames", "2")) == 0
    again = lines(out / "verdicts.jsonl")
    assert again[:8] == recs and len(again) == 10 and again[8]["run"] != recs[0]["run"]


def test_free_run_latest_wins_counts_gaps(emu, model_dir_openvino, frames_dir, tmp_path):
    out = tmp_path / "out"
    args = [str(model_dir_openvino), "--camera", "--pixel-format", "BGR8Packed", "--emu-images", str(frames_dir),
            "--out", str(out), "--max-frames", "4", "-q"]
    assert main(args) == 0
    recs = lines(out / "verdicts.jsonl")
    assert len(recs) == 4 and recs == verdicts(recs)
    ids = [r["frame_id"] for r in recs]
    assert ids == sorted(set(ids))
    summary = json.loads((out / "summary.json").read_text())
    # every frame the camera made but the model did not see is counted, wherever it was dropped
    assert summary["dropped"] == sum(r["skipped_before"] for r in recs) == ids[-1] + 1 - 4
    lane = summary["lanes"][0]
    # gaps seen by the log <= all drops (frames replaced after the last verdict leave no gap)
    assert lane["dropped"] <= lane["source_skipped"] + lane["pipeline_dropped"]


def test_failed_buffers_are_counted_and_survived(emu, model_dir_openvino, frames_dir, tmp_path):
    out = tmp_path / "out"
    assert main(camera_args(model_dir_openvino, frames_dir, out, "--max-frames", "4",
                            "--node", "ForceFailedBufferCount=2", "--node", "ForceFailedBuffer")) == 0
    recs = lines(out / "verdicts.jsonl")
    errors = [r for r in recs if r["verdict"] == "ERROR"]
    assert len(errors) == 2 and all(r["error_kind"] == "source" and "failed grab" in r["error"] for r in errors)
    judged = verdicts(recs)
    assert [r["frame_id"] for r in judged] == [2, 3, 4, 5]
    assert [r["skipped_before"] for r in judged] == [2, 0, 0, 0]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["frames"], summary["failed_buffers"], summary["dropped"], summary["errors"]) == (4, 2, 2, 2)


def test_reconnect_during_inspect_keeps_going(emu, model_dir_openvino, frames_dir, tmp_path):
    out = tmp_path / "out"
    run, thread, result = run_in_thread(camera_args(model_dir_openvino, frames_dir, out, "--max-frames", "10"))
    log_path, lane = out / "verdicts.jsonl", run.lanes[0]
    deadline = time.monotonic() + 60
    while (not log_path.exists() or log_path.read_bytes().count(b"\n") < 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    with lane.source.node_lock:
        lane.source.node_map.GetNode("FirePnPCallback").Execute()     # pylon now reports the device removed
    thread.join(120)
    assert not thread.is_alive()
    recs = lines(log_path)
    judged = verdicts(recs)
    assert len(judged) == 10 and result["frames"] == 10 and result["ok"]
    assert result["reconnects"] == 1
    events = [r["error"] for r in recs if r["verdict"] == "ERROR"]
    assert any("lost" in e for e in events) and any("reconnected" in e for e in events)
    ids = [r["frame_id"] for r in judged]
    assert ids == sorted(set(ids))


def run_in_thread(args: list[str]):
    """Open an apc-inspect run in this process and run it in a thread (so the test can reach the camera)."""
    parsed = build_parser().parse_args(args)
    run = InspectRun(build_specs(parsed), parsed.out, max_frames=parsed.max_frames)
    run.open()
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(run.run()))
    thread.start()
    return run, thread, result


def test_camera_gone_for_good_ends_with_a_named_error(emu, monkeypatch, model_dir_openvino, frames_dir, tmp_path):
    out = tmp_path / "out"
    run, thread, result = run_in_thread(camera_args(model_dir_openvino, frames_dir, out,
                                                    "--reconnect-max-wait", "0.5"))
    log_path = out / "verdicts.jsonl"
    deadline = time.monotonic() + 60
    while (not log_path.exists() or log_path.read_bytes().count(b"\n") < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    monkeypatch.setenv("PYLON_CAMEMU", "0")                    # the camera does not come back
    with run.lanes[0].source.node_lock:
        run.lanes[0].source.node_map.GetNode("FirePnPCallback").Execute()
    thread.join(60)
    assert not thread.is_alive() and not result["ok"] and result["stopped_by"] == "error"
    assert "not back within 0.5 s" in result["lanes"][0]["error"]
    last = lines(log_path)[-1]
    assert last["error_kind"] == "fatal" and f"camera {CAM0} lost" in last["error"]


def test_two_cameras_each_with_its_model(emu, model_dir_openvino, model_dir_onnx, frames_dir, tmp_path):
    other = tmp_path / "other_frames"
    other.mkdir()
    for f in sorted(frames_dir.glob("*.png"))[3:]:
        shutil.copy(f, other / f.name)
    config = tmp_path / "line.json"
    config.write_text(json.dumps({
        "defaults": {"trigger": "software", "pixel_format": "BGR8Packed"},
        "cameras": [{"serial": CAM0, "model": str(model_dir_openvino), "emu_images": str(frames_dir)},
                    {"serial": CAM1, "model": str(model_dir_onnx), "emu_images": "other_frames"}]}))
    out = tmp_path / "out"
    assert main(["--config", str(config), "--out", str(out), "--max-frames", "4", "-q"]) == 0
    a, b = lines(out / CAM0 / "verdicts.jsonl"), lines(out / CAM1 / "verdicts.jsonl")
    assert len(a) == len(b) == 4
    assert {r["source"] for r in a} == {CAM0} and {r["source"] for r in b} == {CAM1}
    assert [r["raw_score"] for r in a] == pytest.approx(expected_raw_scores(model_dir_openvino, frames_dir)[:4],
                                                        rel=1e-4)
    exp_b = expected_raw_scores(model_dir_onnx, other)
    assert [r["raw_score"] for r in b] == pytest.approx([exp_b[i % 3] for i in range(4)], rel=1e-4)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 8 and [lane["name"] for lane in summary["lanes"]] == [CAM0, CAM1]


def test_cli_camera_equals_model_form():
    args = build_parser().parse_args(["--camera", f"{CAM0}=models/a", "--camera", f"{CAM1}=models/b",
                                      "--trigger", "hardware", "--exposure-us", "800", "--node", "Gamma=1.2"])
    specs = build_specs(args)
    assert [(s.camera.serial, s.model_dir.as_posix(), s.camera.trigger) for s in specs] == [
        (CAM0, "models/a", "hardware"), (CAM1, "models/b", "hardware")]
    assert specs[0].camera.exposure_us == 800 and specs[1].camera.extra == {"Gamma": "1.2"}
    assert specs[0].camera.reconnect_max_wait_s is None          # a line keeps waiting for its camera


# -- folders and bad frames -----------------------------------------------------

def test_folder_bad_frames_logged_and_loop_goes_on(model_dir_openvino, frames_dir, tmp_path, capsys):
    folder = tmp_path / "frames"
    shutil.copytree(frames_dir, folder)
    cv2.imwrite(str(folder / "02a_tiny.png"), np.full((10, 10, 3), 128, np.uint8))           # too small
    (folder / "02b_corrupt.png").write_bytes(b"not a png at all")                              # undecodable
    cv2.imwrite(str(folder / "02c_deep.png"), np.full((64, 64, 3), (40000, 20000, 9000), np.uint16))  # 16-bit
    cv2.imwrite(str(folder / "02d_mono.png"), np.full((64, 64), 90, np.uint8))    # mono, for a colour model
    out = tmp_path / "out"
    assert main([str(model_dir_openvino), "--folder", str(folder), "--out", str(out), "-q"]) == 0
    assert "summary: 7 frames" in capsys.readouterr().out
    recs = lines(out / "verdicts.jsonl")
    bad = [r for r in recs if r.get("error_kind") == "bad_frame"]
    assert [r["file"] for r in bad] == ["02a_tiny.png", "02d_mono.png"] and "too small" in bad[0]["error"]
    assert "trained on colour images" in bad[1]["error"] and bad[1]["verdict"] != "OK"
    unreadable = [r for r in recs if r.get("error_kind") == "source"]
    assert len(unreadable) == 1 and "02b_corrupt.png" in unreadable[0]["error"]
    judged = verdicts(recs)
    assert [r["file"] for r in judged] == ["00_good.png", "01_good.png", "02_good.png", "02c_deep.png",
                                           "03_spot.png", "04_spot.png", "05_spot.png"]
    assert judged[3]["skipped_before"] == 1                   # the undecodable file before it
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["frames"], summary["errors"], summary["dropped"]) == (7, 3, 1)
    assert summary["stopped_by"] == "end of stream"


def test_every_frame_ng_with_low_threshold_writes_every_overlay(model_dir_openvino, frames_dir, tmp_path):
    out = tmp_path / "out"
    assert main([str(model_dir_openvino), "--folder", str(frames_dir), "--threshold", "1e-6", "--out", str(out),
                 "-q", "--ng-images-max", "4"]) == 0
    recs = lines(out / "verdicts.jsonl")
    assert [r["verdict"] for r in recs] == ["NG"] * 6 and all(r["threshold"] == pytest.approx(1e-6) for r in recs)
    assert len(list(overlay_files(out))) == 4 == sum("overlay" in r for r in recs)
    assert json.loads((out / "summary.json").read_text())["lanes"][0]["overlay_priority"] == "normal"   # a replay


# -- process-level behaviour: kill -9, signals ----------------------------------------

def test_verdict_log_survives_kill_9(model_dir_openvino, frames_dir, tmp_path):
    out = tmp_path / "out"
    proc = start_cli(camera_args(model_dir_openvino, frames_dir, out, "--threshold", "1e-6"))   # every frame NG
    wait_for_lines(out / "verdicts.jsonl", 5, proc)
    proc.kill()                                              # SIGKILL: no handler, no flush, no summary
    proc.wait(30)
    recs = lines(out / "verdicts.jsonl")                     # every line parses, none is partial
    assert len(recs) >= 5 and [r["frame_id"] for r in recs] == list(range(len(recs)))
    assert not (out / "summary.json").exists()
    pngs = sorted(p.relative_to(out).as_posix() for p in overlay_files(out))
    overlays = [r["overlay"] for r in recs]
    # an overlay is written after its verdict line: every PNG has its line, at most the queued ones lack a PNG
    from apc_edge.runtime.overlay_writer import QUEUE_DEPTH
    assert set(pngs) <= set(overlays) and len(overlays) - len(pngs) <= QUEUE_DEPTH + 1
    assert pngs == overlays[:len(pngs)]
    assert all(cv2.imread(str(out / p)) is not None for p in pngs)        # no half-written PNG

    # restarting on the same folder appends; nothing written before the kill is lost
    proc = start_cli(camera_args(model_dir_openvino, frames_dir, out, "--max-frames", "2"))
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert lines(out / "verdicts.jsonl")[:len(recs)] == recs
    assert len(lines(out / "verdicts.jsonl")) == len(recs) + 2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_with_summary(sig, model_dir_openvino, frames_dir, tmp_path):
    out = tmp_path / "out"
    if sig == signal.SIGINT:
        proc = start_cli(camera_args(model_dir_openvino, frames_dir, out))
    else:
        proc = start_cli([model_dir_openvino, "--folder", frames_dir, "--loop", "--out", out, "-q"])
    wait_for_lines(out / "verdicts.jsonl", 3, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert f"stopped by {sig.name}" in stdout and "summary:" in stdout
    recs = lines(out / "verdicts.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == sig.name and summary["frames"] == len(recs) >= 3
    lane = summary["lanes"][0]
    assert lane["grabbed"] == lane["frames"] and lane["pipeline_dropped"] == 0   # none left unjudged


# -- setup errors: clear message, exit code 2 -------------------------------------

def test_setup_errors_are_named(monkeypatch, model_dir_openvino, frames_dir, tmp_path, capsys):
    monkeypatch.setenv("PYLON_CAMEMU", "0")
    assert main([str(model_dir_openvino), "--camera", "--out", str(tmp_path / "o")]) == 2
    assert "no Basler camera found" in capsys.readouterr().err
    assert main([str(tmp_path / "nomodel"), "--folder", str(frames_dir), "--out", str(tmp_path / "o")]) == 2
    assert "model dir not found" in capsys.readouterr().err
    assert main([str(model_dir_openvino), "--folder", str(frames_dir), "--reject-line", "Line2"]) == 2
    assert "--reject-line applies to --camera only" in capsys.readouterr().err
    assert main([str(model_dir_openvino), "--folder", str(frames_dir), "--video", "x.avi"]) == 2
    assert "exactly one frame source" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"cameras": [{"serial": CAM0, "model": "m", "exposure": 5}]}))
    assert main(["--config", str(bad)]) == 2
    assert "unknown key(s) ['exposure']" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="name each one by serial"):
        build_specs(build_parser().parse_args(["m", "--camera", "--camera", CAM1]))
    # a mistyped emulator folder is named at start instead of failing every grab
    out = tmp_path / "emu_out"
    assert main(camera_args(model_dir_openvino, tmp_path / "no_such_frames", out)) == 2
    assert "emulator images:" in capsys.readouterr().err and not (out / "verdicts.jsonl").exists()


# -- building blocks ---------------------------------------------------------------

def test_verdict_log_moves_a_partial_last_line_aside(tmp_path):
    path = tmp_path / "verdicts.jsonl"
    path.write_bytes(b'{"frame_id": 0}\n{"frame_id": 1}\n{"frame_id": 2, "verd')   # e.g. a power loss
    with VerdictLog(path) as vlog:
        vlog.append({"frame_id": 0, "verdict": "OK", "score": float("nan")})
    assert lines(path) == [{"frame_id": 0}, {"frame_id": 1}, {"frame_id": 0, "verdict": "OK", "score": None}]
    assert vlog.recovered_tail.read_bytes() == b'{"frame_id": 2, "verd'


def test_latency_histogram_percentiles():
    h = LatencyHistogram()
    for ms in range(1, 1001):
        h.add(float(ms))
    assert h.percentile(50) == pytest.approx(500, rel=0.02) and h.percentile(95) == pytest.approx(950, rel=0.02)
    assert h.summary()["max"] == 1000 and LatencyHistogram().summary()["p50"] is None


def test_run_rss_is_the_current_resident_memory_and_follows_an_allocation():
    from apc_edge.runtime import rss_mb
    from apc_edge.sysinfo import resident_mb

    before = rss_mb()
    assert before == pytest.approx(resident_mb()["rss"], abs=5)
    block = np.ones(64 * 2**20, np.uint8)      # 64 MB, touched
    assert rss_mb() - before > 50
    del block


def test_camera_loop_example_runs_on_the_emulator(model_dir_openvino, frames_dir):
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "camera_loop.py"), str(model_dir_openvino),
                           "--folder", str(frames_dir), "--frames", "3"], capture_output=True, text=True,
                          env=dict(os.environ, PYLON_CAMEMU="1"), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("frame ") == 3 and "3 frames" in proc.stdout


def test_runtime_cli_imports_without_torch():
    code = ("import sys, importlib.abc\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch' or name.startswith('torch.'):\n"
            "            raise ImportError('torch is blocked')\n"
            "sys.meta_path.insert(0, Block())\n"
            "import apc_edge.cli.inspect, apc_edge.runtime, apc_edge.runtime.config\n"
            "assert 'torch' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_frames_over_the_pixel_limit_get_error_verdicts(model_dir_openvino, frames_dir, tmp_path):
    out = tmp_path / "out"
    assert main([str(model_dir_openvino), "--folder", str(frames_dir), "--out", str(out), "-q",
                 "--max-frame-pixels", "4096"]) == 3          # the 256x256 frames are over 64x64: nothing judged
    recs = lines(out / "verdicts.jsonl")
    assert len(recs) == 6 and all(r["verdict"] == "ERROR" and "too large" in r["error"] for r in recs)


def test_max_frame_pixels_is_validated(model_dir_openvino, frames_dir, capsys):
    assert main([str(model_dir_openvino), "--folder", str(frames_dir), "--max-frame-pixels", "10"]) == 2
    assert "--max-frame-pixels" in capsys.readouterr().err


def test_ng_frames_are_kept_lossless_beside_their_overlays(model_dir_openvino, frames_dir, tmp_path):
    """A reviewer gets the original of every NG frame, pixel for pixel, and every N-th OK frame; the verdict
    line names both files."""
    out = tmp_path / "out"
    assert main([str(model_dir_openvino), "--folder", str(frames_dir), "--out", str(out), "-q",
                 "--ok-frames-every", "1"]) == 0
    recs = verdicts(lines(out / "verdicts.jsonl"))
    ng = [r for r in recs if r["verdict"] == "NG"]
    ok = [r for r in recs if r["verdict"] == "OK"]
    assert ng and ok
    for r in ng:
        assert r["frame"].startswith("ng/") and r["frame"].endswith(".frame.png") and r["overlay"].startswith("ng/")
        saved = cv2.imread(str(out / r["frame"]), cv2.IMREAD_UNCHANGED)
        original = cv2.imread(str(frames_dir / r["file"]), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(saved, original)
        assert (out / r["overlay"]).is_file()
    assert all(r["frame"].startswith("ok/") and (out / r["frame"]).is_file() and "overlay" not in r for r in ok)
    summary = json.loads((out / "summary.json").read_text())
    overlays = summary["lanes"][0]["overlays"]
    assert overlays["written"] == len(ng) and overlays["frames_written"] == len(ng) + len(ok)


def test_no_ng_frames_keeps_overlays_only(model_dir_openvino, frames_dir, tmp_path):
    out = tmp_path / "out"
    assert main([str(model_dir_openvino), "--folder", str(frames_dir), "--out", str(out), "-q",
                 "--no-ng-frames"]) == 0
    recs = verdicts(lines(out / "verdicts.jsonl"))
    assert any("overlay" in r for r in recs) and not any("frame" in r for r in recs)
    assert not list(out.glob("**/*.frame.png"))
