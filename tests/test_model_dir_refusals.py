"""What the runtime refuses at load, case by case (issue 10): each a silent OK, a hang or a crash before.

Every case edits a real exported model dir the way a buggy tool or an attacker
would (with the sha256 recomputed where the edit touches a listed file) and
asserts a ``ModelDirError`` whose message names the file and the key. Then the
arithmetic guards: a non-finite score raises ``ScoreError`` in ``check()``, and
apc-inspect logs it as an ERROR verdict.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from apc_edge import Inspector, ModelDirError, ScoreError
from apc_edge.index import HnswIndex
from apc_edge.manifest import MAX_JSON_DEPTH, MAX_MANIFEST_BYTES, sha256_file, write_manifest
from apc_edge.preprocess import load_image


def copy_of(src: Path, tmp_path: Path, name: str = "model") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def edit(model: Path, change) -> None:
    """Edit manifest.json in place (no re-hashing: only listed files are hashed)."""
    path = model / "manifest.json"
    m = json.loads(path.read_text())
    change(m)
    path.write_text(json.dumps(m))


def rehash(model: Path) -> None:
    """Recompute every listed file's sha256, as a buggy tool or an attacker would."""
    write_manifest(model, json.loads((model / "manifest.json").read_text()))


def refused(model: Path, *patterns: str) -> str:
    with pytest.raises(ModelDirError) as info:
        Inspector(model)
    message = str(info.value)
    for p in patterns:
        assert re.search(p, message), f"{p!r} not in {message!r}"
    return message


@pytest.fixture
def ov(model_dir_openvino, tmp_path):
    return copy_of(model_dir_openvino, tmp_path)


@pytest.fixture
def onnx(model_dir_onnx, tmp_path):
    return copy_of(model_dir_onnx, tmp_path)


@pytest.fixture
def hnsw(model_dir_hnsw, tmp_path):
    return copy_of(model_dir_hnsw, tmp_path)


@pytest.fixture(scope="module")
def frames(synthetic_category):
    test = synthetic_category / "test"
    paths = sorted((test / "good").glob("*.png"))[:2] + sorted((test / "spot").glob("*.png"))[:2]
    return [load_image(p) for p in paths]


# -- the bank ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_the_bank(onnx, value):
    bank = np.load(onnx / "memory_bank.npy")
    bank[7, 3] = value
    np.save(onnx / "memory_bank.npy", bank)
    rehash(onnx)
    refused(onnx, r"memory_bank\.npy holds NaN or inf values in 1 of \d+ rows \(first: row 7\)")


def test_bank_of_five_rows_with_nine_neighbours(onnx):
    np.save(onnx / "memory_bank.npy", np.load(onnx / "memory_bank.npy")[:5])
    edit(onnx, lambda m: m["memory_bank"].update(size=5))
    rehash(onnx)
    refused(onnx, r"manifest\.json: scoring\.num_neighbours 9 must be in \[1, 5\] \(the rows of memory_bank\.npy\)")


def test_bank_rows_must_match_the_manifest(onnx):
    np.save(onnx / "memory_bank.npy", np.load(onnx / "memory_bank.npy")[:50])
    rehash(onnx)
    refused(onnx, r"memory_bank\.size \d+ does not match the 50 rows of memory_bank\.npy")


def test_int32_bank(onnx):
    np.save(onnx / "memory_bank.npy", np.load(onnx / "memory_bank.npy").astype(np.int32))
    rehash(onnx)
    refused(onnx, r"memory_bank\.npy: dtype int32 is not allowed; a memory bank is little-endian float32 or float16")


def test_zero_row_bank(onnx):
    dim = np.load(onnx / "memory_bank.npy").shape[1]
    np.save(onnx / "memory_bank.npy", np.zeros((0, dim), np.float32))
    rehash(onnx)
    refused(onnx, r"memory_bank\.npy: the memory bank has no rows")


