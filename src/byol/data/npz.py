"""NumPy ``.npz`` in the MedMNIST layout: ``train_images`` (N, H, W) or (N, H, W, 3) uint8,
``train_labels`` (N, 1) or (N,), and the same for ``val_`` and ``test_``."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import first_line
from .base import DataError, DataSplits, ImageSet


def _split(archive, prefix: str, path: Path) -> ImageSet | None:
    if f"{prefix}_images" not in archive.files:
        return None
    images = np.asarray(archive[f"{prefix}_images"])
    if images.dtype != np.uint8:
        raise DataError(f"{path}: {prefix}_images is {images.dtype}; MedMNIST images are uint8")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{path}: {prefix}_images has shape {images.shape}; expected (N, H, W) or (N, H, W, 3)")
    labels = None
    if f"{prefix}_labels" in archive.files:
        raw = np.asarray(archive[f"{prefix}_labels"])
        if raw.ndim == 2 and raw.shape[1] > 1:
            raise DataError(f"{path}: {prefix}_labels has {raw.shape[1]} columns (multi-label); "
                            "byol evaluates single-label classification")
        labels = torch.from_numpy(raw.reshape(-1).astype(np.int64))
        if len(labels) != len(images):
            raise DataError(f"{path}: {len(labels)} {prefix}_labels for {len(images)} {prefix}_images")
    return ImageSet(torch.from_numpy(np.ascontiguousarray(images)), labels)


def load_npz(path: Path) -> DataSplits:
    """Pre-training uses ``train_images``; ``val_`` is not used here; ``test_`` is the evaluation split."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            train, test = _split(archive, "train", path), _split(archive, "test", path)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"{path} is not a readable .npz file ({first_line(error)})") from None
    if train is None:
        raise DataError(f"{path} has no 'train_images' array (MedMNIST layout: train_images, train_labels, ...)")
    return DataSplits(path.stem, train, test)
