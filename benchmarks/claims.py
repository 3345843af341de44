"""The paper's claims, tested at small scale on Fashion-MNIST; writes CLAIMS.md (issue 5).

    python benchmarks/claims.py                      # 14 runs, about 80 minutes on 2 CPU cores
    python benchmarks/claims.py --epochs 8 --train-images 60000 --device cuda

Every run is ``byol pretrain`` with the CPU preset (narrow ResNet, 28 px, batch 256) on
the same seeded subset of the Fashion-MNIST training images, changed in one setting only.
Runs whose results.json exists are reused, so an interrupted study continues.  The
verdict rules below are fixed before any run: nothing is tuned until a claim agrees.

Verdicts use the linear-probe top-1 (the paper's metric) with a margin
m = max(1 point, 3 × the spread between two seeds of the baseline):
- "A beats B": confirmed if A − B > m, not confirmed if B − A > m, else inconclusive.
- "A loses less than B when X is removed": the same rule on (B's drop − A's drop).
- "X fails": confirmed if the run is collapsed (collapse statistic below a fifth of
  1/√d) or no better than a randomly initialised encoder (≤ random + m); not confirmed
  if it is within m of the baseline; inconclusive in between (it degrades, but learns),
  and inconclusive whenever the baseline itself is collapsed or ≤ random + m (then
  there is nothing to fail against).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import torch

from byol import PretrainConfig, create_encoder, pretrain
from byol.data import load_dataset
from byol.base.device import resolve_device
from byol.training.distributed import Process
from byol.models.methods import healthy_spread, is_collapsed
from byol.training.monitor import frozen_evaluation
from byol.commands.report import load_run, report

# One setting changed per run; everything else is the baseline: BYOL with the CPU preset
# (batch 256).  The batch-size claims use 64 and 512.
STUDY = {
    "byol": {},
    "byol-seed1": {"seed": 1},
    "simclr": {"method": "simclr"},
    "byol-b512": {"batch_size": 512},
    "simclr-b512": {"method": "simclr", "batch_size": 512},
    "byol-b64": {"batch_size": 64},
    "simclr-b64": {"method": "simclr", "batch_size": 64},
    "byol-no-predictor": {"predictor": False},
    "byol-tau0": {"target_momentum": 0.0},
    "byol-tau1": {"target_momentum": 1.0},
    "byol-head-none": {"head_norm": "none"},
    "byol-head-layernorm": {"head_norm": "layernorm"},
    "byol-crop": {"augmentations": "crop"},
    "simclr-crop": {"method": "simclr", "augmentations": "crop"},
}


@dataclass
class Claim:
    text: str
    kind: str  # better | smaller_drop | fails
    runs: tuple[str, ...]


CLAIMS = [
    Claim("BYOL beats SimCLR (batch 256)", "better", ("byol", "simclr")),
    Claim("BYOL beats SimCLR (batch 512)", "better", ("byol-b512", "simclr-b512")),
    Claim("BYOL beats SimCLR (batch 64)", "better", ("byol-b64", "simclr-b64")),
    Claim("BYOL loses less than SimCLR when the batch shrinks from 512 to 64", "smaller_drop",
          ("byol-b512", "byol-b64", "simclr-b512", "simclr-b64")),
    Claim("BYOL loses less than SimCLR with crop-only augmentation", "smaller_drop",
          ("byol", "byol-crop", "simclr", "simclr-crop")),
    Claim("Without the predictor, BYOL fails", "fails", ("byol", "byol-no-predictor")),
    Claim("τ = 0 (the target is the online network) fails", "fails", ("byol", "byol-tau0")),
    Claim("τ = 1 (a frozen random target) fails", "fails", ("byol", "byol-tau1")),
    Claim("Heads without normalisation fail (BatchNorm is essential)", "fails", ("byol", "byol-head-none")),
    Claim("Heads with LayerNorm instead of BatchNorm fail", "fails", ("byol", "byol-head-layernorm")),
]


def write_subset(path: Path, n: int, seed: int) -> None:
    """A seeded random ``n`` of the Fashion-MNIST training images, and the whole test split,
    as an .npz in the MedMNIST layout that ``byol pretrain --data`` reads."""
    dataset = load_dataset(None)
    keep = torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    np.savez(path, train_images=dataset.train.images[keep, 0].numpy(), train_labels=dataset.train.labels[keep].numpy(),
             test_images=dataset.test.images[:, 0].numpy(), test_labels=dataset.test.labels.numpy())


def random_init_scores(config, device) -> dict:
    """k-NN and linear probe of an untrained encoder on the same data: what 'fails' is measured against."""
    dataset = load_dataset(config.data)
    mean, std = dataset.normalisation(config.mean, config.std)
    torch.manual_seed(config.seed)
    encoder = create_encoder(config.arch, 1, config.small_stem, 28).to(device)
    return frozen_evaluation(encoder, dataset, mean, std, config, 28, device, Process(), probe=True)


def verdict(claim: Claim, linear: dict, collapsed: dict, random_linear: float, margin: float) -> tuple[str, str]:
    """(verdict, the numbers behind it), by the rules in this file's docstring."""
    if claim.kind == "better":
        a, b = (linear[name] for name in claim.runs)
        gap = a - b
        reason = f"{a:.2f} vs {b:.2f}: {gap:+.2f} points"
    elif claim.kind == "smaller_drop":
        base_a, cut_a, base_b, cut_b = (linear[name] for name in claim.runs)
        drop_a, drop_b = base_a - cut_a, base_b - cut_b
        gap = drop_b - drop_a
        reason = f"BYOL {base_a:.2f} → {cut_a:.2f} ({-drop_a:+.2f}), SimCLR {base_b:.2f} → {cut_b:.2f} " \
                 f"({-drop_b:+.2f}): BYOL's change is {gap:+.2f} points better"
    else:
        base, ablated = (linear[name] for name in claim.runs)
        name = claim.runs[1]
        reason = (f"{ablated:.2f} vs baseline {base:.2f} and random init {random_linear:.2f}"
                  + ("; collapse statistic below the warning line" if collapsed[name] else ""))
        if collapsed[claim.runs[0]] or base <= random_linear + margin:
            return "inconclusive", reason + " (the baseline itself does not beat random init)"
        if collapsed[name] or ablated <= random_linear + margin:
            return "confirmed", reason
        if ablated >= base - margin:
            return "not confirmed", reason + " (as good as the baseline)"
        return "inconclusive", reason + " (worse than the baseline, better than random init)"
    if gap > margin:
        return "confirmed", reason
    if gap < -margin:
        return "not confirmed", reason + " (the opposite, beyond the margin)"
    return "inconclusive", reason + " (within the margin)"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    return platform.machine()


