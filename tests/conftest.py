import gzip
from pathlib import Path

import numpy as np
import pytest
import torch


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an unsigned-byte idx file exactly as MNIST / Fashion-MNIST ship them."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


@pytest.fixture
def tiny_idx(tmp_path) -> Path:
    """A Fashion-MNIST-shaped idx folder: 320 train and 96 test images of 16×16, 4 classes
    (class k is a bright square in corner k, so features can tell them apart)."""
    folder = tmp_path / "tiny-idx"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 320), ("t10k", 96)):
        labels = np.arange(n) % 4
        images = rng.integers(0, 60, size=(n, 16, 16))
        for i, label in enumerate(labels):
            r, c = divmod(int(label), 2)
            images[i, r * 8:r * 8 + 8, c * 8:c * 8 + 8] += 150
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return folder


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
