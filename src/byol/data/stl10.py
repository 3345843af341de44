"""STL-10 binary version, as distributed (``stl10_binary/``): ``*_X.bin`` hold
N×3×96×96 uint8 in column-major order (each channel plane stored transposed),
``*_y.bin`` labels 1–10, ``unlabeled_X.bin`` 100,000 images without labels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .base import DataError, DataSplits, ImageSet

SIDE = 96


def read_images(path: Path) -> torch.Tensor:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % (3 * SIDE * SIDE):
        raise DataError(f"{path} is truncated: {raw.size} bytes is not a whole number of 3x96x96 images")
    # Column-major planes: swap the two spatial axes to get (N, C, H, W).
    return torch.from_numpy(raw.reshape(-1, 3, SIDE, SIDE).transpose(0, 1, 3, 2).copy())


def read_labels(path: Path, n: int) -> torch.Tensor:
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1  # files count classes from 1
    if len(labels) != n:
        raise DataError(f"{path} has {len(labels)} labels for {n} images")
    return torch.from_numpy(labels)


def is_stl10(folder: Path) -> bool:
    return folder.is_dir() and ((folder / "train_X.bin").is_file() or (folder / "unlabeled_X.bin").is_file())


def load_stl10(folder: Path) -> DataSplits:
    """Pre-training sees train + unlabeled (105,000 images, as in the STL-10 protocol);
    the labelled train split is the k-NN bank, test the queries."""
    parts, labelled_train = [], None
    if (folder / "train_X.bin").is_file():
        images = read_images(folder / "train_X.bin")
        labels = read_labels(folder / "train_y.bin", len(images)) if (folder / "train_y.bin").is_file() else None
        labelled_train = ImageSet(images, labels)
        parts.append(images)
    if (folder / "unlabeled_X.bin").is_file():
        parts.append(read_images(folder / "unlabeled_X.bin"))
    test = None
    if (folder / "test_X.bin").is_file():
        images = read_images(folder / "test_X.bin")
        test = ImageSet(images, read_labels(folder / "test_y.bin", len(images)) if (folder / "test_y.bin").is_file() else None)
    classes = None
    if (folder / "class_names.txt").is_file():
        classes = tuple(line.strip() for line in (folder / "class_names.txt").read_text().splitlines() if line.strip())
    return DataSplits("stl10", ImageSet(torch.cat(parts)), test, classes, labelled_train=labelled_train)