def test_header_claiming_1e11_rows_is_refused_before_allocation(onnx):
    dim = np.load(onnx / "memory_bank.npy").shape[1]
    with open(onnx / "memory_bank.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (10 ** 11, dim)})
        fh.write(b"\0" * 4096)
    rehash(onnx)
    refused(onnx, r"memory_bank\.npy: header claims 100000000000 x \d+ float32 \(\d+ bytes\) but the file holds 4096")


@pytest.mark.parametrize("damage, pattern", [
    (lambda t: t.astype(np.int64), r"dtype int64 is not allowed; a neighbour table is little-endian int32"),
    (lambda t: t[:-1], r"neighbour table shape \(\d+, \d+\) does not fit a bank of \d+ rows"),
    (lambda t: t[:, :3], r"neighbour table shape \(\d+, 3\) does not fit a bank of \d+ rows and "
                         r"scoring\.num_neighbours 9"),
    (lambda t: np.where(t == t.max(), t.shape[0], t).astype(np.int32), r"neighbour ids must be bank rows 0\.\.\d+"),
    (lambda t: t[:, ::-1].copy(), r"row 0 of the neighbour table does not start with its own id"),
])
def test_a_neighbour_table_that_is_not_the_banks_is_refused(onnx, damage, pattern):
    table = np.load(onnx / "bank_neighbours.npy")
    np.save(onnx / "bank_neighbours.npy", damage(table))
    rehash(onnx)
    refused(onnx, r"bank_neighbours\.npy: " + pattern)


def test_a_neighbour_table_not_listed_in_files_is_refused(onnx):
    edit(onnx, lambda m: m["files"].pop("bank_neighbours.npy"))
    refused(onnx, r"memory_bank\.neighbours bank_neighbours\.npy is not listed in files with a sha256")


def test_fortran_order_and_wrong_dim(onnx):
    bank = np.load(onnx / "memory_bank.npy")
    np.save(onnx / "memory_bank.npy", np.asfortranarray(bank))
    rehash(onnx)
    refused(onnx, r"memory_bank\.npy: the bank must be stored in C order")
    np.save(onnx / "memory_bank.npy", bank[:, :-1].copy())
    rehash(onnx)
    refused(onnx, r"memory_bank\.npy: memory bank shape \(\d+, \d+\) does not match \(rows, embedding_dim")


def test_float16_bank_loads_and_scores(onnx, frames):
    reference = [Inspector(onnx).check(f).raw_score for f in frames]
    np.save(onnx / "memory_bank.npy", np.load(onnx / "memory_bank.npy").astype(np.float16))
    edit(onnx, lambda m: m["memory_bank"].update(dtype="float16"))
    rehash(onnx)
    inspector = Inspector(onnx)
    assert inspector.bank.dtype == np.float32
    np.testing.assert_allclose([inspector.check(f).raw_score for f in frames], reference, rtol=5e-3)


# -- the threshold ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e308, 0, -1])
def test_unsound_threshold_value(onnx, value):
    # 1e308 with a consistent normalization range above it: only the bank's scale can tell it is unreachable
    edit(onnx, lambda m: m["threshold"].update(value=value, **({"norm_hi": 1.5e308} if value == 1e308 else {})))
    message = refused(onnx, r"manifest\.json: threshold\.value must be a finite number in \(0, ", "apc-calibrate")
    if value == 1e308:            # finite, but beyond anything a frame can score: the bound comes from the bank
        assert "diameter bound" in message


@pytest.mark.parametrize("key, value", [("norm_lo", 1e9), ("norm_hi", 0.0), ("norm_hi", float("nan")),
                                        ("norm_lo", -1e308), ("norm_lo", float("-inf"))])
def test_inconsistent_normalization(onnx, key, value):
    edit(onnx, lambda m: m["threshold"].update({key: value}))
    refused(onnx, rf"threshold\.{key} must be a finite number in ")


def test_one_held_out_image_normalization_loads(onnx, frames):
    """norm_lo == value is what one held-out good image gives: degenerate, but the verdict stays consistent."""
    edit(onnx, lambda m: m["threshold"].update(norm_lo=m["threshold"]["value"]))
    inspector = Inspector(onnx)
    r = inspector.check(frames[0])
    assert (r.score >= 0.5) == r.is_anomalous


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0, -1.0, 1e308])
def test_threshold_override_refused(model_dir_onnx, value):
    with pytest.raises(ValueError, match="threshold must be a finite raw score in"):
        Inspector(model_dir_onnx, threshold=value)
    inspector = Inspector(model_dir_onnx)
    with pytest.raises(ValueError, match="threshold must be"):
        inspector.threshold = value


