"""How long loading image files into memory takes: Fashion-MNIST's 70,000 images written as
PNG files in class folders (train/ and test/), then opened and decoded by byol as
``byol pretrain --data FOLDER`` does (headers first, then every file decoded for the view).

    .venv/bin/python benchmarks/decode.py [--folder /tmp/fashion-mnist-png]
"""
import argparse
import gzip
import time
from pathlib import Path

import numpy as np
from PIL import Image

from byol.data import load_dataset

FASHION = Path("/usr/share/datasets/fashion-mnist")


def read(name: str) -> np.ndarray:
    raw = gzip.open(FASHION / name).read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


parser = argparse.ArgumentParser()
parser.add_argument("--folder", default="/tmp/fashion-mnist-png")
folder = Path(parser.parse_args().folder)
if not (folder / "test").is_dir():
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = read(f"{prefix}-images-idx3-ubyte.gz"), read(f"{prefix}-labels-idx1-ubyte.gz")
        for i, (image, label) in enumerate(zip(images, labels)):
            (folder / split / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / split / str(label) / f"{i:05d}.png")
started = time.perf_counter()
splits = load_dataset(folder)
headers = time.perf_counter() - started
ready = splits.prepared(28)
total = time.perf_counter() - started
print(f"{len(ready.train)} training + {len(ready.test)} test PNGs: headers {headers:.1f} s, "
      f"decoded into memory {total:.1f} s in all ({(len(ready.train) + len(ready.test)) / total:,.0f} images/s); "
      f"train images {tuple(ready.train.images.shape)} {ready.train.images.dtype}")
