"""How fine-tuning's encoder learning rate is chosen, honestly: on a validation split of
Fashion-MNIST's *training* images; the test images are never looked at.

    python benchmarks/finetune_selection.py --byol runs/fashion-mnist [--out runs/finetune-selection]

For each candidate `--encoder-lr` (a share of the head's rate), random init and the BYOL
encoder are fine-tuned and probed at 1 % of the labels of 54,000 training images, scored on
the other 6,000 (a stratified 10 % held out per seed), seeds 0, 1, 2: `byol compare
--test-fraction 0.1` on the training images alone.  Prints fine-tuned − probe per encoder;
the candidate that keeps fine-tuning above the probe by most, for both encoders, wins.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from common import fashion_mnist_npz

from byol import evaluate

CANDIDATES = (0.1, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--byol", required=True, help="the BYOL run directory to fine-tune")
    parser.add_argument("--out", default="runs/finetune-selection")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = fashion_mnist_npz(out / "fashion-mnist-train.npz", with_test=False)
    lines = ["| encoder lr | encoder | linear probe | fine-tuned | fine-tuned − probe |", "| --- | --- | --- | --- | --- |"]
    for encoder_lr in CANDIDATES:
        comparison = evaluate(["random", f"byol:{args.byol}"], data=str(data), protocols=["linear", "finetune"],
                              label_fraction=[0.01], test_fraction=0.1, seeds=[0, 1, 2], encoder_lr=encoder_lr,
                              out=str(out / f"encoder-lr-{encoder_lr:g}"))
        means = {(cell["init"], cell["protocol"]): 100 * statistics.mean(cell["top1"]) for cell in comparison.summary()}
        for init in ("random", f"byol:{args.byol}"):
            probe, tuned = means[init, "linear"], means[init, "finetune"]
            lines.append(f"| {encoder_lr:g} | {init} | {probe:.2f} | {tuned:.2f} | {tuned - probe:+.2f} |")
    table = "\n".join(lines)
    print(table)
    (out / "finetune-selection.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
