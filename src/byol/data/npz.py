"""NumPy arrays of images: a ``.npz`` in the MedMNIST layout — ``train_images``, ``train_labels``,
and the same for ``val_`` and ``test_`` — or a ``.npy`` holding images alone (unlabeled).  Images as ``arrays.images_tensor`` takes them."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from ..base.errors import first_line
from .arrays import images_tensor
from .base import DataError, DataSplits, ImageSet

def _split(archive, prefix: str, path: Path) -> ImageSet | None:
    if f"{prefix}_images" not in archive.files:
        return None
    images = images_tensor(np.asarray(archive[f"{prefix}_images"]), f"{path}: {prefix}_images")
    labels = None
    if f"{prefix}_labels" in archive.files:
        raw = np.asarray(archive[f"{prefix}_labels"])
        if raw.ndim == 2 and raw.shape[1] > 1:
            raise DataError(f"{path}: {prefix}_labels has {raw.shape[1]} columns (multi-label); "
                            "byol evaluates single-label classification")
        labels = torch.from_numpy(raw.reshape(-1).astype(np.int64))
        if len(labels) != len(images):
            raise DataError(f"{path}: {len(labels)} {prefix}_labels for {len(images)} {prefix}_images")
    return ImageSet(images, labels)


def load_npz(path: Path) -> DataSplits:
    """Pre-training uses ``train_images``; ``val_`` is not used here; ``test_`` is the evaluation split."""
    try:
        if path.suffix.lower() == ".npy":
            return DataSplits(path.stem, ImageSet(images_tensor(np.load(path, allow_pickle=False), str(path))))
        with np.load(path, allow_pickle=False) as archive:
            train, test = _split(archive, "train", path), _split(archive, "test", path)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{path} is not a readable NumPy file ({first_line(error)})") from None
    if train is None:
        raise DataError(f"{path} has no 'train_images' array (MedMNIST layout: train_images, train_labels, ...)")
    return DataSplits(path.stem, train, test)
