"""The streaming input pipeline, measured: JPEG files decoded batch by batch (on a GPU by nvJPEG,
workers reading the bytes), augmented on the device, a real pre-training step behind them.

    python benchmarks/streaming.py --images 2000 --arch resnet50 --image-size 224 --batch-size 128 --steps 40

Writes the JPEGs once (random textures at 256-320 px, varied aspect ratios) into --folder, then
pre-trains on them with --stream for --steps steps and prints images/s and the fraction of
the time the step waited for data (the run's own meter, metrics.csv).
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from byol import pretrain


def write_jpegs(folder: Path, count: int) -> None:
    if folder.is_dir() and len(list(folder.glob("*.jpg"))) >= count:
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        height, width = int(rng.integers(256, 320)), int(rng.integers(256, 400))
        base = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((width, height), Image.BICUBIC)
        image.save(folder / f"{i:05d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", default=str(Path(tempfile.gettempdir()) / "byol-streaming-jpegs"))
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    folder = Path(args.folder)
    write_jpegs(folder, args.images)
    out = Path(tempfile.mkdtemp(prefix="byol-streaming-run-"))
    started = time.perf_counter()
    pretrain(str(folder), out=str(out), overwrite=True, stream=True, epochs=1, arch=args.arch,
             image_size=args.image_size, batch_size=args.batch_size, device=args.device, linear_probe=False,
             knn_every=0, log_every=10)
    with (out / "metrics.csv").open() as handle:
        row = next(csv.DictReader(handle))
    seconds = float(row["elapsed_s"])
    figures = {"images_per_s": float(row["images_per_s"]), "data_wait_fraction": float(row["data_wait_s"]) / seconds,
               "images": args.images, "arch": args.arch, "image_size": args.image_size, "batch_size": args.batch_size,
               "wall_s": time.perf_counter() - started}
    print(f"streaming: {figures['images_per_s']:.0f} images/s, waiting for data {100 * figures['data_wait_fraction']:.1f} % "
          f"of the epoch ({args.arch}, {args.image_size} px, batch {args.batch_size}, {args.images} JPEGs)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
