"""Image sources: one reader per on-disk format, all returning ``DataSplits`` of uint8 images.

``load_dataset(path)`` recognises the format from what is at ``path``; ``dataset``
forces one.  Pre-training never looks at labels; the k-NN monitor and the final
evaluation do.  Nothing is ever written into the data folder.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import setting
from .arrays import from_python
from .base import DataError, DataSplits, ImageSet
from .cifar import is_cifar10, is_cifar100, load_cifar10, load_cifar100
from .idx import is_idx_folder, load_idx_folder, read_idx
from .images import load_csv, load_image_folder
from .npz import load_npz
from .stl10 import is_stl10, load_stl10

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FORMATS = ("idx", "cifar10", "cifar100", "stl10", "npz", "csv", "folder")

__all__ = ["DataError", "DataSplits", "ImageSet", "FORMATS", "as_splits", "detect_format", "load_dataset", "read_idx"]


def detect_format(path: Path) -> str:
    """Which reader ``path`` needs, from the files that are there."""
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".npz":
            return "npz"
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


def load_dataset(path: str | Path | None = None, dataset: str | None = None, image_size: int | None = None,
                 strict: bool = False, stream: bool | None = None, memory_budget: int | None = None) -> DataSplits:
    """Open the dataset at ``path``; ``None`` means Fashion-MNIST from its Debian package.

    ``dataset`` forces a format (one of ``FORMATS``); ``image_size`` is the side that
    image files are resized to (default 64); ``strict`` turns skipped bad files into an error.
    Image files are decoded into memory when they fit the memory rule (a quarter of the
    available RAM, or ``memory_budget`` bytes), else streamed; ``stream`` forces either.
    Array formats (idx, CIFAR, STL-10, npz) are read into memory whole."""
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
    if fmt == "npz":
        return load_npz(path)
    if fmt == "csv":
        return load_csv(path, image_size, strict, stream, memory_budget)
    if not path.is_dir():
        raise DataError(f"{setting('data')} {path}: an image folder was expected")
    return load_image_folder(path, image_size, strict, stream, memory_budget)


def as_splits(data, dataset: str | None = None, image_size: int | None = None, strict: bool = False,
              stream: bool | None = None) -> DataSplits:
    """Whatever the user gave as data: a path (``None``: Fashion-MNIST) for ``load_dataset``,
    ``DataSplits`` as they are, or images from Python — an array or tensor (N, H, W),
    (N, C, H, W) or (N, H, W, C), an (images, labels) pair, or a torch Dataset."""
    if data is None or isinstance(data, (str, Path)):
        return load_dataset(data, dataset, image_size, strict, stream)
    if isinstance(data, DataSplits):
        return data
    return from_python(data)

