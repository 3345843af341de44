"""Image sources: one reader per on-disk format, all returning ``DataSplits`` of uint8 images.

``load_dataset(path)`` recognises the format from what is at ``path``; ``dataset``
forces one.  Pre-training never looks at labels; the k-NN monitor and the final
evaluation do.  Nothing is ever written into the data folder.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ..base.errors import setting
from .arrays import from_python
from .base import Batch, DataError, DataSplits, ImageSet
from .files import FileImages, dataset_channels
from .cifar import is_cifar10, is_cifar100, load_cifar10, load_cifar100
from .idx import is_idx_folder, load_idx_folder, read_idx
from .images import load_csv, load_image_folder
from .npz import load_npz
from .stl10 import is_stl10, load_stl10

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FORMATS = ("idx", "cifar10", "cifar100", "stl10", "npz", "npy", "csv", "folder")

__all__ = ["Batch", "DataError", "DataSplits", "ImageSet", "FORMATS", "as_splits", "detect_format", "load_dataset",
           "read_idx", "with_unlabeled"]


def detect_format(path: Path) -> str:
    """Which reader ``path`` needs, from the files that are there."""
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".npz", ".npy"):
            return suffix[1:]
        if suffix == ".csv":
            return "csv"
        raise DataError(f"{setting('data')} {path}: a file, but neither .npz (MedMNIST) nor .csv (image,label); "
                        "or pass a folder")
    for name, test in (("idx", is_idx_folder), ("cifar10", is_cifar10), ("cifar100", is_cifar100), ("stl10", is_stl10)):
        if test(path):
            return name
    for name, test in (("cifar10", is_cifar10), ("cifar100", is_cifar100), ("stl10", is_stl10)):
        # The archives unpack into one sub-folder (cifar-10-batches-py/, stl10_binary/, ...).
        if any(test(child) for child in path.iterdir() if child.is_dir()):
            return name
    return "folder"


def _inner(path: Path, test) -> Path:
    return path if test(path) else next((c for c in sorted(path.iterdir()) if c.is_dir() and test(c)), path)


def load_dataset(path: str | Path | None = None, dataset: str | None = None, strict: bool = False,
                 images: str | None = None, image_column: str | None = None, label_column: str | None = None,
                 window: tuple[float, float] | None = None) -> DataSplits:
    """Open the dataset at ``path``; ``None`` means Fashion-MNIST from its Debian package.

    ``dataset`` forces a format (one of ``FORMATS``); ``strict`` turns skipped bad files into
    an error; ``images``, ``image_column`` and ``label_column`` say where a CSV's images are and
    which columns name them and their labels; ``window`` is the DICOM window (centre, width).
    Array formats (idx, CIFAR, STL-10, npz) are read into memory whole; of image files only the
    headers are read here — ``DataSplits.prepared`` decodes them for a view size."""
    if path is None:
        if not is_idx_folder(FASHION_MNIST_DIR):
            raise DataError(
                f"Fashion-MNIST not found in {FASHION_MNIST_DIR}: install it with "
                "'sudo apt-get install dataset-fashion-mnist', or pass " + setting("data")
            )
        return load_idx_folder(FASHION_MNIST_DIR, "fashion-mnist", FASHION_MNIST_CLASSES)
    path = Path(path)
    if not path.exists():
        raise DataError(f"{setting('data')} {path}: no such file or folder")
    if dataset is not None and dataset not in FORMATS:
        raise DataError(f"{setting('dataset')} {dataset}: unknown format; choose one of {', '.join(FORMATS)}")
    fmt = dataset or detect_format(path)
    if fmt == "idx":
        return load_idx_folder(path, path.name)
    if fmt == "cifar10":
        return load_cifar10(_inner(path, is_cifar10))
    if fmt == "cifar100":
        return load_cifar100(_inner(path, is_cifar100))
    if fmt == "stl10":
        return load_stl10(_inner(path, is_stl10))
    if fmt in ("npz", "npy"):
        return load_npz(path)
    if fmt == "csv":
        return load_csv(path, strict, images, image_column, label_column, window)
    if not path.is_dir():
        raise DataError(f"{setting('data')} {path}: an image folder was expected")
    return load_image_folder(path, strict, window)


def as_splits(data, **options) -> DataSplits:
    """Whatever the user gave as data: a path (``None``: Fashion-MNIST) for ``load_dataset``
    (``options`` are its keywords), ``DataSplits`` as they are, or images from Python — an
    array or tensor (N, H, W), (N, C, H, W) or (N, H, W, C), an (images, labels) pair, or a
    torch Dataset."""
    if data is None or isinstance(data, (str, Path)):
        return load_dataset(data, **options)
    if isinstance(data, DataSplits):
        return data
    return from_python(data)


def with_unlabeled(splits: DataSplits, sources: list[DataSplits]) -> DataSplits:
    """``splits`` whose training set also holds every image of ``sources`` (their labels and test
    splits ignored): more images for pre-training; evaluation still uses ``splits``' labels."""
    if not sources:
        return splits
    parts = [splits.train] + [image_set for source in sources
                              for image_set in (source.train, source.labelled_train, source.test) if image_set is not None]
    if all(part.files is not None for part in parts):
        facts = [f for part in parts for f in part.files.facts]
        files = FileImages([p for part in parts for p in part.files.paths], facts,
                           dataset_channels(facts, "the training sources"), max(part.files.bits for part in parts),
                           splits.train.files.window, unreadable=sum((part.files.unreadable for part in parts), ()))
        train = ImageSet(files=files, names=[n for part in parts for n in (part.names or [""] * len(part))])
    elif all(part.images is not None and part.sizes is None for part in parts) and \
            len({(part.images.shape[1:], part.images.dtype) for part in parts}) == 1:
        train = ImageSet(torch.cat([part.images for part in parts]))
    else:
        raise DataError(f"{setting('unlabeled')}: combine image folders and CSVs with image folders and CSVs, or "
                        "arrays with arrays of the same shape")
    # every other field kept: a validation split stays one (proxies runs once called it "the test split")
    return replace(splits, train=train, labelled_train=splits.eval_train)
