"""MVTec-layout category folders: ``train/good``, ``test/<type>``, ``ground_truth/<type>/<stem>_mask.png``;
or a plain folder of good images (searched recursively), which trains but has nothing to evaluate.

Example::

    ds = MVTecCategory("../shared/data/bottle")     # DatasetError if the layout is wrong
    ds.train_good()                                  # sorted list of Paths
    MVTecCategory("line3/good_parts").train_good()   # a plain folder: every image below it
    ds.image_key(path)                               # "000.png" (the path below train/good, or below the folder)
    for s in ds.test_samples(): s.path, s.defect_type, s.is_anomalous, s.mask_path
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class DatasetError(ValueError):
    """The data folder is missing or not in MVTec layout."""


@dataclass(frozen=True)
class Sample:
    path: Path
    defect_type: str                # "good" or the defect folder name
    mask_path: Path | None          # None for good images (and defects without a mask file)

    @property
    def is_anomalous(self) -> bool:
        return self.defect_type != "good"

    @property
    def key(self) -> str:
        """Stable identifier ``<type>/<file name>``, used to list few-shot anomalies."""
        return f"{self.defect_type}/{self.path.name}"

    def load_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Bool mask (H, W); all False for good images or a missing mask."""
        if self.mask_path is None:
            return np.zeros(shape, bool)
        m = cv2.imread(str(self.mask_path), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise DatasetError(f"cannot read mask {self.mask_path}")
        if m.shape != tuple(shape):
            m = cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        return m > 127


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def _images_below(folder: Path):
    """Image files anywhere below ``folder`` (hidden folders skipped), lazily."""
    for p in folder.rglob("*"):
        if p.suffix.lower() in IMAGE_EXTS and p.is_file() and not any(part.startswith(".") for part in
                                                                      p.relative_to(folder).parts):
            yield p


class MVTecCategory:
    """One category folder in MVTec AD layout."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"data folder {self.root} does not exist")
        self.plain = not (self.root / "train" / "good").is_dir() and not (self.root / "test").is_dir()
        if self.plain and not any(_images_below(self.root)):
            raise DatasetError(f"{self.root} is neither an MVTec-layout category (train/good, test/<type>, "
                               f"ground_truth/<type>) nor a folder of good images ({', '.join(sorted(IMAGE_EXTS))}, "
                               f"searched recursively)")
        self.name = self.root.name

    @property
    def goods_root(self) -> Path:
        """Where the good training images are: ``train/good``, or the plain folder itself."""
        return self.root if self.plain else self.root / "train" / "good"

    def image_key(self, path: Path) -> str:
        """A training image's name in run records: its path below :attr:`goods_root` (the file name in MVTec)."""
        return Path(path).relative_to(self.goods_root).as_posix()

    def train_good(self) -> list[Path]:
        good = self.goods_root
        if not good.is_dir():
            raise DatasetError(f"{self.root} is not an MVTec-layout category for training: {good} is missing "
                               f"(expected train/good, test/<type>, ground_truth/<type>)")
        images = sorted(_images_below(good)) if self.plain else list_images(good)
        if not images:
            raise DatasetError(f"{good} holds no images ({', '.join(sorted(IMAGE_EXTS))})")
        return images

    def defect_types(self) -> list[str]:
        test = self.root / "test"
        return sorted(p.name for p in test.iterdir() if p.is_dir() and p.name != "good") if test.is_dir() else []

    def test_samples(self) -> list[Sample]:
        test = self.root / "test"
        if not test.is_dir():
            raise DatasetError(f"{self.root} has no test/ folder to evaluate on")
        samples = []
        for type_dir in sorted(p for p in test.iterdir() if p.is_dir()):
            for img in list_images(type_dir):
                mask = None
                if type_dir.name != "good":
                    candidate = self.root / "ground_truth" / type_dir.name / f"{img.stem}_mask.png"
                    mask = candidate if candidate.is_file() else None
                samples.append(Sample(img, type_dir.name, mask))
        if not samples:
            raise DatasetError(f"{test} holds no images")
        return samples
