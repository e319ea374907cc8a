"""apc-update on the camera PC: confirmed false alarms are learnt, defects stay flagged, the old dir stays."""
import json

import cv2
import numpy as np
import pytest

from apc_edge import Inspector
from apc_edge.cli.update import main as update_main
from apc_edge.preprocess import load_image
from blocked import run_without


def shifted_goods(synthetic_category, folder, shift=30):
    """Good parts under a new lamp: brighter everywhere. The model has not seen that and flags them."""
    folder.mkdir()
    for p in sorted((synthetic_category / "train" / "good").glob("*.png"))[:8]:
        cv2.imwrite(str(folder / p.name), cv2.add(load_image(p), shift))
    return folder


def test_false_alarms_are_learnt_and_defects_still_flagged(model_dir_hnsw, synthetic_category, tmp_path, capsys):
    old = Inspector(model_dir_hnsw)
    lamp = shifted_goods(synthetic_category, tmp_path / "lamp")
    false_alarms = sorted(lamp.glob("*.png"))
    before = [old.check(load_image(p)) for p in false_alarms]
    assert sum(r.is_anomalous for r in before) >= 4, "the brighter goods should be false alarms of the old model"
    spots = sorted((synthetic_category / "test" / "spot").glob("*.png"))
    new_dir = tmp_path / "model_v2"
    assert update_main([str(model_dir_hnsw), "--good", str(lamp), "--defects", str(spots[0]),
                        "--out", str(new_dir), "--json", str(tmp_path / "u.json")]) == 0
    assert json.loads((tmp_path / "u.json").read_text())["rows_added"] > 0
    assert "bank rows added" in capsys.readouterr().out
    new = Inspector(new_dir)
    assert not any(new.check(load_image(p)).is_anomalous for p in false_alarms)
    assert all(new.check(load_image(p)).is_anomalous for p in spots)          # the data set's defects too
    m = json.loads((new_dir / "manifest.json").read_text())
    u = m["update"]
    assert u["parent_manifest_sha256"] and u["images_added"] == [p.name for p in false_alarms]
    assert u["rows_added"] > 0 and m["memory_bank"]["size"] == old.bank.shape[0] + u["rows_added"]
    assert m["index"]["type"] == "hnsw" and m["index"]["measured_after_update"]["recall_at_1"] >= 0.98
    assert Inspector(model_dir_hnsw).bank.shape == old.bank.shape            # the old dir is as it was
    # Eq. 7's neighbour table is made again for the grown bank (the loader checks its shape and ids)
    assert m["memory_bank"]["neighbours"] == "bank_neighbours.npy" and new.bank_neighbours.shape[0] == len(new.bank)

    # the leave-one-out scores, computed from one search of the old bank, equal a direct exact search of the
    # updated bank without each image's own added rows
    from apc_edge.index import ExactIndex
    from apc_edge.scoring import region_patches, score_patches
    bank = Inspector(new_dir, index="exact").bank
    added, exact = bank[old.bank.shape[0]:], ExactIndex(bank)
    reference = []
    for p in false_alarms:
        frame = load_image(p)
        region = old.preprocessor.patch_region(frame.shape, old.patch_grid) if old.part_only else None
        patches, cells = region_patches(old.embed(frame), region)
        own = old.bank.shape[0] + np.flatnonzero((added[:, None, :] == patches[None, :, :]).all(-1).any(1))
        reference.append(score_patches(patches, old.patch_grid, exact, bank, old.num_neighbours, cells,
                                       exclude=own, peak_sigma=old.peak_sigma).image_score)
    assert u["good_leave_one_out_scores"] == pytest.approx(reference, rel=1e-5, abs=1e-6)


def test_the_updated_bank_s_nearest_rows_come_from_one_search_of_the_old_bank():
    from apc_edge.index import ExactIndex
    from apc_edge.model_update import nearest_after_update

    rng = np.random.default_rng(0)
    old, new, queries = rng.normal(size=(500, 16)), rng.normal(size=(60, 16)), rng.normal(size=(200, 16))
    old, new, queries = (a.astype(np.float32) for a in (old, new, queries))
    bank = np.concatenate([old, new])
    d0, i0 = ExactIndex(old).search(queries, k=1)
    d, i = nearest_after_update(queries, (d0[:, 0], i0[:, 0]), ExactIndex(new), len(old))
    td, ti = ExactIndex(bank).search(queries, k=1)
    assert (i == ti[:, 0]).all() and np.allclose(d, td[:, 0], atol=1e-5)
    assert (i >= len(old)).any() and (i < len(old)).any()                     # both parts of the bank answer
    own = len(old) + np.arange(0, 60, 2)
    d, i = nearest_after_update(queries, (d0[:, 0], i0[:, 0]), ExactIndex(new), len(old), own=own)
    td, ti = ExactIndex(bank).search(queries, k=1, exclude=own)
    assert (i == ti[:, 0]).all() and np.allclose(d, td[:, 0], atol=1e-5) and not np.isin(i, own).any()
    d, i = nearest_after_update(queries, (d0[:, 0], i0[:, 0]), None, len(old))  # nothing added
    assert (i == i0[:, 0]).all()


def test_an_update_that_would_pass_a_confirmed_defect_is_refused(model_dir_onnx, synthetic_category, tmp_path,
                                                                 capsys):
    goods = sorted((synthetic_category / "train" / "good").glob("*.png"))[:4]
    spots = sorted((synthetic_category / "test" / "spot").glob("*.png"))
    out = tmp_path / "v2"
    # a defect among the "good" images: learnt, it would pass, and the same image is a confirmed defect
    rc = update_main([str(model_dir_onnx), "--good", *map(str, goods + spots[:1]), "--defects", str(spots[0]),
                      "--out", str(out)])
    assert rc == 1 and "refused" in capsys.readouterr().err and not out.exists()
    assert not list(tmp_path.glob(".v2.*"))                                  # no temporary dir left


@pytest.mark.parametrize("make_args, message", [
    (lambda m, d, t: [m, "--good", d, "--out", m], "already exists"),
    (lambda m, d, t: [m, "--good", str(t / "none"), "--out", str(t / "v2")], "does not exist"),
    (lambda m, d, t: [m, "--good", sorted(__import__("pathlib").Path(d).glob("*.png"))[0].as_posix(),
                      "--out", str(t / "v2")], "at least 2 good images"),
])
def test_refusals(model_dir_onnx, synthetic_category, tmp_path, make_args, message, capsys):
    good = str(synthetic_category / "train" / "good")
    assert update_main(make_args(str(model_dir_onnx), good, tmp_path)) == 2
    assert message in capsys.readouterr().err


def test_update_runs_without_torch(model_dir_onnx, synthetic_category, tmp_path):
    good = synthetic_category / "test" / "good"
    code = "from apc_edge.cli.update import main\nrc = main(sys.argv)\nassert rc == 0, rc\n"
    proc = run_without("torch", code, str(model_dir_onnx), "--good", str(good), "--out", str(tmp_path / "v2"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "v2" / "manifest.json").is_file()