# -- preprocessing and scoring values ----------------------------------------------------------------------------

@pytest.mark.parametrize("key, value, pattern", [
    ("std", [0.0, 0.0, 0.0], r"preprocess\.std must be a list of 3 finite numbers in \[0\.001, 10\]"),
    ("mean", [0.5, float("nan"), 0.5], r"preprocess\.mean must be a list of 3 finite numbers in \[0, 1\]"),
    ("resize", [0, 0], r"preprocess\.resize must be a list of 2 integers in \[1, 8192\]"),
    ("resize", [-160, -160], r"preprocess\.resize must be a list of 2 integers in \[1, 8192\]"),
    ("resize", [60000, 60000], r"preprocess\.resize must be a list of 2 integers in \[1, 8192\]"),
    ("resize", [160.0, 160], r"preprocess\.resize must be a list of 2 integers"),
    ("crop", [200, 200], r"preprocess\.crop must lie inside preprocess\.resize \[160, 160\]"),
    ("scale", -1, r"preprocess\.scale must be a finite number in \[0\.001, 1000\]"),
    ("mode", "tile", r"preprocess\.mode must be one of 'stretch', 'pad'"),
    ("channels", "rgb", r"preprocess\.channels must be one of 'color', 'mono', 'any'"),
    ("bit_depth", 17, r"preprocess\.bit_depth must be an integer in \[8, 16\]"),
    ("bit_depth", "12", r"preprocess\.bit_depth must be an integer in \[8, 16\]"),
])
def test_bad_preprocessing(onnx, key, value, pattern):
    edit(onnx, lambda m: m["preprocess"].update({key: value}))
    refused(onnx, r"manifest\.json: " + pattern)


def test_preprocessing_that_does_not_fit_the_graph(onnx):
    """Sane values, but not the graph's input: the load-time run of the graph says so."""
    edit(onnx, lambda m: m["preprocess"].update(resize=[128, 128]))
    refused(onnx, r"backbone\.onnx does not run on a 1x3x128x128 input \(preprocess\.resize/crop")


@pytest.mark.parametrize("key, value, pattern", [
    ("map_sigma", 1e5, r"scoring\.map_sigma must be a finite number in \[0, 64\]"),
    ("map_sigma", -1, r"scoring\.map_sigma must be a finite number in \[0, 64\]"),
    ("num_neighbours", 0, r"scoring\.num_neighbours must be an integer >= 1, got 0"),
    ("num_neighbours", -3, r"scoring\.num_neighbours must be an integer >= 1, got -3"),
    ("num_neighbours", True, r"scoring\.num_neighbours must be an integer >= 1, got True"),
    ("part_only", "yes", r"scoring\.part_only must be true or false"),
    ("peak_sigma", -0.5, r"scoring\.peak_sigma must be a finite number in \[0, 8\]"),
    ("peak_sigma", float("nan"), r"scoring\.peak_sigma must be a finite number in \[0, 8\]"),
])
def test_bad_scoring_values(onnx, key, value, pattern):
    edit(onnx, lambda m: m["scoring"].update({key: value}))
    refused(onnx, r"manifest\.json: " + pattern)


def test_more_neighbours_than_bank_rows(onnx):
    rows = np.load(onnx / "memory_bank.npy").shape[0]
    edit(onnx, lambda m: m["scoring"].update(num_neighbours=rows + 1))
    refused(onnx, rf"scoring\.num_neighbours {rows + 1} must be in \[1, {rows}\]")


@pytest.mark.parametrize("key, value, pattern", [
    ("patch_grid", [10, 10], r"backbone\.onnx outputs shape \(1, \d+, 20, 20\), but .*manifest\.json says"),
    ("embedding_dim", 64, r"memory bank shape \(\d+, 128\) does not match \(rows, embedding_dim 64\)"),
    ("patch_grid", [20], r"patch_grid must be a list of 2 integers"),
])
def test_shapes_must_match_the_graph_and_bank(onnx, key, value, pattern):
    edit(onnx, lambda m: m.update({key: value}))
    refused(onnx, pattern)


# -- the manifest file itself -----------------------------------------------------------------------------------

