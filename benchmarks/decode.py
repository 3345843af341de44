"""How long loading image files into memory takes: Fashion-MNIST's 70,000 images written as
PNG files in class folders (train/ and test/), then opened and decoded by byol as
``byol pretrain --data FOLDER`` does (headers first, then every file decoded for the view).

    .venv/bin/python benchmarks/decode.py [--folder /tmp/fashion-mnist-png]
"""
import argparse
import time
from pathlib import Path

from PIL import Image

from byol.data import load_dataset


parser = argparse.ArgumentParser()
parser.add_argument("--folder", default="/tmp/fashion-mnist-png")
folder = Path(parser.parse_args().folder)
if not (folder / "test").is_dir():
    fashion = load_dataset()  # the Debian package's idx files
    for split, images in (("train", fashion.train), ("test", fashion.test)):
        for i, (image, label) in enumerate(zip(images.images[:, 0].numpy(), images.labels.tolist())):
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
