"""How the recipe's choices for small labelled sets were measured: pre-training runs that differ in
one thing, each scored by its own final evaluation on the validation split of the labels (the
run pre-trains on those images without their labels; no test split is involved).

    python benchmarks/recipe_study.py views --data CSV --images DIR --unlabeled DIR --out runs/study-views
    python benchmarks/recipe_study.py size --data ... --budget 4m --views geometric:0.3 --out runs/study-size
    python benchmarks/recipe_study.py weights --data ... --generic runs/fashion-mnist --out runs/study-weights

views: every augmentation set and crop scale of ``VIEWS`` at the recipe's length — what the
chooser's candidates were picked from.  size: the view sizes 64 / 96 / 128 / 224 px, each with
the epochs the same time budget affords (equal wall-clock).  weights: random init and "generic"
weights (an encoder pre-trained on other data) scored as they are, BYOL from scratch, and BYOL
continued from the generic weights under each of ``CONTINUED`` (rate share, warm-up, τ), all
scored by ``byol compare`` on the same three seeds' splits of the labels (k-NN and linear).
views and size rows: linear-probe balanced accuracy, QWK and top-1, k-NN top-1, minutes.  A run
whose results.json exists is reused, so an interrupted study continues.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from byol import evaluate, pretrain

VIEWS = [("full", 0.08), ("full", 0.4), ("crop", 0.3), ("geometric", 0.3), ("geometric", 0.6), ("microscopy", 0.3),
         ("fundus", 0.3)]
SIZES = (64, 96, 128, 224)
CONTINUED = {  # the settings the recipe derives for --init-from, against others (epochs: the recipe's)
    "recipe: rate 0.1 x, warm-up 1/50, tau 0.99": dict(),
    "as from scratch: rate 4, warm-up 1/16, tau from the length": dict(base_lr=4.0, warmup_epochs=2.5,
                                                                      base_target_momentum=0.9)}


def run(name: str, out: Path, data: dict, **settings) -> dict:
    folder = out / name
    results = folder / "results.json"
    if not results.is_file():
        pretrain(**data, out=str(folder), overwrite=True, choose_augmentations=False, **settings)
    return json.loads(results.read_text())


def row(name: str, results: dict) -> str:
    return (f"| {name} | {100 * results['linear_balanced_accuracy']:.2f} | {results['linear_qwk']:.3f} | "
            f"{100 * results['linear_top1']:.2f} | {100 * results['knn_top1']:.2f} | "
            f"{results.get('seconds', 0) / 60:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("vary", choices=("views", "size", "weights"))
    parser.add_argument("--data", required=True)
    parser.add_argument("--images")
    parser.add_argument("--unlabeled", nargs="*", default=[])
    parser.add_argument("--out", required=True)
    parser.add_argument("--budget", default="4m", help="size: the time budget every view size gets")
    parser.add_argument("--views", default="geometric:0.3", help="size, weights: SET:CROP the runs use")
    parser.add_argument("--generic", help="weights: a byol run (or encoder file) pre-trained on other data")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"data": args.data, **({"images": args.images} if args.images else {}),
            **({"unlabeled": args.unlabeled} if args.unlabeled else {})}
    views, crop = args.views.split(":")
    lines = ["| run | linear balanced acc. | linear QWK | linear top-1 | k-NN top-1 | minutes |",
             "| --- | --- | --- | --- | --- | --- |"]
    if args.vary == "views":
        for name, scale in VIEWS:
            try:
                lines.append(row(f"{name} ({scale:g})", run(f"{name}-{scale:g}", out, data, augmentations=name,
                                                             crop_min_scale=scale)))
            except Exception as error:  # e.g. the fundus set on gray images
                lines.append(f"| {name} ({scale:g}) | not run: {error} | | | | |")
            print(lines[-1], flush=True)
    elif args.vary == "size":
        for size in SIZES:
            results = run(f"{size}px", out, data, image_size=size, time_budget=args.budget, augmentations=views,
                          crop_min_scale=float(crop))
            epochs = yaml.safe_load((out / f"{size}px" / "config.yaml").read_text())["epochs"]
            lines.append(row(f"{size} px: {epochs} epochs in {args.budget}", results))
            print(lines[-1], flush=True)
    else:  # every encoder scored by byol compare on the same 3 seeds' splits of the labels
        encoder = Path(args.generic.removeprefix("byol:"))
        encoder = encoder / "encoder.safetensors" if encoder.is_dir() else encoder
        inits = ["random", str(encoder), f"byol:{out / 'scratch'}"]
        run("scratch", out, data, augmentations=views, crop_min_scale=float(crop))
        for name, settings in CONTINUED.items():
            folder = name.replace(" ", "-").replace(",", "").replace("/", "-")
            run(folder, out, data, init_from=str(encoder), augmentations=views, crop_min_scale=float(crop), **settings)
            inits.append(f"byol:{out / folder}")
        comparison = evaluate(inits, data=args.data, images=args.images, protocols=["knn", "linear"], ordinal=True,
                              test_fraction=0.2, seeds=[0, 1, 2], out=str(out / "compare"))
        lines = [comparison.markdown()]
    table = "\n".join(lines)
    print(table)
    (out / "study.md").write_text(table + "\n")
    sys.exit(0)


if __name__ == "__main__":
    main()
