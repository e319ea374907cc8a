"""Shared fixtures: a small synthetic category, a trained run and exported model dirs.

Real data is read from ``../shared/data`` beside the repo; tests that need it skip
with a clear message when it is absent.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def real_category(name: str) -> Path:
    """Path of a real data category, or skip the test with a message naming what is missing."""
    path = SHARED_DATA / name
    if not (path / "train" / "good").is_dir():
        pytest.skip(f"real data {path} not found (it lives in ../shared/data beside the repo): test skipped")
    return path


@pytest.fixture(scope="session")
def synthetic_category(tmp_path_factory) -> Path:
    from apc_edge.calibration.synthetic import write_synthetic_category

    return write_synthetic_category(tmp_path_factory.mktemp("data") / "washer", n_train=16, n_test_good=4,
                                    n_test_defect=4, seed=1)


@pytest.fixture(scope="session")
def trained_run(synthetic_category, tmp_path_factory) -> Path:
    from apc_edge.export.patchcore import TrainConfig, fit_patchcore

    run = tmp_path_factory.mktemp("run") / "washer"
    fit_patchcore(synthetic_category, run, TrainConfig(backbone="mobilenet_v2", resize=(160, 160),
                                                       coreset_ratio=0.25, holdout=0.25))
    return run


PAD = dict(resize=(160, 224), resize_mode="pad", scale=0.5)      # 256x256 washers -> 128x128 on the canvas


@pytest.fixture(scope="session")
def pad_run(synthetic_category, tmp_path_factory) -> Path:
    """A run in pad mode (the part scaled by 0.5 and centred on a 160x224 canvas)."""
    from apc_edge.export.patchcore import TrainConfig, fit_patchcore

    run = tmp_path_factory.mktemp("run") / "washer_pad"
    fit_patchcore(synthetic_category, run, TrainConfig(coreset_ratio=0.25, holdout=0.25, **PAD))
    return run


@pytest.fixture(scope="session")
def model_dir_pad(pad_run, tmp_path_factory) -> Path:
    """The pad-mode run exported for OpenVINO with exact search."""
    from apc_edge.export.model_export import ExportOptions, export_model

    out = tmp_path_factory.mktemp("models") / "pad"
    export_model(pad_run, out, options=ExportOptions(index="exact"))
    return out


@pytest.fixture(scope="session")
def model_dir_openvino(trained_run, tmp_path_factory) -> Path:
    from apc_edge.export.model_export import export_model

    out = tmp_path_factory.mktemp("models") / "ov"
    export_model(trained_run, out, target="openvino")
    return out


@pytest.fixture(scope="session")
def model_dir_onnx(trained_run, tmp_path_factory) -> Path:
    from apc_edge.export.model_export import export_model

    out = tmp_path_factory.mktemp("models") / "onnx"
    export_model(trained_run, out, target="onnx")
    return out


@pytest.fixture(scope="session")
def frames_dir(synthetic_category, tmp_path_factory) -> Path:
    """Six colour test images (good and spot), named in replay order."""
    folder = tmp_path_factory.mktemp("frames")
    test = synthetic_category / "test"
    files = sorted((test / "good").glob("*.png"))[:3] + sorted((test / "spot").glob("*.png"))[:3]
    for i, f in enumerate(files):
        shutil.copy(f, folder / f"{i:02d}_{f.parent.name}.png")
    return folder


@pytest.fixture(scope="session")
def model_dir_hnsw(trained_run, tmp_path_factory) -> Path:
    """An ONNX model dir with an HNSW index (``index.hnsw``)."""
    from apc_edge.export.hnsw_build import HnswTargets
    from apc_edge.export.model_export import ExportOptions, export_model

    out = tmp_path_factory.mktemp("models") / "hnsw"
    export_model(trained_run, out, options=ExportOptions(target="onnx", index="hnsw",
                                                         hnsw=HnswTargets(min_recall=0.9, max_score_change=0.01)))
    return out


@pytest.fixture(scope="session")
def real_data():
    """``real_data("bottle")`` -> path of a real category, or skip with a clear message."""
    return real_category
