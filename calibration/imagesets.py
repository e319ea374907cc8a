"""Which images calibrate what: INT8 calibration sets, held-out goods, extra image lists.

A training run records its data dir and the good images it kept out of the
memory bank (``training.data_dir``, ``training.holdout_images``). Quantization
calibrates on the bank images (the ones the model was fitted on); the accuracy
guard, the HNSW parameter sweep and threshold calibration use the held-out ones,
which the bank never saw.

Example::

    bank_imgs, held_out = training_images(run_info["training"])            # lists of Paths
    calib = calibration_subset(bank_imgs, count=300, seed=0)               # at most 300, deterministic
    extra = collect_images(["more_good/", "part_17.png"])                  # files and folders
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from .dataset import IMAGE_EXTS, DatasetError, MVTecCategory, list_images

DEFAULT_CALIBRATION_COUNT = 300


def data_dir_of(training: dict, data_dir: str | Path | None = None) -> Path:
    """The training data dir: ``data_dir`` if given, else the one the run recorded."""
    if data_dir is not None:
        return Path(data_dir)
    recorded = training.get("data_dir")
    if not recorded:
        raise DatasetError("the run does not record its data dir (training.data_dir); pass --data DIR")
    path = Path(recorded)
    if not path.is_dir():
        raise DatasetError(f"the run's data dir {path} does not exist here; pass --data DIR to point at it")
    return path


def training_images(training: dict, data_dir: str | Path | None = None) -> tuple[list[Path], list[Path]]:
    """(bank images, held-out images) of a run: ``DATA/train/good`` split by the run's holdout list.

    Raises ``DatasetError`` naming the file when a held-out image recorded by the
    run is not in ``train/good`` (a different or changed data dir).
    """
    root = data_dir_of(training, data_dir)
    data = MVTecCategory(root)
    goods = data.train_good()
    by_name = {data.image_key(p): p for p in goods}
    names = list(training.get("holdout_images") or [])
    missing = [n for n in names if n not in by_name]
    if missing:
        raise DatasetError(f"held-out image {missing[0]} recorded by the run is not in {root}/train/good "
                           f"({len(missing)} of {len(names)} missing): wrong --data dir?")
    held = set(names)
    return [p for p in goods if data.image_key(p) not in held], [by_name[n] for n in names]


def threshold_image_indexes(training: dict, bank_paths: list[Path], data_dir: str | Path | None = None) -> list[int]:
    """Positions in ``bank_paths`` of the bank images a run scored leave-one-out for its threshold (named by
    their path below the goods folder, see ``MVTecCategory.image_key``; runs before it: the file name)."""
    data = MVTecCategory(data_dir_of(training, data_dir)) if bank_paths else None
    position = {data.image_key(p): i for i, p in enumerate(bank_paths)} if data else {}
    names = list(training.get("threshold_images") or [])
    missing = [n for n in names if n not in position]
    if missing:
        raise DatasetError(f"threshold image {missing[0]} recorded by the run is not among its bank images "
                           f"({len(missing)} of {len(names)} missing): wrong --data dir?")
    return [position[n] for n in names]


def calibration_subset(paths: list[Path], count: int | None = None, seed: int = 0) -> list[Path]:
    """At most ``count`` (default ``min(300, all)``) of ``paths``, drawn without replacement, in name order."""
    if not paths:
        raise DatasetError("no images to calibrate on")
    count = DEFAULT_CALIBRATION_COUNT if count is None else int(count)
    if count < 1:
        raise ValueError(f"calibration image count must be at least 1, got {count}")
    if count >= len(paths):
        return list(paths)
    pick = np.sort(np.random.default_rng(seed).choice(len(paths), size=count, replace=False))
    return [paths[i] for i in pick]


def collect_images(items: Iterable[str | Path]) -> list[Path]:
    """Image files named directly or found (not recursively) in the named folders, in order."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise DatasetError(f"folder {p} holds no images ({', '.join(sorted(IMAGE_EXTS))})")
            out.extend(found)
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_EXTS:
                raise DatasetError(f"{p} is not an image file ({', '.join(sorted(IMAGE_EXTS))})")
            out.append(p)
        else:
            raise DatasetError(f"image or folder {p} does not exist")
    return out
