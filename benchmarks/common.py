"""What several benchmarks share: Fashion-MNIST (the Debian package's idx files, read by byol's
own reader) written as one MedMNIST-layout .npz, whole or cut to the first N images.

    python benchmarks/common.py fashion-mnist OUT.npz [--train 10000] [--test 512] [--no-test] [--source DIR]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from byol.data import load_dataset


def fashion_mnist_npz(path: str | Path, train: int | None = None, test: int | None = None,
                      with_test: bool = True, source: str | Path | None = None) -> Path:
    """Fashion-MNIST's first ``train`` training and ``test`` test images with their labels (all
    when None) as ``path``; ``with_test=False`` keeps the training images alone (for choosing
    settings on a validation split of them).  ``source``: a folder of its idx files (default:
    the Debian package's).  Written once; an existing file is reused."""
    path = Path(path)
    if not path.is_file():
        splits = load_dataset(source)
        arrays = {"train_images": splits.train.images[:train, 0].numpy(), "train_labels": splits.train.labels[:train].numpy()}
        if with_test:
            arrays.update(test_images=splits.test.images[:test, 0].numpy(), test_labels=splits.test.labels[:test].numpy())
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=("fashion-mnist",))
    parser.add_argument("out")
    parser.add_argument("--train", type=int)
    parser.add_argument("--test", type=int)
    parser.add_argument("--no-test", action="store_true")
    parser.add_argument("--source", help="a folder of Fashion-MNIST's idx files (default: the Debian package's)")
    args = parser.parse_args()
    print(fashion_mnist_npz(args.out, args.train, args.test, not args.no_test, args.source))


if __name__ == "__main__":
    main()
