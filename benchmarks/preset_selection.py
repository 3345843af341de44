"""How the Fashion-MNIST CPU preset is chosen, honestly: every candidate is scored on a
validation split carved from the *training* images; the test images are never looked at.

    python benchmarks/preset_selection.py [--out runs/preset-selection] [--epochs 1]

Each candidate pre-trains for --epochs (a proxy of the full run; warm-up 0.1 epochs) on the
60,000 training images, then a linear probe is fitted on 54,000 of their labels and scored on
the other 6,000 (a stratified 10 %, seed 0): `byol eval linear --test-fraction 0.1` on the
training images alone.  Prints and writes a table; the best validation score wins.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import fashion_mnist_npz

from byol import evaluate, pretrain

CANDIDATES = {  # name: the settings it changes; everything else is the recipe's for Fashion-MNIST
    "lr 1, tau 0.99, crop 0.2": dict(base_lr=1.0, base_target_momentum=0.99, crop_min_scale=0.2),
    "lr 4, tau 0.95, crop 0.2": dict(base_lr=4.0, base_target_momentum=0.95, crop_min_scale=0.2),
    "lr 2, tau 0.97, crop 0.4": dict(base_lr=2.0, base_target_momentum=0.97, crop_min_scale=0.4),
    "lr 4, tau 0.95, crop 0.4": dict(base_lr=4.0, base_target_momentum=0.95, crop_min_scale=0.4),
}


def training_images(out: Path) -> Path:
    """Fashion-MNIST's training images and labels alone, as an .npz (no test split in it)."""
    return fashion_mnist_npz(out / "fashion-mnist-train.npz", with_test=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/preset-selection")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = training_images(out)
    scores = {}
    for name, change in CANDIDATES.items():
        run = out / name.replace(", ", "_").replace(" ", "-")
        if not (run / "encoder.safetensors").is_file():
            pretrain(str(data), out=str(run), overwrite=True, epochs=args.epochs, warmup_epochs=0.1, knn_every=0,
                     **change)
        rows = evaluate(f"byol:{run}", data=str(data), protocols=["knn", "linear"], test_fraction=0.1,
                        out=str(run / "validation")).rows
        scores[name] = {row["protocol"]: row["top1"] for row in rows}
        print(f"preset selection: {name}: validation k-NN {100 * scores[name]['knn']:.2f} %, "
              f"linear {100 * scores[name]['linear']:.2f} %", flush=True)
    best = max(scores, key=lambda name: scores[name]["linear"])
    (out / "selection.json").write_text(json.dumps({"scores": scores, "best": best, "epochs": args.epochs}, indent=2))
    print("| settings | validation k-NN | validation linear |\n| --- | --- | --- |")
    for name, score in scores.items():
        print(f"| {name}{' (chosen)' if name == best else ''} | {100 * score['knn']:.2f} | {100 * score['linear']:.2f} |")


if __name__ == "__main__":
    main()
