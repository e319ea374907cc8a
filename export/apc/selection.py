"""Choosing the few real anomalies AnomalousPatchCore trains on, reproducibly.

The N anomalies come from the category's ``test/<defect type>/`` folders, spread as evenly as possible over
the defect types (types with too few usable images hand their share to the others), chosen with a seeded
generator from the sorted file lists. Only images with a non-empty mask in ``ground_truth/`` are usable:
segmentation and CutPaste need the defect's pixels. The chosen images must then be left out of evaluation;
their keys (``<type>/<file name>``) go into ``run.json`` and the manifest, where ``apc-eval`` skips them.

Example::

    sel = select_anomalies("../shared/data/bottle", 10, seed=0)
    sel.keys          # ['broken_large/003.png', ...]
    sel.per_type      # {'broken_large': 4, 'broken_small': 3, 'contamination': 3}
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from apc_edge.calibration.dataset import DatasetError, MVTecCategory, Sample


@dataclass(frozen=True)
class AnomalySelection:
    """The chosen anomalous samples and how they were chosen."""

    samples: tuple[Sample, ...]
    seed: int
    n_available: dict[str, int]       # usable (masked) anomalies per defect type
    source: str | None = None         # a folder (--anomalies-dir), or None: the category's test/

    @property
    def keys(self) -> list[str]:
        return [s.key for s in self.samples]

    @property
    def per_type(self) -> dict[str, int]:
        counts = dict.fromkeys(self.n_available, 0)
        for s in self.samples:
            counts[s.defect_type] += 1
        return counts

    def to_dict(self) -> dict:
        """The ``few_shot_anomalies`` block of ``run.json`` / the manifest."""
        if self.source is not None:
            masked = [s.key for s in self.samples if s.mask_path is not None]
            return {"images": self.keys, "folder": self.source, "n": len(self.samples), "with_mask": masked,
                    "rule": "every image of the folder; without a mask only the cls and rec tasks train on it"}
        return {"images": self.keys, "seed": self.seed, "n": len(self.samples), "per_type": self.per_type,
                "n_available": dict(self.n_available),
                "rule": "uniform per defect type among test images with a non-empty mask"}


def mask_is_set(sample: Sample) -> bool:
    if sample.mask_path is None:
        return False
    m = cv2.imread(str(sample.mask_path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise DatasetError(f"cannot read mask {sample.mask_path}")
    return bool((m > 127).any())


def usable_anomalies(data: MVTecCategory) -> dict[str, list[Sample]]:
    """Anomalous test samples with a non-empty mask, per defect type (sorted by file name)."""
    if not (data.root / "test").is_dir():
        raise DatasetError(f"{data.root} has no test/ folder: few-shot anomalies are taken from "
                           "test/<defect type>/ (MVTec layout)")
    types = data.defect_types()
    if not types:
        raise DatasetError(f"{data.root / 'test'} holds no defect-type folders besides good/: "
                           "there are no anomalies to fine-tune with")
    by_type: dict[str, list[Sample]] = {t: [] for t in types}
    for s in data.test_samples():
        if s.is_anomalous and mask_is_set(s):
            by_type[s.defect_type].append(s)
    if not any(by_type.values()):
        raise DatasetError(f"{data.root}: no anomalous test image has a non-empty mask; AnomalousPatchCore needs "
                           f"masks at ground_truth/<defect type>/<image stem>_mask.png")
    return by_type


def split_quota(n: int, capacity: dict[str, int], rng: np.random.Generator) -> dict[str, int]:
    """Spread ``n`` over the keys of ``capacity`` as evenly as the capacities allow.

    Water-filling: every key gets ``min(capacity, L)`` for the highest level ``L`` that does not exceed
    ``n``; the few left over go, one each, to randomly chosen keys that still have room.
    """
    level = 0
    while sum(min(c, level + 1) for c in capacity.values()) <= n and level < max(capacity.values()):
        level += 1
    quota = {t: min(c, level) for t, c in capacity.items()}
    left = n - sum(quota.values())
    room = [t for t, c in capacity.items() if c > level]
    for i in rng.permutation(len(room))[:left]:
        quota[room[i]] += 1
    return quota


def select_anomalies(data: MVTecCategory | str | Path, n: int, seed: int = 0) -> AnomalySelection:
    """Pick ``n`` anomalous test images, uniformly per defect type, reproducibly for ``seed``.

    Raises ``ValueError`` (``DatasetError``) naming the problem: no ``test/``, no defect types, no masks,
    or ``n`` larger than the usable anomalies.
    """
    data = data if isinstance(data, MVTecCategory) else MVTecCategory(data)
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"the number of few-shot anomalies must be a positive integer, got {n!r}")
    by_type = usable_anomalies(data)
    capacity = {t: len(v) for t, v in by_type.items()}
    total = sum(capacity.values())
    if n > total:
        detail = ", ".join(f"{t} {c}" for t, c in capacity.items())
        raise ValueError(f"--anomalies {n} is larger than the {total} anomalous test images with a non-empty mask "
                         f"in {data.root / 'test'} ({detail})")
    rng = np.random.default_rng(seed)
    quota = split_quota(int(n), capacity, rng)
    chosen: list[Sample] = []
    for t, samples in by_type.items():
        if quota[t]:
            idx = np.sort(rng.choice(len(samples), size=quota[t], replace=False))
            chosen += [samples[i] for i in idx]
    return AnomalySelection(tuple(chosen), int(seed), capacity)


MASK_SUFFIXES = ("", "_mask")


def folder_anomalies(folder: str | Path, masks: str | Path | None = None) -> AnomalySelection:
    """Every defect image in ``folder`` (not recursive), e.g. ``apc-review --export DIR``'s ``DIR/defect``.

    Masks: in ``masks`` (default: ``<folder>_masks`` beside it, e.g. ``defect_masks``) under the image's
    name or ``<stem>_mask.png``; an image without one (or with an empty one) trains only the tasks that
    need no mask (classification and reconstruction) and is never a CutPaste source.
    """
    from apc_edge.calibration.dataset import list_images

    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"--anomalies-dir {folder} does not exist")
    images = list_images(folder)
    if not images:
        raise DatasetError(f"--anomalies-dir {folder} holds no images")
    mask_dir = Path(masks) if masks is not None else folder.with_name(folder.name + "_masks")
    if masks is not None and not mask_dir.is_dir():
        raise DatasetError(f"--anomaly-masks {mask_dir} does not exist")
    samples = []
    for p in images:
        found = next((c for c in (mask_dir / f"{p.stem}{s}.png" for s in MASK_SUFFIXES) if c.is_file()), None)
        sample = Sample(p, folder.name, found)
        samples.append(sample if found is not None and mask_is_set(sample) else Sample(p, folder.name, None))
    return AnomalySelection(tuple(samples), 0, {folder.name: len(samples)}, source=str(folder.resolve()))
