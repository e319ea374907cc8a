"""apc-bench prints per-stage numbers and writes them as JSON, without torch."""
import json

import pytest

from apc_edge.cli.bench import STAGES, main as bench_main
from blocked import run_without

KEYS = {"model", "backend", "frames", "latency_ms", "check_over_backbone", "throughput", "peak_rss_mb", "system"}


def test_bench_prints_and_writes_json(model_dir_openvino, tmp_path, capsys):
    assert bench_main([str(model_dir_openvino), "--frames", "4", "--warmup", "1", "--json",
                       str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    for stage in STAGES:
        assert f"apc-bench: {stage}" in out
    assert "throughput end to end" in out and "peak RSS" in out and "load average" in out
    r = json.loads((tmp_path / "b.json").read_text())
    assert KEYS <= set(r)
    assert set(r["latency_ms"]) == set(STAGES)
    assert all(v["p95"] >= v["median"] >= 0 for v in r["latency_ms"].values())
    assert 0 < r["check_over_floor"] <= r["check_over_backbone"] and "/ (backbone + preprocess) =" in out
    assert r["throughput"]["end_to_end"]["fps"] > 0 and r["throughput"]["backbone"]["in_flight"] >= 1
    assert "AsyncInferQueue" in r["throughput"]["backbone"]["method"]
    assert r["frames"]["source"] == "synthetic" and r["frames"]["frame_shape"][:2] == r["model"]["input_hw"]
    assert r["system"]["logical_cores"] >= 1 and isinstance(r["system"]["cpu_flags"], list)
    assert r["peak_rss_mb"] > 0
    mem = r["memory_mb"]
    frame_mb = r["frames"]["distinct"] * 256 * 256 * 3 / 2**20 if r["model"]["input_hw"] == [256, 256] else None
    if mem["end"] is None:
        pytest.skip("no /proc here: the resident split is not reported")
    assert 0 < mem["after_load"]["rss"] <= r["peak_rss_mb"] + 1 and mem["end"]["rss"] <= r["peak_rss_mb"] + 1
    assert mem["end"]["anon"] + mem["end"]["file"] == pytest.approx(mem["end"]["rss"], abs=1.0)
    assert frame_mb is None or mem["frames_held"] == pytest.approx(frame_mb, abs=0.1)
    assert "mapped library files" in out


def test_bench_folder_onnx_exact(model_dir_onnx, synthetic_category, tmp_path, capsys):
    rc = bench_main([str(model_dir_onnx), "--frames", "3", "--warmup", "0", "--folder",
                     str(synthetic_category / "test" / "good"), "--index", "exact", "--no-map",
                     "--json", str(tmp_path / "b.json")])
    assert rc == 0
    r = json.loads((tmp_path / "b.json").read_text())
    assert r["backend"]["backend"] == "onnxruntime" and r["model"]["index"] == "exact"
    assert r["frames"]["with_map"] is False and r["frames"]["frame_shape"] == [256, 256, 3]
    assert "threads on one session" in r["throughput"]["backbone"]["method"]



def test_bench_index_crossover(model_dir_onnx, tmp_path, capsys):
    rc = bench_main([str(model_dir_onnx), "--frames", "2", "--warmup", "0", "--no-throughput",
                     "--index-crossover", "50,1000000", "--json", str(tmp_path / "b.json")])
    assert rc == 0
    r = json.loads((tmp_path / "b.json").read_text())
    bank_rows = r["model"]["bank"][0]
    rows = r["index_crossover"]
    # sizes beyond the bank are capped at the bank's own rows
    assert [row["rows"] for row in rows] == sorted({50, bank_rows})
    assert all(row["exact_ms"] > 0 and row["hnsw_ms"] > 0 for row in rows)
    assert "HNSW+refine ms" in capsys.readouterr().out


def test_bench_index_crossover_rejects_bad_sizes(model_dir_onnx, capsys):
    assert bench_main([str(model_dir_onnx), "--index-crossover", "0,x"]) == 2
    assert "--index-crossover" in capsys.readouterr().err

@pytest.mark.parametrize("args, message", [
    (["--folder", "/nonexistent/frames"], "holds no images"),
    (["--frames", "0"], "--frames must be"),
])
def test_bench_bad_arguments(model_dir_onnx, args, message, capsys):
    assert bench_main([str(model_dir_onnx), *args]) == 2
    assert message in capsys.readouterr().err


def test_bench_missing_model_dir(tmp_path, capsys):
    assert bench_main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bench_runs_without_torch(model_dir_openvino):
    code = ("from apc_edge.cli.bench import main\n"
            "rc = main(sys.argv + ['--frames', '2', '--warmup', '0', '--no-throughput'])\n")
    proc = run_without("torch", code + "assert rc == 0\n", str(model_dir_openvino))
    assert proc.returncode == 0, proc.stderr
    assert "apc-bench: total" in proc.stdout


def test_bench_compare_alternates_rounds(model_dir_openvino, tmp_path, capsys):
    rc = bench_main([str(model_dir_openvino), "--frames", "6", "--warmup", "1", "--rounds", "3", "--no-throughput",
                     "--compare", str(model_dir_openvino), "--compare-threads-plan", "library",
                     "--json", str(tmp_path / "b.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "B / A end to end" in out and "alternating rounds" in out
    r = json.loads((tmp_path / "b.json").read_text())
    assert len(r["round_medians_ms"]) == 3 and len(r["compare"]["round_medians_ms"]) == 3
    assert r["threads"]["policy"] == "auto" and r["compare"]["threads"]["policy"] == "library"
    assert r["compare"]["median_ratio"] > 0 and set(r["compare"]["latency_ms"]) == set(STAGES)


def test_bench_says_when_frames_differ_in_size(model_dir_openvino, synthetic_category, tmp_path, capsys):
    import cv2

    folder = tmp_path / "sizes"
    folder.mkdir()
    goods = sorted((synthetic_category / "test" / "good").glob("*.png"))[:2]
    for k, p in enumerate(goods):
        img = cv2.imread(str(p))
        cv2.imwrite(str(folder / f"{k}.png"), cv2.resize(img, (img.shape[1] + 32 * k, img.shape[0])))
    assert bench_main([str(model_dir_openvino), "--frames", "4", "--warmup", "0", "--folder", str(folder),
                       "--no-throughput", "--json", str(tmp_path / "b.json")]) == 0
    assert "the frames come in 2 sizes" in capsys.readouterr().out
    assert json.loads((tmp_path / "b.json").read_text())["frames"]["frame_shapes"] == 2
    assert bench_main([str(model_dir_openvino), "--frames", "2", "--warmup", "0", "--no-throughput"]) == 0
    assert "sizes" not in capsys.readouterr().out                      # synthetic frames: one size
