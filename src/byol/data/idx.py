"""MNIST / Fashion-MNIST idx files, as distributed (plain or .gz)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ..base.errors import first_line
from .base import DataError, DataSplits, ImageSet


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte idx file: big-endian header (magic 0x0000 08 NDIM, then the dims), then the array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path} cannot be read ({first_line(error)})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte idx file (bad magic number)")
    n_dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(n_dims))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * n_dims)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: header says {shape}, found {data.size} values")
    return data.reshape(shape)


def find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def is_idx_folder(folder: Path) -> bool:
    return folder.is_dir() and find_idx(folder, "train-images-idx3-ubyte") is not None


def load_idx_folder(folder: Path, name: str = "idx", classes: tuple[str, ...] | None = None) -> DataSplits:
    """train- and t10k- images and labels (``train-images-idx3-ubyte[.gz]`` etc.)."""
    def split(prefix: str) -> ImageSet | None:
        images, labels = find_idx(folder, f"{prefix}-images-idx3-ubyte"), find_idx(folder, f"{prefix}-labels-idx1-ubyte")
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
    return DataSplits(name, train, split("t10k"), classes)
