"""INT8 / FP16 export: quantized graphs score like FP32, the accuracy guard refuses and writes nothing."""
import json
import shutil

import numpy as np
import pytest

from apc_edge import Inspector
from apc_edge.calibration.agreement import spearman
from apc_edge.calibration.dataset import MVTecCategory
from apc_edge.calibration.imagesets import calibration_subset, training_images
from apc_edge.calibration.int8_guard import GuardTolerance, QuantizationGuardError, guard_failures
from apc_edge.export.bank_rebuild import recover_patch_ids
from apc_edge.export.cli_export import main as export_main
from apc_edge.export.model_export import ExportOptions, export_model, guard_preference
from apc_edge.export.patchcore import CORESET_IDS_FILE, load_bank
from apc_edge.preprocess import load_image

CALIB = 6      # calibration images: enough to test the path, quick on 2 cores


def scores(inspector, category):
    samples = MVTecCategory(category).test_samples()
    return (np.array([inspector.check(load_image(s.path), with_map=False).raw_score for s in samples]),
            np.array([s.is_anomalous for s in samples]))


@pytest.fixture(scope="module")
def model_dir_int8(trained_run, synthetic_category, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "ov_int8"
    test = synthetic_category / "test"
    export_model(trained_run, out, options=ExportOptions(
        target="openvino", precision="int8", index="exact", calibration_images=CALIB,
        guard_images=[str(test / "scratch"), str(test / "spot")]))
    return out


def test_int8_manifest_records_precision_and_guard(model_dir_int8):
    m = json.loads((model_dir_int8 / "manifest.json").read_text())
    assert m["graph"]["precision"] == "int8" and m["graph"]["cpu_inference_precision_hint"] == "f32"
    q = m["quantization"]
    assert q["passed"] and q["calibration"]["n_images"] == CALIB
    guard = q["guard"]
    assert guard["n_held_out_good"] == len(m["training"]["holdout_images"]) > 0
    assert guard["n_extra"] == 8 and guard["spearman_enforced"]
    assert 0.9 < guard["embedding_cosine"]["mean"] <= 1.0
    assert {"spearman", "kendall", "max_rel_change"} <= set(guard["image_scores"])
    assert q["tolerance"] == {"min_cosine": 0.97, "min_spearman": 0.8, "max_score_change": 0.25,
                              "max_auroc_drop": 0.003}
    auc = guard["anomaly_auroc"]                       # no real anomalies named: CutPaste from the goods
    assert auc["anomalies"] == "synthetic CutPaste" and auc["n_anomalies"] == guard["n_anomalies"] == 30
    assert auc["drop"] == pytest.approx(auc["reference"] - auc["compressed"]) and auc["drop"] <= 0.003
    # both activation ranges were measured, and the one kept is the closer to FP32 by the guard's own figures
    first, twin = q["attempts"]
    assert "activation ranges mean" in first["method"] and "activation ranges max" in twin["method"]
    assert [first["chosen"], twin["chosen"]].count(True) == 1
    kept, other = (first, twin) if first["chosen"] else (twin, first)
    assert kept["passed"] and kept["method"] == q["method"] and kept["anomaly_auroc"] == auc
    if other["passed"] is None:       # the closer setting passed first: the other was never scored
        assert kept["embedding_cosine_p01"] >= other["embedding_cosine_p01"] and other["not_guarded"]
    else:                             # the closer one was guarded first and failed
        assert other["passed"] is False and other["problems"]
        assert other["embedding_cosine_p01"] >= kept["embedding_cosine_p01"]
    assert m["threshold"]["computed_with"]["precision"] == "int8"
    assert "int8" in m["memory_bank"]["source"]


def test_int8_scores_close_to_fp32(model_dir_int8, model_dir_openvino, synthetic_category):
    q, labels = scores(Inspector(model_dir_int8), synthetic_category)
    f, _ = scores(Inspector(model_dir_openvino), synthetic_category)
    assert Inspector(model_dir_int8).backend.precision == "int8"
    np.testing.assert_allclose(q[~labels], f[~labels], rtol=0.2)      # goods: where the threshold sits
    # anomalies may lose height (activation ranges are calibrated on good images) but stay above the goods
    assert q[labels].min() > q[~labels].max() and f[labels].min() > f[~labels].max()
    assert spearman(q, f) > 0.8


def test_guard_failure_writes_nothing_and_keeps_old_dir(trained_run, model_dir_openvino, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(model_dir_openvino, old)
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    rc = export_main([str(trained_run), "--out", str(old), "--overwrite", "--int8", "--index", "exact",
                      "--calibration-images", str(CALIB), "--int8-min-cosine", "0.999999", "--guard-synthetic", "4"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "accuracy guard failed" in err and "No model dir written" in err
    # every fallback setting was tried and named before the refusal
    assert "in each of 6 quantization setting(s)" in err
    assert err.count("--int8-min-cosine 0.999999") == 6 and "preset mixed, activation ranges max" in err
    # and last mixed precision: the first convolution, then the operations up to the stride-8 tap in float
    assert "the first convolution kept float" in err and "the operations up to the stride-8 tap kept float" in err
    assert "mean embedding cosine" in err and "< --int8-min-cosine 0.999999" in err
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before        # old model dir untouched
    assert [p.name for p in tmp_path.iterdir()] == ["old"]                  # no temporary dir left behind
    Inspector(old)


def test_guard_failures_name_each_tolerance():
    report = {"embedding_cosine": {"mean": 0.9}, "score_change_relative_to": "FP32 score",
              "image_scores": {"n_images": 30, "spearman": 0.5, "max_rel_change": 0.1},
              "image_scores_held_out_good": {"n_images": 10, "max_rel_change": 0.4}}
    problems = guard_failures(report, GuardTolerance())
    assert len(problems) == 3
    assert "--int8-min-cosine" in problems[0] and "--int8-min-spearman" in problems[1]
    assert "10 held-out good images 0.4000" in problems[2]
    report["image_scores"]["n_images"] = 5                                  # too few to rank: not enforced
    assert len(guard_failures(report, GuardTolerance())) == 2
    report["anomaly_auroc"] = {"reference": 0.95, "compressed": 0.94, "drop": 0.01, "n_good": 10,
                               "n_anomalies": 30, "anomalies": "synthetic CutPaste"}
    problems = guard_failures(report, GuardTolerance())
    assert "AUROC fell from 0.9500 (FP32) to 0.9400" in problems[-1] and "--int8-max-auroc-drop 0.003" in problems[-1]
    assert len(guard_failures(report, GuardTolerance(max_auroc_drop=0.02))) == 2
    with pytest.raises(ValueError, match="--int8-max-auroc-drop"):
        GuardTolerance(max_auroc_drop=-0.1).validate()
    with pytest.raises(ValueError, match="--int8-min-cosine"):
        GuardTolerance(min_cosine=2).validate()



def test_guard_anomalies_are_the_users_then_the_runs_then_synthetic(trained_run, synthetic_category, tmp_path):
    from apc_edge.export.guard_anomalies import cutpaste_anomalies
    from apc_edge.export.model_export import guard_anomaly_set
    from apc_edge.export.patchcore import load_run

    _, info, _ = load_run(trained_run)
    bank_paths, _ = training_images(info["training"], None)
    spots = synthetic_category / "test" / "spot"
    real, source = guard_anomaly_set(info, ExportOptions(guard_anomalies=[str(spots)]), bank_paths)
    assert source == "real (--guard-anomalies)" and len(real) == len(list(spots.glob("*.png")))
    apc_info = {**info, "few_shot_anomalies": {"images": ["spot/" + real[0].name]}}
    few, source = guard_anomaly_set(apc_info, ExportOptions(), bank_paths)
    assert few == [real[0]] and "few-shot" in source
    made, source = guard_anomaly_set(info, ExportOptions(guard_synthetic=5), bank_paths)
    assert source == "synthetic CutPaste" and len(made) == 5
    assert guard_anomaly_set(info, ExportOptions(guard_synthetic=0), bank_paths) == ([], "")
    # each synthetic anomaly is its target good image with one pasted rectangle changed, same size and kind
    again = cutpaste_anomalies(bank_paths, 5, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(made, again))
    goods = [load_image(p) for p in bank_paths]
    for img in made:
        changed = min((np.abs(img.astype(int) - g.astype(int)).reshape(*img.shape[:2], -1).max(axis=-1) > 0).mean()
                      for g in goods if g.shape == img.shape)
        assert 0 < changed <= 0.11
    one = load_image(bank_paths[0])
    assert all(0 < (np.abs(img.astype(int) - one.astype(int)).max(axis=-1) > 0).mean() <= 0.11
               for img in cutpaste_anomalies(bank_paths[:1], 3))     # one image: cut and pasted within it
    with pytest.raises(ValueError, match="at least one good image"):
        cutpaste_anomalies([], 3)


def test_int8_max_ranges_option(model_dir_openvino, trained_run, synthetic_category, tmp_path):
    """Activation ranges over all calibration images (not NNCF's mean per image) are recorded and still
    separate defects from good parts; which choice is better is data-dependent (see the README)."""
    out = tmp_path / "ov_int8_max"
    export_model(trained_run, out, options=ExportOptions(
        target="openvino", precision="int8", index="exact", calibration_images=CALIB, int8_ranges="max"))
    assert "activation ranges max" in json.loads((out / "manifest.json").read_text())["quantization"]["method"]
    q_max, labels = scores(Inspector(out), synthetic_category)
    f32, _ = scores(Inspector(model_dir_openvino), synthetic_category)
    assert q_max[labels].min() > q_max[~labels].max()
    assert spearman(q_max, f32) > 0.8
    with pytest.raises(ValueError, match="unknown INT8 activation ranges"):
        export_model(trained_run, tmp_path / "x", options=ExportOptions(precision="int8", int8_ranges="wide"))


def test_onnx_int8_and_fp16_exports(trained_run, tmp_path, synthetic_category, model_dir_onnx):
    # ONNX Runtime's QDQ INT8 moves this toy model's good scores by up to a third to a half (flat synthetic
    # images, 6 calibration images; how much depends on the CPU's int8 kernels): a guard tighter than any INT8
    # graph meets refuses it, a loosened one lets the path be tested
    with pytest.raises(QuantizationGuardError, match="embedding cosine"):
        export_model(trained_run, tmp_path / "refused", options=ExportOptions(
            target="onnx", precision="int8", index="exact", calibration_images=CALIB,
            guard=GuardTolerance(min_cosine=0.999999)))
    assert not (tmp_path / "refused").exists()
    export_model(trained_run, tmp_path / "onnx8", options=ExportOptions(
        target="onnx", precision="int8", index="exact", calibration_images=CALIB,
        guard=GuardTolerance(max_score_change=1.0)))
    m = json.loads((tmp_path / "onnx8" / "manifest.json").read_text())
    assert m["graph"]["precision"] == "int8" and "QDQ" in m["quantization"]["method"]
    assert set(m["files"]) == {"backbone.onnx", "memory_bank.npy", "bank_neighbours.npy"}
    q8, labels = scores(Inspector(tmp_path / "onnx8"), synthetic_category)
    f32, _ = scores(Inspector(model_dir_onnx), synthetic_category)
    np.testing.assert_allclose(q8[~labels], f32[~labels], rtol=1.0)
    assert q8[labels].min() > q8[~labels].max()
    export_model(trained_run, tmp_path / "fp16", options=ExportOptions(precision="fp16", index="exact"))
    m16 = json.loads((tmp_path / "fp16" / "manifest.json").read_text())
    assert m16["graph"]["precision"] == "fp16" and m16["quantization"]["guard"]["embedding_cosine"]["mean"] > 0.999
    with pytest.raises(ValueError, match="--fp16 applies to --target openvino"):
        export_model(trained_run, tmp_path / "x", options=ExportOptions(target="onnx", precision="fp16"))


def test_float16_bank_storage(trained_run, tmp_path):
    export_model(trained_run, tmp_path / "b16", options=ExportOptions(target="onnx", bank_dtype="float16",
                                                                       index="exact"))
    m = json.loads((tmp_path / "b16" / "manifest.json").read_text())
    assert np.load(tmp_path / "b16" / "memory_bank.npy").dtype == np.float16
    assert m["memory_bank"]["dtype"] == "float16"
    assert m["memory_bank"]["image_score_max_rel_change_vs_float32"] < 0.01
    assert Inspector(tmp_path / "b16").bank.dtype == np.float32


def test_int8_needs_the_training_images(trained_run, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        export_model(trained_run, tmp_path / "m", options=ExportOptions(precision="int8",
                                                                         data_dir=str(tmp_path / "gone")))
    assert not (tmp_path / "m").exists()


def test_recovered_coreset_ids_match_the_stored_ones(trained_run):
    info = json.loads((trained_run / "run.json").read_text())
    bank_paths, held = training_images(info["training"])
    assert len(held) == len(info["training"]["holdout_images"])
    stored = np.load(trained_run / CORESET_IDS_FILE)
    recovered = recover_patch_ids(trained_run, load_bank(trained_run), bank_paths)
    np.testing.assert_array_equal(recovered, stored)


def test_calibration_subset_is_deterministic_and_bounded(tmp_path):
    paths = [tmp_path / f"{i:03d}.png" for i in range(500)]
    a, b = calibration_subset(paths, seed=1), calibration_subset(paths, seed=1)
    assert a == b and len(a) == 300 and a == sorted(a)
    assert calibration_subset(paths[:20]) == paths[:20]
    with pytest.raises(ValueError, match="at least 1"):
        calibration_subset(paths, 0)


def test_mixed_precision_keeps_the_named_layers_float(model_dir_openvino, tmp_path, synthetic_category):
    """The stride-8 fallback leaves every operation up to the stride-8 tap without an INT8 quantizer (no
    FakeQuantize feeds it, its weights stay float), and quantizes the rest; "stem" only the first convolution."""
    import openvino as ov

    from apc_edge.export.quantize import CONV_TYPES, float_layers, quantize_openvino
    from apc_edge.manifest import read_manifest

    fp32 = ov.Core().read_model(str(model_dir_openvino / "backbone.xml"))
    convs = [op.get_friendly_name() for op in fp32.get_ordered_ops() if op.get_type_name() in CONV_TYPES]
    stem, trunk = float_layers(fp32, "stem"), float_layers(fp32, "stride8")
    assert stem == convs[:1] and float_layers(fp32, "none") == []
    trunk_convs = [n for n in convs if n in trunk]
    assert 1 < len(trunk_convs) < len(convs) and trunk_convs == convs[:len(trunk_convs)]   # a prefix of the net
    with pytest.raises(ValueError, match="float part"):
        float_layers(fp32, "half")

    pre = read_manifest(model_dir_openvino).preprocessor
    calib = sorted((synthetic_category / "train" / "good").glob("*.png"))[:CALIB]
    out = tmp_path / "mixed.xml"
    quantize_openvino(model_dir_openvino / "backbone.xml", out, calib, pre, ranges="max", float_part="stride8")
    q = ov.Core().read_model(str(out))

    def quantized(op) -> bool:      # reads a FakeQuantize, or int8 weights (a Multiply of a Convert)
        return any(v.get_node().get_type_name() in ("FakeQuantize", "Multiply") for v in op.input_values())

    ops = {op.get_friendly_name(): op for op in q.get_ordered_ops()}
    assert all(n in ops for n in trunk)
    assert not any(quantized(ops[n]) for n in trunk if ops[n].get_type_name() in CONV_TYPES + ("Add",))
    assert any(quantized(op) for n, op in ops.items() if n not in trunk and op.get_type_name() in CONV_TYPES)


def test_guard_preference_follows_the_tail_cosine_not_the_synthetic_auroc():
    def report(drop, p01):
        return {"anomaly_auroc": {"drop": drop}, "embedding_cosine": {"p01": p01}}

    assert guard_preference(report(0.0013, 0.96)) < guard_preference(report(-0.0004, 0.94))
    assert guard_preference({"embedding_cosine": {"p01": 0.95}}) < guard_preference(report(0.0, 0.9))


def test_int8_attempts_put_the_ranges_twin_second():
    from apc_edge.export.model_export import _int8_attempts

    def key(o):
        return o.int8_preset, o.int8_ranges, o.int8_float

    for ranges, other in (("mean", "max"), ("max", "mean")):
        asked = ExportOptions(target="openvino", precision="int8", int8_ranges=ranges)
        tried = [key(o) for o in _int8_attempts(asked)]
        assert tried[:2] == [key(asked), (asked.int8_preset, other, "none")]
        assert len(tried) == len(set(tried)) == 6
    no_fallback = ExportOptions(target="openvino", precision="int8", int8_fallback=False)
    assert [key(o) for o in _int8_attempts(no_fallback)] == [key(no_fallback)]


@pytest.mark.parametrize("winner", ["first", "twin"])
def test_the_kept_setting_is_the_graph_written(winner, trained_run, synthetic_category, tmp_path, monkeypatch):
    """Whichever of the two range settings the guard prefers is guarded first and, passing, kept: the model
    dir holds that setting's graph (the loader's probe, computed with the kept graph at export, matches), the
    other is never scored, and no set-aside file is left."""
    from apc_edge.export import model_export

    calls = []       # the pair is ranked in the order built: the asked setting first, its twin second

    def prefer(report):
        calls.append(report)
        return -1.0 if (len(calls) == 2) == (winner == "twin") else 0.0
    monkeypatch.setattr(model_export, "guard_preference", prefer)
    out = tmp_path / "m"
    export_model(trained_run, out, options=ExportOptions(
        target="openvino", precision="int8", index="exact", calibration_images=CALIB))
    q = json.loads((out / "manifest.json").read_text())["quantization"]
    first, twin = q["attempts"]
    assert len(calls) == 2 and all("p01" in c["embedding_cosine"] for c in calls)
    guarded, skipped = (first, twin) if winner == "first" else (twin, first)
    assert guarded["passed"] and skipped["passed"] is None and skipped["anomaly_auroc"] is None
    kept = first if winner == "first" else twin
    assert kept["chosen"] and not (twin if winner == "first" else first)["chosen"]
    assert q["method"] == kept["method"] and q["guard"]["embedding_cosine"]["p01"] == kept["embedding_cosine_p01"]
    assert not [p.name for p in out.iterdir() if p.name.startswith("attempt")]
    inspector = Inspector(out)                     # refuses a graph whose output does not match the probe
    assert inspector.backend.precision == "int8"
    q_scores, labels = scores(inspector, synthetic_category)
    assert q_scores[labels].min() > q_scores[~labels].max()
