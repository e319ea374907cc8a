"""Every rejected command-line input of the runtime CLIs: exit 2, one line on stderr naming the problem,
no traceback, and nothing written. One case per input, through ``main(argv)``; the entry points
themselves are run as subprocesses for a few."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from apc_edge.calibration.cli_calibrate import main as calibrate_main
from apc_edge.calibration.cli_eval import main as eval_main
from apc_edge.cli import args as A
from apc_edge.cli.bench import main as bench_main
from apc_edge.cli.inspect import main as inspect_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def places(tmp_path_factory, synthetic_category):
    """Named paths the cases refer to as {name}."""
    root = tmp_path_factory.mktemp("args")
    (root / "a_file").write_text("x")
    (root / "a_dir").mkdir()
    (root / "notes.txt").write_text("Inspection notes\n" * 200)           # FFmpeg renders this as video
    (root / "text.avi").write_text("not a video\n")
    junk = root / "junk_data"
    shutil.copytree(synthetic_category, junk)
    (junk / "test" / "good" / "zz_notes.png").write_text("this is not a png\n")
    return {"file": root / "a_file", "dir": root / "a_dir", "missing": root / "missing", "txt": root / "notes.txt",
            "textavi": root / "text.avi", "junk": junk, "data": synthetic_category,
            "good": synthetic_category / "test" / "good"}


def run_main(main, argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:                       # a parser that still exits counts too: the code matters
        return exc.code


def assert_refused(main, argv, message, capsys, places, tmp_path):
    argv = [str(a).format(**places, out=tmp_path / "out") for a in argv]
    assert run_main(main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err
    assert err.count("\n") == 0, f"not one line: {err!r}"
    assert not (tmp_path / "out").exists()


INSPECT = [
    (["--folder", "{good}", "--max-frames", "0"], "--max-frames must be an integer >= 1, got '0'"),
    (["--folder", "{good}", "--max-frames", "-3"], "--max-frames must be an integer >= 1"),
    (["--folder", "{good}", "--max-frames", "ten"], "--max-frames must be an integer"),
    (["--folder", "{good}", "--ng-images-max", "-1"], "--ng-images-max must be an integer >= 0"),
    (["--folder", "{good}", "--ng-bytes-max", "0"], "--ng-bytes-max must be a size of at least 1 byte"),
    (["--folder", "{good}", "--ng-bytes-max", "lots"], "--ng-bytes-max must be a size such as 500M"),
    (["--folder", "{good}", "--min-free-mb", "-5"], "--min-free-mb must be a finite number >= 0"),
    (["--folder", "{good}", "--min-free-mb", "nan"], "--min-free-mb must be a finite number"),
    (["--folder", "{good}", "--threshold", "0"], "--threshold must be a finite number > 0"),
    (["--folder", "{good}", "--threshold", "-1"], "--threshold must be a finite number > 0"),
    (["--folder", "{good}", "--threshold", "nan"], "--threshold must be a finite number"),
    (["--folder", "{good}", "--threshold", "inf"], "--threshold must be a finite number"),
    (["--folder", "{good}", "--device", "FOO"], "--device must be a device name"),
    (["--folder", "{missing}"], "--folder: folder"),
    (["--folder", "{file}"], "is not a folder"),
    (["--video", "{txt}"], "is not a video file"),
    (["--video", "{textavi}"], "cannot decode video file"),
    (["--video", "{missing}.avi"], "does not exist"),
    (["--folder", "{good}", "--out", "{file}"], "is a file"),
    (["--camera", "--exposure-us", "-5"], "--exposure-us must be a finite number > 0"),
    (["--camera", "--exposure-us", "0"], "--exposure-us must be a finite number > 0"),
    (["--camera", "--gain", "inf"], "--gain must be a finite number"),
    (["--camera", "--width", "0"], "--width must be an integer >= 1"),
    (["--camera", "--height", "1.5"], "--height must be an integer"),
    (["--camera", "--max-num-buffer", "0"], "--max-num-buffer must be an integer >= 1"),
    (["--camera", "--grab-timeout-ms", "-1"], "--grab-timeout-ms must be an integer >= 1"),
    (["--camera", "--reconnect-max-wait", "-1"], "--reconnect-max-wait must be a finite number >= 0"),
    (["--camera", "--reject-line", "Line2", "--reject-pulse-ms", "0"], "--reject-pulse-ms must be a finite number > 0"),
    (["--camera", "--reject-line", "Line2", "--reject-pulse-ms", "1e9"], "<= 10000"),
    (["--camera", "--trigger", "sometimes"], "--trigger: invalid choice"),
    (["--camera", "--node", "=5"], "--node needs NAME[=VALUE]"),
    (["--camera", "--loop"], "--loop applies to --folder and --video only"),
    (["--folder", "{good}", "--reject-line", "Line2"], "--reject-line applies to --camera only"),
    (["--folder", "{good}", "--video", "{txt}"], "exactly one frame source"),
    ([], "exactly one frame source"),
]


@pytest.mark.parametrize("argv, message", INSPECT, ids=[" ".join(a) for a, _ in INSPECT])
def test_inspect_refuses(argv, message, model_dir_onnx, places, tmp_path, capsys):
    assert_refused(inspect_main, [model_dir_onnx, *argv, "--out", "{out}", "-q"], message, capsys, places, tmp_path)


def test_inspect_refuses_a_missing_model_dir_and_config_with_flags(places, tmp_path, capsys):
    assert_refused(inspect_main, ["{missing}", "--folder", "{good}", "--out", "{out}"], "model dir not found",
                   capsys, places, tmp_path)
    assert_refused(inspect_main, ["--config", "{missing}.json", "--out", "{out}"], "--config: file", capsys,
                   places, tmp_path)
    assert_refused(inspect_main, ["--config", "{file}", "--threshold", "2", "--out", "{out}"],
                   "with --config, put camera and model settings in the file", capsys, places, tmp_path)


@pytest.mark.parametrize("setting, message", [
    ({"exposure_us": -5}, "exposure_us must be a finite number > 0, got '-5'"),
    ({"threshold": "nan"}, "threshold must be a finite number > 0"),
    ({"width": True}, "width must be a number"),
    ({"reject_pulse_ms": 0, "reject_line": "Line2"}, "reject_pulse_ms must be a finite number > 0"),
    ({"device": "QPU"}, "device must be a device name"),
])
def test_inspect_refuses_config_file_settings(setting, message, model_dir_onnx, places, tmp_path, capsys):
    config = tmp_path / "line.json"
    config.write_text(json.dumps({"cameras": [{"serial": "0815-0000", "model": str(model_dir_onnx), **setting}]}))
    assert_refused(inspect_main, ["--config", config, "--out", "{out}"], message, capsys, places, tmp_path)


BENCH = [
    (["--frames", "0"], "--frames must be an integer from 1 to 1000000, got '0'"),
    (["--frames", "-1"], "--frames must be an integer"),
    (["--frames", "2.5"], "--frames must be an integer"),
    (["--warmup", "-1"], "--warmup must be an integer from 0"),
    (["--threads", "-2"], "--threads must be an integer from 0"),
    (["--device", "TPU"], "--device must be a device name"),
    (["--index", "fast"], "--index: invalid choice"),
    (["--index-crossover", "0,x"], "--index-crossover must be comma-separated integers >= 1"),
    (["--index-crossover", "100,-5"], "--index-crossover must be comma-separated integers >= 1"),
    (["--json", "{dir}"], "is a folder; give a file name"),
    (["--folder", "{missing}"], "does not exist or holds no images"),
]


@pytest.mark.parametrize("argv, message", BENCH, ids=[" ".join(a) for a, _ in BENCH])
def test_bench_refuses(argv, message, model_dir_onnx, places, tmp_path, capsys):
    assert_refused(bench_main, [model_dir_onnx, *argv], message, capsys, places, tmp_path)


def test_bench_refuses_a_missing_model_dir(places, tmp_path, capsys):
    assert_refused(bench_main, ["{missing}"], "model_dir: folder", capsys, places, tmp_path)


EVAL = [
    (["{missing}", "{data}"], "model_dir: folder"),
    (["MODEL", "{missing}"], "data_dir: folder"),
    (["MODEL", "{file}"], "is not a folder"),
    (["MODEL", "{dir}"], "is neither an MVTec-layout category"),
    (["MODEL", "{data}", "--exclude", "no-slash.png"], "--exclude must be <type>/<file name>"),
    (["MODEL", "{data}", "--exclude", "good/none.png"], "--exclude good/none.png: no such test image"),
    (["MODEL", "{data}", "--device", "X"], "--device must be a device name"),
    (["MODEL", "{data}", "--report", "{file}"], "cannot be an output folder"),
    (["MODEL", "{data}", "--json", "{dir}"], "is a folder; give a file name"),
    (["MODEL", "{junk}"], "zz_notes.png is not a readable image"),
]


@pytest.mark.parametrize("argv, message", EVAL, ids=[" ".join(a) for a, _ in EVAL])
def test_eval_refuses(argv, message, model_dir_onnx, places, tmp_path, capsys):
    argv = [model_dir_onnx if a == "MODEL" else a for a in argv]
    assert_refused(eval_main, argv, message, capsys, places, tmp_path)


CALIBRATE = [
    (["--max-false-alarm", "0"], "--max-false-alarm must be a finite number > 0 and < 1"),
    (["--max-false-alarm", "1"], "--max-false-alarm must be a finite number > 0 and < 1"),
    (["--max-false-alarm", "1.5"], "--max-false-alarm must be"),
    (["--max-false-alarm", "-0.1"], "--max-false-alarm must be"),
    (["--max-false-alarm", "nan"], "--max-false-alarm must be"),
    (["--target-recall", "0", "--anomalies", "{good}"], "--target-recall must be a finite number > 0 and <= 1"),
    (["--target-recall", "1.2", "--anomalies", "{good}"], "--target-recall must be"),
    (["--f1"], "--target-recall and --f1 need --anomalies"),
    (["--target-recall", "0.9"], "--target-recall and --f1 need --anomalies"),
    (["--f1", "--max-false-alarm", "0.1", "--anomalies", "{good}"], "not allowed with argument"),
    (["--no-holdout"], "--no-holdout leaves no good images"),
    (["--good", "{missing}"], "--good: '"),
    (["--anomalies", "{missing}", "--f1"], "does not exist"),
    (["--data", "{missing}"], "--data: folder"),
    (["--device", "X"], "--device must be a device name"),
    (["--json", "{dir}"], "is a folder; give a file name"),
]


@pytest.mark.parametrize("argv, message", CALIBRATE, ids=[" ".join(a) for a, _ in CALIBRATE])
def test_calibrate_refuses(argv, message, model_dir_onnx, places, tmp_path, capsys):
    before = (model_dir_onnx / "manifest.json").read_bytes()
    assert_refused(calibrate_main, [model_dir_onnx, *argv], message, capsys, places, tmp_path)
    assert (model_dir_onnx / "manifest.json").read_bytes() == before


@pytest.mark.parametrize("cli, argv, message", [
    ("apc_edge.cli.inspect", ["MODEL", "--video", "{txt}"], "is not a video file"),
    ("apc_edge.cli.bench", ["MODEL", "--frames", "0"], "--frames must be"),
    ("apc_edge.calibration.cli_eval", ["MODEL", "{junk}"], "is not a readable image"),
    ("apc_edge.calibration.cli_calibrate", ["MODEL", "--max-false-alarm", "2"], "--max-false-alarm must be"),
])
def test_entry_points_exit_2_with_one_line(cli, argv, message, model_dir_onnx, places, tmp_path):
    argv = [str(model_dir_onnx) if a == "MODEL" else a.format(**places) for a in argv]
    proc = subprocess.run([sys.executable, "-m", cli, *argv], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert message in err and "Traceback" not in err and err.count("\n") == 0, err


@pytest.mark.parametrize("check, text, value", [
    (A.positive_int, "7", 7), (A.non_negative_int, "0", 0), (A.positive_float, "1e-6", 1e-6),
    (A.size_bytes, "300K", 300 * 1024), (A.size_bytes, "2G", 2 * 2**30), (A.size_bytes, "1048576", 2**20),
    (A.size_bytes, "1.5MB", int(1.5 * 2**20)), (A.device, "gpu.1", "GPU.1"), (A.device, "AUTO:GPU,CPU", "AUTO:GPU,CPU"),
    (A.int_list(1), "1000,4000", [1000, 4000]),
])
def test_checks_accept(check, text, value):
    assert check(text) == value


@pytest.mark.parametrize("check, text", [
    (A.positive_int, "0"), (A.positive_float, "inf"), (A.float_range(0, 1, high_open=True), "1"),
    (A.size_bytes, "-1M"), (A.size_bytes, "0.1"), (A.device, "CPU:FOO"), (A.device, "GPU.x"), (A.device, ""),
])
def test_checks_refuse_with_a_value_error(check, text):
    with pytest.raises(ValueError, match="must be"):                # usable outside argparse too
        check(text)


TRAIN = [
    (["--dim", "0"], "--dim must be an integer >= 1, got '0'"),
    (["--dim", "-5"], "--dim must be an integer >= 1"),
    (["--resize", "10", "10"], "--resize must be an integer from 32 to 4096, got '10'"),
    (["--resize", "0", "0"], "--resize must be an integer from 32 to 4096"),
    (["--resize", "60000", "256"], "--resize must be an integer from 32 to 4096"),
    (["--resize-mode", "pad", "--scale", "-1"], "--scale must be a finite number >= 0.01 and <= 10"),
    (["--scale", "0.5"], "--scale applies to --resize-mode pad only"),
    (["--neighbours", "0"], "--neighbours must be an integer >= 1"),
    (["--coreset-ratio", "1.5"], "--coreset-ratio must be a finite number > 0 and <= 1"),
    (["--holdout", "1.0"], "--holdout must be a finite number >= 0 and < 1"),
    (["--holdout", "-0.2"], "--holdout must be"),
    (["--max-false-alarm", "0"], "--max-false-alarm must be"),
    (["--resize", "128", "128", "--crop", "200", "200"], "--crop 200 200 is larger than --resize 128 128"),
    (["--resize-mode", "pad", "--crop", "64", "64"], "--crop applies to stretch mode only"),
]


@pytest.mark.parametrize("argv, message", TRAIN, ids=[" ".join(a) for a, _ in TRAIN])
def test_train_refuses(argv, message, places, tmp_path, capsys):
    from apc_edge.export.cli_train import main as train_main

    assert_refused(train_main, ["{data}", "--out", "{out}", *argv], message, capsys, places, tmp_path)


EXPORT = [
    (["--guard-synthetic", "-1"], "--guard-synthetic must be an integer >= 0"),
    (["--calibration-images", "0"], "--calibration-images must be an integer >= 1"),
    (["--int8-max-auroc-drop", "2"], "--int8-max-auroc-drop must be a finite number >= 0 and <= 1"),
    (["--hnsw-min-recall", "1.5"], "--hnsw-min-recall must be a finite number >= 0 and <= 1"),
    (["--int8-min-cosine", "nan"], "--int8-min-cosine must be a finite number"),
]


@pytest.mark.parametrize("argv, message", EXPORT, ids=[" ".join(a) for a, _ in EXPORT])
def test_export_refuses(argv, message, trained_run, places, tmp_path, capsys):
    from apc_edge.export.cli_export import main as export_main

    assert_refused(export_main, [trained_run, "--out", "{out}", *argv], message, capsys, places, tmp_path)


@pytest.mark.parametrize("prog", ["apc-train", "apc-export", "apc-eval", "apc-calibrate", "apc-compare",
                                  "apc-inspect", "apc-bench", "apc-review", "apc-update"])
def test_every_command_has_version_and_help(prog):
    exe = shutil.which(prog) or str(Path(sys.executable).parent / prog)
    from apc_edge import __version__

    done = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"{prog} {__version__}"
    help_text = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120).stdout
    assert help_text.startswith(f"usage: {prog}")