def screenshot(page: Path) -> Path | None:
    """Render the report in headless Chromium, when installed, to check it shows."""
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
                   None)
    if browser is None:
        print("claims: no Chromium found; skipping the screenshot of the report (apt-get install chromium)")
        return None
    shot = page.with_name("screenshot.png")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1300,6000", f"--screenshot={shot}", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    return shot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/claims", help="folder for the runs, the data subset and the report")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-images", type=int, default=20_000, help="pre-training images (and probe labels)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--claims", default="CLAIMS.md")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / f"fashion-mnist-{args.train_images}.npz"
    if not data.exists():
        write_subset(data, args.train_images, seed=0)
    base = dict(data=str(data), epochs=args.epochs, device=args.device)

    for name, change in STUDY.items():
        run = out / name
        if (run / "results.json").is_file():
            print(f"claims: {name}: done before, reused")
            continue
        print(f"claims: {name}: {change or 'baseline'}", flush=True)
        pretrain(**base, **change, out=str(run), overwrite=True)

    device = resolve_device(args.device)
    reference = random_init_scores(PretrainConfig.create(**base), device)
    runs = {name: load_run(out / name) for name in STUDY}
    linear = {name: 100 * run.results["linear_top1"] for name, run in runs.items()}
    knn = {name: 100 * run.results["knn_top1"] for name, run in runs.items()}
    spread = {name: float(run.metrics[-1]["collapse_std"]) for name, run in runs.items()}
    collapsed = {name: is_collapsed(spread[name], run.config.projection_dim)
                 for name, run in runs.items()}
    margin = max(1.0, 3 * abs(linear["byol"] - linear["byol-seed1"]))
    random_linear = 100 * reference["linear_top1"]

    page = report([str(out / name) for name in STUDY], out=str(out / "report"), map_images=1000, device=args.device)
    shot = screenshot(page)

    lines = [
        "# The paper's claims at small scale: Fashion-MNIST, CPU preset",
        "",
        f"Written by `python benchmarks/claims.py --epochs {args.epochs} --train-images {args.train_images}` "
        f"on {date.today()}: {cpu_name()}, {device}, torch {torch.__version__}; the runs took "
        f"{sum(run.results['seconds'] for run in runs.values()) / 60:.0f} min together.",
        "",
        f"Every run pre-trains the CPU preset (narrow ResNet, 1.2 M parameters, heads 1024→256, LARS base lr 4.0, "
        f"τ 0.95 → 1, crop scale 0.4–1, no blur) for {args.epochs} epochs on the same seeded {args.train_images} "
        f"Fashion-MNIST training images at batch 256 — one setting changed per run. Scores: linear probe and k-NN "
        f"(k = 200) on the 10,000 test images, fitted on the {args.train_images} training labels. SimCLR runs on "
        "the same encoder, views, optimiser and schedule as BYOL, as in the BYOL paper's own SimCLR "
        "re-implementation, with NT-Xent temperature 0.5 and nothing tuned for it.",
        "",
        f"Margin m = max(1 point, 3 × seed spread) = **{margin:.2f} points** (baseline seeds 0 and 1: "
        f"{linear['byol']:.2f} and {linear['byol-seed1']:.2f} linear). Random-init encoder: "
        f"{random_linear:.2f} linear, {100 * reference['knn_top1']:.2f} k-NN. Verdict rules: "
        "`benchmarks/claims.py`'s docstring, fixed before the runs.",
        "",
        "Scale: a few epochs on 28 px grayscale images, against the paper's 300–1000 ImageNet epochs. On grayscale "
        "images saturation, hue and grayscale conversion do nothing, so `crop` removes only brightness/contrast "
        "jitter and solarisation (blur is off in the preset). A verdict here says what happens at this scale, not "
        "what happens on ImageNet.",
        "",
        "## Claims",
        "",
        "| claim | runs | verdict | numbers (linear top-1 %) |",
        "| --- | --- | --- | --- |",
    ]
    for claim in CLAIMS:
        result, reason = verdict(claim, linear, collapsed, random_linear, margin)
        lines.append(f"| {claim.text} | {', '.join(claim.runs)} | **{result}** | {reason} |")
    healthy = healthy_spread(runs["byol"].config.projection_dim)
    lines += ["", "## Runs", "", "| run | setting changed | linear top-1 % | k-NN top-1 % | collapse std "
              f"(healthy ≈ {healthy:.4f}) | minutes |", "| --- | --- | --- | --- | --- | --- |"]
    for name, change in STUDY.items():
        lines.append(f"| {name} | {', '.join(f'{k}={v}' for k, v in change.items()) or '— (baseline)'} | "
                     f"{linear[name]:.2f} | {knn[name]:.2f} | {spread[name]:.4f} | "
                     f"{runs[name].results['seconds'] / 60:.1f} |")
    lines += ["", f"Figures (loss, k-NN against epoch and wall-clock, lr and τ, collapse, t-SNE maps): "
              f"`byol report` wrote `{page}`" + (f"; its rendering in headless Chromium: `{shot}`." if shot else "."),
              "", "What these verdicts do and do not say: BENCHMARKS.md, section \"The paper's claims at small "
              "scale\"."]
    Path(args.claims).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    json.dump({"linear": linear, "knn": knn, "collapse_std": spread, "random_init": reference, "margin": margin},
              (out / "claims.json").open("w"), indent=2)


if __name__ == "__main__":
    sys.exit(main())
