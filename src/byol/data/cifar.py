"""CIFAR-10 and CIFAR-100, python version, as distributed (``cifar-10-batches-py/``,
``cifar-100-python/``): pickled dicts with ``data`` (N, 3072) uint8 rows in
R-plane, G-plane, B-plane order of 32×32, and ``labels`` / ``fine_labels``."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ..base.errors import first_line
from .base import DataError, DataSplits, ImageSet

CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError) as error:
        raise DataError(f"{path} is not a readable CIFAR batch ({first_line(error)})") from None
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in batch.items()}


def _image_set(batches: list[dict], label_key: str, path: Path) -> ImageSet:
    try:
        data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
        labels = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
    except KeyError as missing:
        raise DataError(f"{path}: CIFAR batch without the {missing} entry") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(f"{path}: expected (N, 3072) pixels and N labels, found {data.shape} and {len(labels)}")
    return ImageSet(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels))


def is_cifar10(folder: Path) -> bool:
    return folder.is_dir() and (folder / "data_batch_1").is_file()


def is_cifar100(folder: Path) -> bool:
    return folder.is_dir() and (folder / "train").is_file() and (folder / "meta").is_file()


def load_cifar10(folder: Path) -> DataSplits:
    missing = [name for name in (*CIFAR10_TRAIN, "test_batch") if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder} looks like CIFAR-10 but lacks {', '.join(missing)}")
    train = _image_set([_unpickle(folder / name) for name in CIFAR10_TRAIN], "labels", folder)
    test = _image_set([_unpickle(folder / "test_batch")], "labels", folder)
    classes = None
    if (folder / "batches.meta").is_file():
        classes = tuple(n.decode() if isinstance(n, bytes) else n for n in _unpickle(folder / "batches.meta")["label_names"])
    return DataSplits("cifar10", train, test, classes)


def load_cifar100(folder: Path) -> DataSplits:
    """Fine labels (100 classes); the coarse superclasses are not used."""
    if not (folder / "test").is_file():
        raise DataError(f"{folder} looks like CIFAR-100 but lacks 'test'")
    train = _image_set([_unpickle(folder / "train")], "fine_labels", folder)
    test = _image_set([_unpickle(folder / "test")], "fine_labels", folder)
    names = _unpickle(folder / "meta").get("fine_label_names")
    classes = tuple(n.decode() if isinstance(n, bytes) else n for n in names) if names is not None else None
    return DataSplits("cifar100", train, test, classes)
