"""Rebuild the memory bank with the graph that will run: same coreset patches, new embeddings.

A compressed (INT8) graph moves every embedding a little; scored against an
FP32 bank, good patches then look several times farther from the bank than
they are (measured on bottle: held-out good scores up by 50-70 %). So the
export re-embeds the bank images with the compressed graph and keeps the same
coreset patches. Runs record those patches in ``coreset_ids.npy``; for older
runs they are recovered by recomputing the training features and matching rows.

Example::

    ids = coreset_patch_ids(run_dir, bank, bank_paths)            # (N,) flat patch indexes
    new_bank = embed_patches(backend, pre, bank_paths, ids, grid)  # (N, D) from the INT8 graph
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from apc_edge.backends import Backend
from apc_edge.index import ExactIndex
from apc_edge.preprocess import Preprocessor, load_image
from apc_edge.progress import Progress

from .patchcore import collect_patches, load_coreset_ids, load_run

# A recovered row must match a training feature to this relative distance.
MATCH_TOLERANCE = 1e-4


def coreset_patch_ids(run_dir: str | Path, bank: np.ndarray, bank_paths: list[Path]) -> np.ndarray:
    """Flat patch index of each bank row (image * h * w + position) over ``bank_paths``."""
    ids = load_coreset_ids(run_dir)
    if ids is not None:
        if ids.shape != (bank.shape[0],):
            raise ValueError(f"{run_dir}/coreset_ids.npy has shape {ids.shape}, the bank has {bank.shape[0]} rows")
        return ids.astype(np.int64)
    return recover_patch_ids(run_dir, bank, bank_paths)


def recover_patch_ids(run_dir: str | Path, bank: np.ndarray, bank_paths: list[Path]) -> np.ndarray:
    """For runs without ``coreset_ids.npy``: recompute the training features and find each bank row."""
    print(f"apc-export: {run_dir} has no coreset_ids.npy (made before it was stored); recomputing the "
          f"training features of {len(bank_paths)} images to find the bank patches", file=sys.stderr)
    embedder, info, pre = load_run(run_dir)
    feats = collect_patches(embedder, pre, bank_paths, int(info.get("config", {}).get("batch_size", 8)))
    bank = np.ascontiguousarray(bank, np.float32)
    wanted = {row.tobytes(): j for j, row in enumerate(bank)}
    ids = np.full(bank.shape[0], -1, np.int64)
    for i, row in enumerate(feats):
        j = wanted.get(row.tobytes())
        if j is not None and ids[j] < 0:
            ids[j] = i
    missing = np.flatnonzero(ids < 0)
    if missing.size:                                   # not bit-identical: nearest training feature
        dist, near = ExactIndex(feats).search(bank[missing], k=1)
        scale = np.linalg.norm(bank[missing], axis=1) + 1e-12
        bad = dist[:, 0] / scale > MATCH_TOLERANCE
        if bad.any():
            raise ValueError(f"{int(bad.sum())} memory-bank rows of {run_dir} match no training feature of "
                             f"{len(bank_paths)} bank images (data dir changed?); re-run apc-train")
        ids[missing] = near[:, 0]
    return ids


def embed_patches(backend: Backend, pre: Preprocessor, paths: list[Path], patch_ids: np.ndarray,
                  grid: tuple[int, int], label: str = "bank") -> np.ndarray:
    """Embeddings of the given flat patch indexes, computed by ``backend`` image by image."""
    per_image = grid[0] * grid[1]
    image_of = patch_ids // per_image
    if patch_ids.size and (patch_ids.min() < 0 or image_of.max() >= len(paths)):
        raise ValueError(f"coreset patch ids point outside the {len(paths)} bank images")
    order = np.argsort(image_of, kind="stable")
    out = None
    wanted = np.unique(image_of)
    with Progress(len(wanted), label) as bar:
        pos = 0
        for img in wanted:
            emb = backend.run(pre(load_image(paths[img])))[0]
            rows = emb.reshape(emb.shape[0], -1).T
            if out is None:
                out = np.empty((patch_ids.size, emb.shape[0]), np.float32)
            end = pos
            while end < order.size and image_of[order[end]] == img:
                end += 1
            sel = order[pos:end]
            out[sel] = rows[patch_ids[sel] % per_image]
            pos = end
            bar.update(1)
    return out
