"""apc-train / apc-export / apc-eval end to end on the synthetic set, and their error paths."""
import json

import pytest

from apc_edge.calibration.cli_eval import main as eval_main
from apc_edge.export.cli_export import main as export_main
from apc_edge.export.cli_train import main as train_main

METRIC_KEYS = {"image_auroc", "image_f1", "pixel_auroc", "pixel_f1", "pro", "n_test", "latency_ms",
               "per_defect_type_image_auroc"}


def test_train_export_eval(tmp_path, synthetic_category, capsys):
    run, model = tmp_path / "run", tmp_path / "model"
    assert train_main([str(synthetic_category), "--out", str(run), "--resize", "128", "128",
                       "--coreset-ratio", "0.2", "--seed", "3"]) == 0
    assert "train time" in capsys.readouterr().out
    assert export_main([str(run), "--target", "onnx", "--out", str(model)]) == 0
    assert export_main([str(run), "--target", "onnx", "--out", str(model)]) == 2          # no silent overwrite
    assert "already exists" in capsys.readouterr().err
    report_dir = tmp_path / "report"
    assert eval_main([str(model), str(synthetic_category), "--json", str(tmp_path / "m.json"),
                      "--report", str(report_dir), "--pixel-size", "64", "96"]) == 0
    assert "maps and masks resized to 64x96: pixel AUROC" in capsys.readouterr().out
    report = json.loads((tmp_path / "m.json").read_text())
    fixed = report["pixel_metrics_at"]
    assert fixed["size"] == [64, 96] and all(0.0 <= fixed[k] <= 1.0 for k in ("pixel_auroc", "pixel_f1", "pro"))
    assert METRIC_KEYS <= set(report)
    for key in ("image_auroc", "image_f1", "pixel_auroc", "pixel_f1", "pro"):
        assert 0.0 <= report[key] <= 1.0
    assert report["n_test"] == 12 and set(report["per_defect_type_image_auroc"]) == {"scratch", "spot"}
    assert report["image_auroc"] > 0.8           # the synthetic defects are obvious
    assert (report_dir / "roc.png").stat().st_size > 0 and (report_dir / "report.html").stat().st_size > 0


def test_wrong_data_folder(tmp_path, capsys):
    assert train_main([str(tmp_path / "nope"), "--out", str(tmp_path / "run")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "flat").mkdir()
    assert train_main([str(tmp_path / "flat"), "--out", str(tmp_path / "run")]) == 2
    assert "train/good" in capsys.readouterr().err


def test_unknown_backbone_and_bad_ratio(tmp_path, synthetic_category, capsys):
    assert train_main([str(synthetic_category), "--out", str(tmp_path / "r"), "--backbone", "vgg"]) == 2
    assert "invalid choice: 'vgg'" in capsys.readouterr().err
    assert train_main([str(synthetic_category), "--out", str(tmp_path / "r"), "--coreset-ratio", "0"]) == 2
    assert "coreset-ratio" in capsys.readouterr().err
    assert train_main([str(synthetic_category), "--out", str(tmp_path / "r"), "--backbone", "resnet50"]) == 2
    assert "--weights" in capsys.readouterr().err


def test_eval_and_export_errors(tmp_path, model_dir_onnx, capsys):
    assert export_main([str(tmp_path / "norun"), "--out", str(tmp_path / "m")]) == 2
    assert "run.json" in capsys.readouterr().err
    assert eval_main([str(tmp_path / "nomodel"), str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert eval_main([str(model_dir_onnx), str(tmp_path / "nodata")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_from_a_plain_folder_of_good_images(synthetic_category, tmp_path):
    """No MVTec layout: every image below the folder (sub-folders too, same file names in two of them) is a
    good image; export finds them again by their path below the folder."""
    import json
    import shutil

    from apc_edge import Inspector
    from apc_edge.export.cli_export import main as export_main
    from apc_edge.export.cli_train import main as train_main

    plain = tmp_path / "good_parts"
    goods = sorted((synthetic_category / "train" / "good").glob("*.png"))
    for i, p in enumerate(goods[:12]):
        folder = plain / ("cam1" if i % 2 else "cam2")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, folder / f"{i // 2:03d}.png")            # cam1/000.png and cam2/000.png both exist
    (plain / ".thumbs").mkdir()
    shutil.copy(goods[0], plain / ".thumbs" / "x.png")          # hidden folders are not training data
    run = tmp_path / "run"
    assert train_main([str(plain), "--out", str(run), "--resize", "96", "96"]) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["training"]["n_train_good"] == 12
    keys = info["training"]["threshold_images"]
    assert len(keys) == 12 and set(keys) == {p.relative_to(plain).as_posix() for p in plain.glob("cam*/*.png")}
    assert export_main([str(run), "--target", "onnx", "--int8", "--guard-synthetic", "6",
                        "--out", str(tmp_path / "m")]) == 0
    assert Inspector(tmp_path / "m").threshold > 0


def test_train_on_one_good_image_warns_that_the_threshold_is_low(synthetic_category, tmp_path, capsys):
    """One image trains (the INT8 guard's CutPaste anomalies come from within it), and says what to expect."""
    import json
    import shutil

    from apc_edge.export.cli_export import main as export_main
    from apc_edge.export.cli_train import main as train_main

    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(sorted((synthetic_category / "train" / "good").glob("*.png"))[3], one / "part.png")
    assert train_main([str(one), "--out", str(tmp_path / "run"), "--resize", "96", "96", "-q"]) == 0
    out = capsys.readouterr().out
    assert "8 copies of the one training image shifted" in out and "will flag many good parts" in out
    assert export_main([str(tmp_path / "run"), "--target", "openvino", "--int8", "--guard-synthetic", "4",
                        "--out", str(tmp_path / "m"), "--json", str(tmp_path / "e.json"), "-q"]) == 0
    manifest = json.loads((tmp_path / "e.json").read_text())
    # the INT8 threshold is set again from the copies, with the INT8 graph
    assert manifest["threshold"]["method"] == "shifted_copies_of_the_one_image"
    assert manifest["threshold"]["computed_with"]["precision"] == "int8"
    assert manifest["quantization"]["guard"]["n_anomalies"] == 4


def test_train_and_export_write_json(synthetic_category, tmp_path):
    import json

    from apc_edge.export.cli_export import main as export_main
    from apc_edge.export.cli_train import main as train_main

    assert train_main([str(synthetic_category), "--out", str(tmp_path / "run"), "--resize", "96", "96", "-q",
                       "--json", str(tmp_path / "t.json")]) == 0
    assert json.loads((tmp_path / "t.json").read_text())["training"]["n_train_good"] == 16
    assert export_main([str(tmp_path / "run"), "--index", "exact", "--out", str(tmp_path / "m"), "-q",
                        "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["files"] == \
        json.loads((tmp_path / "m" / "manifest.json").read_text())["files"]