def test_format_version_true(onnx):
    edit(onnx, lambda m: m.update(format_version=True))
    refused(onnx, r"manifest\.json: format_version must be an integer \(one of \[1\]\), got True")


def test_newer_format_version_says_upgrade(onnx):
    edit(onnx, lambda m: m.update(format_version=2))
    refused(onnx, r"format_version 2 is newer than this runtime reads .*upgrade apc-edge")


def test_older_version_upgrade_path(onnx, monkeypatch, frames):
    """A runtime that reads version 2 still loads a version-1 dir, through the version's upgrade function."""
    import apc_edge.manifest as manifest

    def v1_to_v2(raw):
        raw["scoring"].setdefault("part_only", False)     # what a version-2 field default would look like
        return raw

    monkeypatch.setattr(manifest, "FORMAT_VERSION", 2)
    monkeypatch.setattr(manifest, "UPGRADES", {1: v1_to_v2})
    inspector = Inspector(onnx)
    assert inspector.manifest.format_version == 2 and inspector.manifest.raw["format_version"] == 2
    assert np.isfinite(inspector.check(frames[0]).raw_score)


def test_deeply_nested_json(onnx):
    (onnx / "manifest.json").write_text("[" * 200000 + "]" * 200000)
    refused(onnx, rf"manifest\.json is not valid: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    deep = {"format": "apc-edge-model"}
    node = deep
    for _ in range(MAX_JSON_DEPTH + 5):                   # below Python's recursion limit, above ours
        node["x"] = {}
        node = node["x"]
    (onnx / "manifest.json").write_text(json.dumps(deep))
    refused(onnx, rf"nested deeper than {MAX_JSON_DEPTH} levels")


def test_oversized_and_duplicate_key_manifests(onnx):
    text = (onnx / "manifest.json").read_text()
    (onnx / "manifest.json").write_text(text[:-2] + ', "pad": "' + "x" * MAX_MANIFEST_BYTES + '"}')
    refused(onnx, rf"manifest\.json is \d+ bytes, more than the {MAX_MANIFEST_BYTES} a manifest may hold")
    (onnx / "manifest.json").write_text('{"threshold": {}, ' + text[1:])
    refused(onnx, r"manifest\.json is not valid JSON: duplicate key 'threshold'")


# -- file names and listing -------------------------------------------------------------------------------------

def test_bank_dropped_from_files_and_replaced(onnx):
    edit(onnx, lambda m: m["files"].pop("memory_bank.npy"))
    bank = np.load(onnx / "memory_bank.npy")
    np.save(onnx / "memory_bank.npy", bank * 0.5)
    refused(onnx, r"manifest\.json: memory_bank\.file memory_bank\.npy is not listed in files with a sha256")


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_bank_outside_the_dir(onnx, tmp_path, where):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(onnx / "memory_bank.npy", outside / "bank.npy")
    name = "../outside/bank.npy" if where == "relative" else str(outside / "bank.npy")

    def point_outside(m):                 # a consistent edit: block, listing and hash
        m["memory_bank"]["file"] = name
        m["files"][name] = sha256_file(outside / "bank.npy")

    edit(onnx, point_outside)
    refused(onnx, r"manifest\.json: files '.*bank\.npy' is not a plain file name.*could reach outside the model dir")
    edit(onnx, lambda m: m["files"].pop(name))
    refused(onnx, r"manifest\.json: memory_bank\.file '.*bank\.npy' is not a plain file name")


def test_graph_outside_the_dir(ov, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("backbone.xml", "backbone.bin"):
        shutil.copy(ov / name, outside / name)
    edit(ov, lambda m: m["graph"].update(file="../outside/backbone.xml"))
    refused(ov, r"manifest\.json: graph\.file '\.\./outside/backbone\.xml' is not a plain file name")


def test_ir_weights_dropped_from_files_and_altered(ov):
    edit(ov, lambda m: m["files"].pop("backbone.bin"))
    data = bytearray((ov / "backbone.bin").read_bytes())
    data[1000:1004] = b"\x7f\x7f\x7f\x7f"
    (ov / "backbone.bin").write_bytes(bytes(data))
    refused(ov, r"manifest\.json: graph\.file backbone\.xml needs its weights backbone\.bin listed in files")


def test_altered_ir_weights_are_refused(ov):
    with open(ov / "backbone.bin", "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x7f\x7f\x7f\x7f")
    refused(ov, r"backbone\.bin was altered")


def test_a_replaced_graph_with_rehashed_files_is_refused(onnx):
    """A valid graph of the right shape, but not the exported one (weights rescaled, hashes recomputed): only
    the probe fingerprint can tell, and it does."""
    import onnx as onnx_lib
    from onnx import numpy_helper

    model = onnx_lib.load(str(onnx / "backbone.onnx"))
    for init in model.graph.initializer[:6]:
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))
    onnx_lib.save(model, str(onnx / "backbone.onnx"))
    rehash(onnx)
    refused(onnx, r"backbone\.onnx does not compute what was exported: .* differ from graph\.probe")


