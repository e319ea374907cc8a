"""Turn a training run dir into a deployable model dir (ONNX or OpenVINO IR).

Only image -> patch embeddings goes into the graph; the memory bank is written
beside it as ``memory_bank.npy``, so the graph does not grow with the bank.

Example::

    export_model("runs/bottle", "models/bottle", target="openvino")
"""
from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from apc_edge.manifest import write_manifest

from .patchcore import load_bank, load_run

TARGETS = ("openvino", "onnx")
ONNX_OPSET = 17


def export_onnx(embedder: torch.nn.Module, input_hw: tuple[int, int], path: Path) -> None:
    """Write the embedder as a single-file ONNX graph (input ``image``, output ``embedding``)."""
    dummy = torch.zeros(1, 3, *input_hw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # the TorchScript exporter is the one we want
        torch.onnx.export(embedder, (dummy,), str(path), input_names=["image"], output_names=["embedding"],
                          opset_version=ONNX_OPSET, dynamo=False, do_constant_folding=True)


def onnx_to_openvino(onnx_path: Path, xml_path: Path, compress_to_fp16: bool = False) -> None:
    """Convert an ONNX graph to OpenVINO IR (``.xml`` + ``.bin``), FP32 unless asked otherwise."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(xml_path), compress_to_fp16=compress_to_fp16)


def graph_files(target: str) -> tuple[str, list[str]]:
    if target == "openvino":
        return "backbone.xml", ["backbone.xml", "backbone.bin"]
    return "backbone.onnx", ["backbone.onnx"]


def export_model(run_dir: str | Path, out_dir: str | Path, target: str = "openvino", overwrite: bool = False) -> dict:
    """Export ``run_dir`` to ``out_dir``; returns the manifest written.

    The dir is assembled in a temporary sibling and moved into place at the end,
    so a failed export never leaves a half-written model dir (nor clobbers an old one
    unless ``overwrite``).
    """
    if target not in TARGETS:
        raise ValueError(f"unknown export target {target!r}; choose one of {', '.join(TARGETS)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists; pass --overwrite to replace it")
    t0 = time.perf_counter()
    embedder, info, pre = load_run(run_dir)
    bank = load_bank(run_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        onnx_path = tmp / "backbone.onnx"
        export_onnx(embedder, pre.input_hw, onnx_path)
        main_file, files = graph_files(target)
        if target == "openvino":
            onnx_to_openvino(onnx_path, tmp / main_file)
            onnx_path.unlink()
        np.save(tmp / "memory_bank.npy", bank.astype(np.float32), allow_pickle=False)
        files.append("memory_bank.npy")
        manifest = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "backbone": info["backbone"],
            "graph": {"file": main_file, "format": target, "precision": "fp32", "input": "image",
                      "output": "embedding", "input_shape": [1, 3, *pre.input_hw]},
            "preprocess": info["preprocess"],
            "patch_grid": info["patch_grid"],
            "embedding_dim": info["embedding_dim"],
            "memory_bank": {"file": "memory_bank.npy", "size": int(bank.shape[0]), "dtype": "float32"},
            "index": {"type": "exact"},
            "scoring": info["scoring"],
            "threshold": info["threshold"],
            "training": info["training"],
            "export": {"seconds": None, "torch": torch.__version__},
            "files": files,
        }
        for key in ("fine_tuning", "few_shot_anomalies"):
            if key in info:
                manifest[key] = info[key]
        manifest["export"]["seconds"] = round(time.perf_counter() - t0, 2)
        write_manifest(tmp, manifest)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.replace(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
