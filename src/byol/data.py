"""Image sources: one reader per on-disk format, all returning uint8 tensors in memory.

A dataset here is ``images`` (N, C, H, W) uint8 plus optional integer ``labels``;
pre-training never looks at the labels, the k-NN monitor and evaluation do.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import UserError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


class DataError(UserError):
    """The data the user pointed at cannot be used; the message says why and what to do."""


@dataclass
class ImageSet:
    images: torch.Tensor              # (N, C, H, W) uint8
    labels: torch.Tensor | None = None  # (N,) int64


@dataclass
class Dataset:
    """A training split (what pre-training sees) and, when the format has one, a labelled test split."""

    name: str
    train: ImageSet
    test: ImageSet | None = None
    classes: tuple[str, ...] | None = None

    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the training images in [0, 1], for normalisation."""
        images = self.train.images
        n_channels = images.shape[1]
        # A 10k-image sample pins the statistics to ~3 decimals at a fraction of the cost.
        sample = images[torch.linspace(0, len(images) - 1, min(len(images), 10_000)).long()]
        pixels = sample.transpose(0, 1).reshape(n_channels, -1).double() / 255
        return pixels.mean(dim=1).float(), pixels.std(dim=1).float()


def read_idx(path: Path) -> np.ndarray:
    """An MNIST-style idx file (plain or .gz): big-endian header, then the array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte idx file (bad magic number)")
    n_dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(n_dims))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * n_dims)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: header says {shape}, found {data.size} values")
    return data.reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_idx_folder(folder: Path, name: str = "idx", classes=None) -> Dataset:
    """MNIST / Fashion-MNIST as distributed: train- and t10k- images and labels, .gz or not."""
    def split(prefix: str) -> ImageSet | None:
        images, labels = _find(folder, f"{prefix}-images-idx3-ubyte"), _find(folder, f"{prefix}-labels-idx1-ubyte")
        if images is None:
            return None
        pixels = torch.from_numpy(read_idx(images).copy()).unsqueeze(1)
        targets = torch.from_numpy(read_idx(labels).astype(np.int64)) if labels else None
        if targets is not None and len(targets) != len(pixels):
            raise DataError(f"{labels} has {len(targets)} labels for {len(pixels)} images in {images}")
        return ImageSet(pixels, targets)

    train = split("train")
    if train is None:
        raise DataError(f"no train-images-idx3-ubyte[.gz] in {folder}")
    return Dataset(name, train, split("t10k"), classes)


def load_dataset(path: str | Path | None = None) -> Dataset:
    """Open the dataset at ``path``; ``None`` means Fashion-MNIST from its Debian package."""
    if path is None:
        if _find(FASHION_MNIST_DIR, "train-images-idx3-ubyte") is None:
            raise DataError(
                f"Fashion-MNIST not found in {FASHION_MNIST_DIR}: install it with "
                "'sudo apt-get install dataset-fashion-mnist', or pass --data PATH"
            )
        return load_idx_folder(FASHION_MNIST_DIR, "fashion-mnist", FASHION_MNIST_CLASSES)
    path = Path(path)
    if not path.exists():
        raise DataError(f"--data {path}: no such file or folder")
    if path.is_dir() and _find(path, "train-images-idx3-ubyte"):
        return load_idx_folder(path, path.name)
    raise DataError(f"--data {path}: no dataset format recognised there (expected MNIST-style idx files)")