def test_model_dirs_without_a_probe_still_load(onnx):
    edit(onnx, lambda m: m["graph"].pop("probe"))
    assert Inspector(onnx).manifest.graph.probe is None


@pytest.mark.parametrize("probe, pattern", [
    ({"channel_means": [1.0, 2.0]}, r"graph\.probe\.channel_means has 2 values, but embedding_dim is"),
    ({"channel_means": "x"}, r"graph\.probe\.channel_means must be a list"),
    ({"channel_means": [float("nan")] * 3}, r"graph\.probe\.channel_means must be a list of 3 finite numbers"),
])
def test_bad_probe_blocks(onnx, probe, pattern):
    edit(onnx, lambda m: m["graph"].update(probe=probe))
    refused(onnx, pattern)


def test_onnx_external_data_must_be_listed(onnx):
    """An ONNX graph whose weights live in an external-data file: listed and hashed it loads; unlisted it is
    absent from the private copy ONNX Runtime reads, so the load fails (nothing unverified is read)."""
    import onnx as onnx_lib

    model = onnx_lib.load(str(onnx / "backbone.onnx"))
    onnx_lib.save(model, str(onnx / "backbone.onnx"), save_as_external_data=True, location="weights.data",
                  size_threshold=0)
    edit(onnx, lambda m: m["files"].update({"weights.data": "0" * 64}))
    rehash(onnx)
    refused(onnx, r"ONNX Runtime could not load .*backbone\.onnx")       # not named in graph.external_data
    edit(onnx, lambda m: m["graph"].update(external_data=["weights.data"]))
    assert np.isfinite(Inspector(onnx).check(np.full((160, 160, 3), 90, np.uint8)).raw_score)
    edit(onnx, lambda m: m["graph"].update(external_data=["../weights.data"]))
    refused(onnx, r"graph\.external_data '\.\./weights\.data' is not a plain file name")


def test_symlink_to_a_file_outside_the_dir(onnx, tmp_path):
    outside = tmp_path / "elsewhere.npy"
    shutil.copy(onnx / "memory_bank.npy", outside)        # same bytes: the hash alone would pass it
    (onnx / "memory_bank.npy").unlink()
    os.symlink(outside, onnx / "memory_bank.npy")
    refused(onnx, r"memory_bank\.npy is a symbolic link")


def test_symlinked_manifest(onnx, tmp_path):
    shutil.move(onnx / "manifest.json", tmp_path / "real.json")
    os.symlink(tmp_path / "real.json", onnx / "manifest.json")
    refused(onnx, r"manifest\.json must be a regular file")


def test_unlisted_files_are_ignored(onnx, frames):
    (onnx / "notes.txt").write_text("not referenced, never opened")
    (onnx / "stray.npy").write_bytes(b"\0" * 10)
    assert np.isfinite(Inspector(onnx).check(frames[0]).raw_score)


# -- the HNSW index ---------------------------------------------------------------------------------------------

def _hnsw_layout(model: Path) -> tuple[int, int]:
    import struct

    header = struct.unpack_from("<QQQQQQiIQQQdQ", (model / "index.hnsw").read_bytes(), 0)
    return header[2], header[3]          # element count, bytes per element


def test_corrupted_index_neighbour_id(hnsw):
    """The byte pattern that made knn_query segfault: a level-0 neighbour id beyond the element count."""
    import struct

    count, size = _hnsw_layout(hnsw)
    data = bytearray((hnsw / "index.hnsw").read_bytes())
    struct.pack_into("<I", data, 96 + 5 * size + 4, count + 7)       # element 5, first neighbour
    (hnsw / "index.hnsw").write_bytes(bytes(data))
    rehash(hnsw)
    refused(hnsw, rf"index\.hnsw: a level 0 link list names neighbour {count + 7}, but the index holds {count}")


