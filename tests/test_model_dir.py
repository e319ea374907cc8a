"""Model dirs are verified data: tampering, missing files and bad manifests are refused by name."""
import json
import shutil

import numpy as np
import pytest

from apc_edge import Inspector, ModelDirError
from apc_edge.model_dir import load_manifest


@pytest.fixture
def model_copy(model_dir_onnx, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(model_dir_onnx, dst)
    return dst


def test_manifest_lists_every_file_with_sha256(model_dir_openvino):
    m = load_manifest(model_dir_openvino)
    assert set(m["files"]) == {"backbone.xml", "backbone.bin", "memory_bank.npy", "bank_neighbours.npy"}
    assert all(len(h) == 64 for h in m["files"].values())
    assert m["graph"]["format"] == "openvino" and m["index"]["type"] == "exact"
    for key in ("preprocess", "patch_grid", "embedding_dim", "scoring", "threshold", "training", "backbone"):
        assert key in m


def test_tampered_bank_is_refused_naming_the_file(model_copy):
    bank = np.load(model_copy / "memory_bank.npy")
    bank[0, 0] += 1.0
    np.save(model_copy / "memory_bank.npy", bank)
    with pytest.raises(ModelDirError, match=r"memory_bank\.npy was altered"):
        Inspector(model_copy)


def test_tampered_graph_is_refused(model_copy):
    with open(model_copy / "backbone.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelDirError, match=r"backbone\.onnx was altered"):
        Inspector(model_copy)


def test_missing_file_is_refused(model_copy):
    (model_copy / "memory_bank.npy").unlink()
    with pytest.raises(ModelDirError, match=r"memory_bank\.npy is missing"):
        Inspector(model_copy)


def test_missing_dir_and_manifest(tmp_path):
    with pytest.raises(ModelDirError, match="does not exist"):
        Inspector(tmp_path / "nowhere")
    with pytest.raises(ModelDirError, match="no manifest.json"):
        Inspector(tmp_path)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("threshold"), "lacks required keys: threshold"),
    (lambda m: m.update(format_version=99), "format_version 99"),
    (lambda m: m["files"].update({"../evil.npy": "0" * 64}), "outside the model dir"),
    (lambda m: m["graph"].update(format="tensorrt"), "unknown graph format"),
])
def test_bad_manifest_fields(model_copy, edit, message):
    path = model_copy / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))
    with pytest.raises(ModelDirError, match=message):
        Inspector(model_copy)


def test_manifest_not_json(model_copy):
    (model_copy / "manifest.json").write_text("{not json")
    with pytest.raises(ModelDirError, match="not valid JSON"):
        Inspector(model_copy)


def test_pickled_bank_is_never_loaded(model_copy):
    """An object array (needs pickle) with a matching hash is still refused."""
    from apc_edge.manifest import sha256_file

    # an .npy whose header declares an object array: loading it would need pickle
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, dtype=object))
    with open(model_copy / "memory_bank.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\x80\x04not-a-real-pickle")
    path = model_copy / "manifest.json"
    m = json.loads(path.read_text())
    m["files"]["memory_bank.npy"] = sha256_file(model_copy / "memory_bank.npy")
    path.write_text(json.dumps(m))
    with pytest.raises(ModelDirError, match="cannot read array"):
        Inspector(model_copy)
