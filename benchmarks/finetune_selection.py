"""How the fine-tuning recipe is chosen, honestly: on a validation split carved from the labelled
*training* images of a development set; no test image is looked at.

    python benchmarks/finetune_selection.py --byol RUN --data CSV --images DIR [--seeds 0 1 2 3 4] \
        [--label-fraction 1 0.1] [--candidates default no-clip short] [--out runs/finetune-selection]
    python benchmarks/finetune_selection.py --byol runs/fashion-mnist --fashion-mnist --label-fraction 0.01

Each candidate (a set of fine-tuning settings, ``CANDIDATES``) fine-tunes the BYOL encoder and
random init on every seed's label subset (``byol compare --test-fraction 0.2 --protocols linear
finetune``: each seed's "test" images are a validation split of the development set), and the
table says, per encoder and label fraction: the mean selection metric of fine-tuning and of
the probe, the paired difference with its 95 % interval over the seeds and a paired bootstrap of
the held-out images (``Comparison.paired``, what ``byol compare`` prints), how many
seeds ended below their own probe, how many predicted a single grade, and the fine-tuning
seconds.  A second table gives what each later candidate's fine-tuning costs in accuracy: its
paired difference from the first candidate's (the same seeds, splits and held-out images).  The
stable candidate — none below its probe, none of one grade — that costs least wins; then the
higher mean.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import fashion_mnist_npz

from byol import evaluate

CANDIDATES = {  # name: fine-tuning settings (the defaults: clip 1, 30 epochs / 200 steps, encoder at the head's rate)
    "default": {},
    "balance-loss": {"balance": "loss"},
    "balance-loss-no-crop": {"balance": "loss", "crop_min_scale": 1.0},
    "balance-loss-crop-0.8": {"balance": "loss", "crop_min_scale": 0.8},
    "no-clip": {"clip_grad": 0.0},
    "no-clip-encoder-lr-0.1": {"clip_grad": 0.0, "encoder_lr": 0.1},
    "no-clip-short": {"clip_grad": 0.0, "epochs": 10, "min_steps": 60},
    "short": {"epochs": 10, "min_steps": 60},
    "half": {"epochs": 15, "min_steps": 100},
    "balance-loss-half": {"balance": "loss", "epochs": 15, "min_steps": 100},
}


def one_grade(row: dict) -> bool:
    """Whether every test image was predicted as one class."""
    return sum(1 for column in zip(*row["confusion_matrix"]) if sum(column)) <= 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--byol", required=True, help="the BYOL run directory to fine-tune")
    parser.add_argument("--data", help="the labelled development set (a CSV, folder, .npz ...)")
    parser.add_argument("--images", help="the CSV's image folder, when it is not the CSV's own")
    parser.add_argument("--fashion-mnist", action="store_true", help="Fashion-MNIST's training images instead")
    parser.add_argument("--label-fraction", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--out", default="runs/finetune-selection")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = str(fashion_mnist_npz(out / "fashion-mnist-train.npz", with_test=False)) if args.fashion_mnist else args.data
    ordinal = not args.fashion_mnist
    lines = ["| candidate | encoder | labels | probe | fine-tuned | fine-tuned − probe [95 %] | below its probe | one grade "
             "| fine-tuning s |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    record, first = {}, {}  # the first candidate's fine-tuned rows, per encoder and label fraction
    against = ["| candidate − " + args.candidates[0] + " | encoder | labels | fine-tuned, paired [95 %] | verdict |",
               "| --- | --- | --- | --- | --- |"]
    for name in args.candidates:
        started = time.perf_counter()
        comparison = evaluate([f"byol:{args.byol}", "random"], data=data, images=args.images, ordinal=ordinal,
                              protocols=["linear", "finetune"], label_fraction=args.label_fraction, test_fraction=0.2,
                              seeds=args.seeds, out=str(out / name), **CANDIDATES[name])
        seconds = time.perf_counter() - started
        metric = comparison.metric
        for init in (f"byol:{args.byol}", "random"):
            for fraction in args.label_fraction:
                rows = {(r["protocol"], r["seed"]): r for r in comparison.rows
                        if r["init"] == init and r["label_fraction"] == fraction}
                probe_rows = [rows["linear", s] for s in args.seeds]
                tuned_rows = [rows["finetune", s] for s in args.seeds]
                probe = [row[metric] for row in probe_rows]
                tuned = [row[metric] for row in tuned_rows]
                below = sum(t < p for t, p in zip(tuned, probe))
                single = sum(one_grade(row) for row in tuned_rows)
                record[f"{name}/{init}/{fraction}"] = {"probe": probe, "finetuned": tuned, "below": below,
                                                       "one_grade": single}
                if name == args.candidates[0]:
                    first[init, fraction] = tuned_rows
                else:  # the same seeds, splits and held-out images as the first candidate's
                    versus = comparison.paired(tuned_rows, first[init, fraction])
                    against.append(f"| {name} | {init.split('/')[-1]} | {fraction:g} | {versus.estimate:+.3f} "
                                   f"[{versus.low:+.3f}, {versus.high:+.3f}] | {versus.verdict} |")
                # each seed's probe and fine-tuning are scored on the same held-out images
                difference = comparison.paired(tuned_rows, probe_rows)
                lines.append(f"| {name} | {init.split('/')[-1]} | {fraction:g} | {statistics.mean(probe):.4f} | "
                             f"{statistics.mean(tuned):.4f} | {difference.estimate:+.3f} [{difference.low:+.3f}, "
                             f"{difference.high:+.3f}] | {below}/{len(args.seeds)} | {single}/{len(args.seeds)} | "
                             f"{seconds:.0f} (whole comparison) |")
        print("\n".join(lines + [""] + against), flush=True)
    (out / "finetune-selection.md").write_text("\n".join(lines + [""] + against) + "\n")
    (out / "finetune-selection.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