def test_corrupted_index_header(hnsw):
    import struct

    data = bytearray((hnsw / "index.hnsw").read_bytes())
    struct.pack_into("<I", data, 52, 10 ** 6)                         # the entry point
    (hnsw / "index.hnsw").write_bytes(bytes(data))
    rehash(hnsw)
    refused(hnsw, r"index\.hnsw: max level \d+ \(allowed 0\.\.64\) or entry point 1000000 \(allowed below \d+\)")


def test_foreign_index_of_the_same_shape(hnsw):
    bank = np.load(hnsw / "memory_bank.npy")
    m = json.loads((hnsw / "manifest.json").read_text())
    other = np.random.default_rng(0).standard_normal(bank.shape).astype(np.float32)
    HnswIndex.build(other, M=m["index"]["M"]).save(hnsw / "index.hnsw")
    rehash(hnsw)
    refused(hnsw, r"index\.hnsw was not built from this memory bank: the vectors it stores differ")


def test_foreign_index_of_another_size_or_m(hnsw):
    bank = np.load(hnsw / "memory_bank.npy")
    m = json.loads((hnsw / "manifest.json").read_text())
    HnswIndex.build(bank[:-1], M=m["index"]["M"]).save(hnsw / "index.hnsw")
    rehash(hnsw)
    refused(hnsw, rf"HNSW index .*index\.hnsw holds {len(bank) - 1} vectors but the memory bank has {len(bank)}")
    HnswIndex.build(bank, M=m["index"]["M"] * 2).save(hnsw / "index.hnsw")
    rehash(hnsw)
    refused(hnsw, rf"header M {m['index']['M'] * 2} does not match the manifest's index\.M {m['index']['M']}")


def test_index_of_the_bank_rebuilt_loads_and_scores_like_exact(hnsw, frames):
    bank = np.load(hnsw / "memory_bank.npy")
    m = json.loads((hnsw / "manifest.json").read_text())
    HnswIndex.build(bank, M=m["index"]["M"], seed=7).save(hnsw / "index.hnsw")     # another build, same bank
    rehash(hnsw)
    a, b = Inspector(hnsw), Inspector(hnsw, index="exact")
    for f in frames:
        assert a.check(f).raw_score == pytest.approx(b.check(f).raw_score, rel=0.01)


@pytest.mark.parametrize("key, value, pattern", [("M", 0, r"index\.M must be an integer in \[2, 1024\]"),
                                                 ("ef", 0, r"index\.ef must be an integer in \[1, 10000\]"),
                                                 ("file", "../index.hnsw", r"index\.file '\.\./index\.hnsw'"),
                                                 ("space", "ip", r"index\.space must be one of 'l2'")])
def test_bad_index_block(hnsw, key, value, pattern):
    edit(hnsw, lambda m: m["index"].update({key: value}))
    refused(hnsw, pattern)


# -- arithmetic: a verdict never rests on a number that is not finite ------------------------------------------

def scale_graph_output(model: Path, factor: float, times: int = 1) -> None:
    """Rewrite the ONNX graph: embedding x (1 + factor x max(image)) ** times, so a zero input (the load-time
    check) gives the true output and a real frame one scaled by about (2 x factor) ** times; then re-hash.
    The probe fingerprint would refuse such a graph at load (test_a_replaced_graph_with_rehashed_files_is_refused),
    so it is dropped here, as in a model dir from before it was recorded: what is tested is the arithmetic
    guard of check(), for frames whose distances overflow."""
    import onnx
    from onnx import helper, numpy_helper

    path = model / "backbone.onnx"
    g = onnx.load(str(path))
    out = g.graph.output[0].name
    for node in g.graph.node:
        node.output[:] = [f"{o}_raw" if o == out else o for o in node.output]
    g.graph.initializer.extend([numpy_helper.from_array(np.array(factor, np.float32), "scale_factor"),
                                numpy_helper.from_array(np.array(1.0, np.float32), "scale_one")])
    g.graph.node.extend([
        helper.make_node("ReduceMax", [g.graph.input[0].name], ["scale_max"], keepdims=0),
        helper.make_node("Mul", ["scale_max", "scale_factor"], ["scale_mul"]),
        helper.make_node("Add", ["scale_mul", "scale_one"], ["scale_gain"]),
        *[helper.make_node("Mul", [f"{out}_raw" if i == 0 else f"scaled_{i}", "scale_gain"],
                           [out if i == times - 1 else f"scaled_{i + 1}"]) for i in range(times)],
    ])
    onnx.save(g, str(path))
    edit(model, lambda m: m["graph"].pop("probe"))
    rehash(model)


