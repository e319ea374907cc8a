"""Model-dir manifest: what a model dir holds, and proof that it was not altered.

A model dir is data, never code: ``manifest.json`` plus IR/ONNX, ``.npy`` arrays
and (optionally) an hnswlib index. Every file carries a sha256 in the manifest;
:func:`load_manifest` refuses a dir whose files are missing or changed.

Example::

    manifest = load_manifest("models/bottle")      # raises ModelDirError on any problem
    bank = load_array(Path("models/bottle"), manifest["memory_bank"]["file"])
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "apc-edge-model"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "graph", "preprocess", "patch_grid", "embedding_dim",
                 "memory_bank", "index", "scoring", "threshold", "files")


class ModelDirError(ValueError):
    """A model dir is missing, incomplete, altered or of an unknown format."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_manifest(model_dir: str | Path, verify: bool = True) -> dict:
    """Read ``manifest.json`` and (by default) verify the sha256 of every file it lists."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirError(f"model dir {model_dir} does not exist or is not a directory")
    path = model_dir / MANIFEST_NAME
    if not path.is_file():
        raise ModelDirError(f"{model_dir} has no {MANIFEST_NAME}: not an apc-edge model dir (run apc-export first)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise ModelDirError(f"{path} must hold a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ModelDirError(f"{path} lacks required keys: {', '.join(missing)}")
    if manifest["format"] != FORMAT_NAME:
        raise ModelDirError(f"{path}: format is {manifest['format']!r}, expected {FORMAT_NAME!r}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise ModelDirError(f"{path}: format_version {manifest['format_version']} is not supported "
                            f"(this runtime reads version {FORMAT_VERSION})")
    if verify:
        verify_files(model_dir, manifest["files"])
    return manifest


def verify_files(model_dir: Path, files: dict) -> None:
    """Check that each listed file exists and has its recorded sha256."""
    if not isinstance(files, dict) or not files:
        raise ModelDirError(f"{model_dir / MANIFEST_NAME}: 'files' must map file names to sha256")
    for name, expected in files.items():
        p = model_dir / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ModelDirError(f"manifest lists a file outside the model dir: {name!r}")
        if not p.is_file():
            raise ModelDirError(f"model dir {model_dir} is incomplete: {name} is missing")
        actual = sha256_file(p)
        if actual != expected:
            raise ModelDirError(f"{p} was altered: sha256 {actual[:16]}... does not match the manifest's "
                                f"{str(expected)[:16]}...; re-export the model dir")


def write_manifest(model_dir: str | Path, manifest: dict) -> Path:
    """Hash every file named in ``manifest['files']`` (keys) and write ``manifest.json``."""
    model_dir = Path(model_dir)
    manifest = dict(manifest)
    manifest["format"] = FORMAT_NAME
    manifest["format_version"] = FORMAT_VERSION
    manifest["files"] = {name: sha256_file(model_dir / name) for name in sorted(manifest["files"])}
    path = model_dir / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def load_array(model_dir: Path, name: str) -> np.ndarray:
    """Load a ``.npy`` file from a model dir without ever unpickling."""
    try:
        return np.load(model_dir / name, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ModelDirError(f"cannot read array {model_dir / name}: {exc}") from None