def test_non_finite_score_raises_score_error(onnx, frames):
    scale_graph_output(onnx, 1e20)           # finite embeddings whose squared distances overflow float32
    inspector = Inspector(onnx)              # loads: the zero-input check sees the true output
    with pytest.raises(ScoreError, match=r"the image score is inf"):
        inspector.check(frames[0])
    with pytest.raises(ValueError):          # callers that catch bad frames catch it too
        inspector.check(frames[1], with_map=False)


def test_non_finite_graph_output_raises_score_error(onnx, frames):
    scale_graph_output(onnx, 1e30, times=2)  # a frame's embedding overflows to inf
    with pytest.raises(ScoreError, match="the graph output NaN or inf for this frame"):
        Inspector(onnx).check(frames[0])


def test_apc_inspect_logs_a_non_finite_score_as_error(onnx, synthetic_category, tmp_path):
    from apc_edge.cli.inspect import main

    scale_graph_output(onnx, 1e20)
    out = tmp_path / "out"
    folder = synthetic_category / "test" / "spot"
    # exit 3: frames were met and none could be judged (never a silent "0 errors", exit 0)
    assert main([str(onnx), "--folder", str(folder), "--out", str(out), "-q"]) == 3
    records = [json.loads(line) for line in (out / "verdicts.jsonl").read_text().splitlines()]
    judged = [r for r in records if r.get("file")]
    assert len(judged) == len(list(folder.glob("*.png"))) > 0
    assert all(r["verdict"] == "ERROR" and r["error_kind"] == "score" and "image score is inf" in r["error"]
               for r in judged)
    assert not any(r.get("verdict") in ("OK", "NG") for r in records)


# -- apc-calibrate: the tool that sets a threshold checks it as the runtime will ---------------------------------

def test_calibrate_repairs_a_model_dir_with_a_nan_threshold(onnx, synthetic_category, capsys):
    from apc_edge.calibration.cli_calibrate import main as calibrate_main

    edit(onnx, lambda m: m["threshold"].update(value=float("nan")))
    refused(onnx, r"threshold\.value")
    goods = synthetic_category / "test" / "good"
    assert calibrate_main([str(onnx), "--good", str(goods), "--max-false-alarm", "0.25"]) == 0
    assert "was unusable: " in capsys.readouterr().out
    inspector = Inspector(onnx)
    assert np.isfinite(inspector.threshold) and inspector.threshold > 0


def test_calibrate_refuses_an_unreachable_threshold_before_writing(onnx, synthetic_category, capsys):
    from apc_edge.calibration.cli_calibrate import main as calibrate_main

    scale_graph_output(onnx, 1e3)            # real frames score far beyond what this bank's scale allows
    before = (onnx / "manifest.json").read_bytes()
    goods = synthetic_category / "test" / "good"
    assert calibrate_main([str(onnx), "--good", str(goods), "--max-false-alarm", "0.25"]) == 2
    assert re.search(r"new threshold block\): threshold\.value must be a finite number in \(0, .*diameter bound",
                     capsys.readouterr().err)
    assert (onnx / "manifest.json").read_bytes() == before


def test_write_manifest_refuses_an_unsound_manifest(onnx):
    m = json.loads((onnx / "manifest.json").read_text())
    m["threshold"]["value"] = float("nan")
    with pytest.raises(ModelDirError, match=r"threshold\.value"):
        write_manifest(onnx, m)
    m["threshold"]["value"] = 1.0
    m["files"] = ["../evil.npy"]
    with pytest.raises(ModelDirError, match=r"not a plain file name"):
        write_manifest(onnx, m)
