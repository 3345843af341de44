"""Choosing the views on the user's own labels, honestly.

The paper's augmentation table teaches invariance to colour, brightness and contrast, which is
right for photographs and wrong where those carry the label (an OCTA scan is graded by how
much of it is dark).  When the data has labels and the run leaves both ``augmentations`` and
``crop_min_scale`` open, each candidate of ``candidates`` pre-trains a short proxy run —
``PROXY_SHARE`` of the run's epochs, on every image the run will see — and is scored by a linear
probe on a validation split of the training labels (the monitor's, or one of its own), which
pre-training sees without labels; a test split is held out before anything is chosen and the
proxies never see it.  The best candidate (linear
balanced accuracy; the k-NN's on a tie) trains the run, with a warning when none beat chance by
two standard errors.  When none did at a view size the recipe derived for image files,
the grades may need more pixels: the candidates are tried again at the next size
(``closer_size``), which the run takes if a proxy beats chance there.  The table is printed and
saved as choice.csv in the run directory, the proxies under choice/ (a resumed run reuses
finished ones).
"""
from __future__ import annotations

import csv
import math
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..base.errors import Interrupted
from ..base.rundir import RunDir, atomic_write
from ..data import DataSplits
from ..evaluation.frozen import MIN_VALIDATION
from ..evaluation.splits import role_seed, stratified_split
from ..settings.pretrain import PretrainConfig
from ..settings.recipes import DataFacts, budget_sizes
from .monitor import VALIDATION_FRACTION

PROXY_SHARE = 0.25          # of the run's epochs, per candidate
CHOOSE_MAX_IMAGES = 20_000  # above this many images the recipe's views train without a choice
CHOOSE_MIN_LABELS = 4 * MIN_VALIDATION  # a validation split of MIN_VALIDATION, and three times that to fit on


@dataclass(frozen=True)
class Candidate:
    augmentations: str
    crop_min_scale: float

    @property
    def name(self) -> str:
        return f"{self.augmentations}-crop-{self.crop_min_scale:g}"


def candidates(facts: DataFacts, recipe_crop: float) -> list[Candidate]:
    """What is tried: the paper's table (at the recipe's crop scale; N-band and 16-bit images the
    microscopy set instead) against geometry alone at a wide and a mild crop.  Colour images once
    also tried the ``fundus`` set: its proxy was at chance in all 9 chooser tables that record it
    on fundus-like sets, and both runs it was chosen for ended below their start (BENCHMARKS.md,
    "A cheaper pipeline"), so it is no longer a candidate — a proxy less, a minute on 2 cores."""
    first = Candidate("full", recipe_crop) if facts.channels in (1, 3) and facts.bits == 8 else \
        Candidate("microscopy", recipe_crop)
    return [first, Candidate("geometric", 0.3), Candidate("geometric", 0.6)]


def should_choose(config: PretrainConfig, dataset: DataSplits) -> bool:
    """Labels to choose on (``dataset`` as read, before any split is held out), views left open,
    and a set small enough for proxies to be cheap — or the user asked for it."""
    if config.choose_augmentations is False or config.augmentations or config.crop_min_scale:
        return False
    labelled = dataset.eval_train
    if labelled is None or labelled.labels is None:
        return False
    return bool(config.choose_augmentations) or (
        len(dataset.train) <= CHOOSE_MAX_IMAGES and len(labelled) >= CHOOSE_MIN_LABELS)


def validation_splits(dataset: DataSplits, scored_on: str, seed: int) -> DataSplits:
    """The splits the proxies are scored on: the monitor's validation split when the run has one;
    else a stratified ``VALIDATION_FRACTION`` of the labelled training images — never the test
    split, which the proxies do not see at all."""
    if scored_on == "validation":
        return dataset
    labels = dataset.eval_train.labels
    share = min(0.5, max(VALIDATION_FRACTION, MIN_VALIDATION / len(labels)))
    held = stratified_split(labels, share, role_seed(seed, "choice"))[1]
    return dataset.split_off(held, exclude=False)


def proxy_settings(config: PretrainConfig, asked: PretrainConfig, candidate: Candidate, out: Path) -> dict:
    """A candidate's proxy run: every setting the run as ``asked`` fixes (so a run resumed while
    choosing, whose config.yaml holds exactly those, builds the same proxies), ``PROXY_SHARE`` of
    the run's epochs, the candidate's views; the rest derived for the proxy's length; evaluated
    once, at its end."""
    epochs = max(1, round(PROXY_SHARE * config.epochs))
    keep = {name: value for name, value in asked.to_dict().items() if value is not None}
    for name in ("data", "unlabeled", "resume", "stop_after", "epochs", "warmup_epochs", "base_target_momentum",
                 "out", "overwrite", "knn_every", "test_fraction", "choose_augmentations", "time_budget", "recipe"):
        keep.pop(name, None)  # the recipe's values are among the fixed ones; its length-bound ones are derived
    return {**keep, "arch": config.arch, "image_size": config.image_size, "batch_size": config.batch_size,
            "epochs": epochs, "augmentations": candidate.augmentations, "crop_min_scale": candidate.crop_min_scale,
            "knn_every": 0, "linear_probe": True, "choose_augmentations": False, "out": str(out), "overwrite": True}


def closer_size(asked: PretrainConfig, config: PretrainConfig, facts: DataFacts) -> int | None:
    """The view size to try the candidates at when none beat chance at ``config.image_size``: the
    next of the time budget's sizes the images allow — for image files, when the size was derived
    (not given) and no time budget binds the run's length.  On the dim fundus-like sets the 64-px
    proxies were mostly at chance and BYOL's frozen features within noise of random init's; on
    the development set given 96 px (on a CPU no dearer a step: the standard stem) a proxy beat
    chance and BYOL was better on k-NN at 100 % and 10 % and the linear probe at 10 %
    (BENCHMARKS.md, "Looking closer")."""
    if asked.image_size or asked.time_budget or not facts.files:
        return None
    larger = [size for size in budget_sizes(facts) if size > config.image_size]
    return larger[0] if larger else None


def choose_views(settled: tuple, asked: PretrainConfig, settle, facts: DataFacts, run: RunDir, scored_on: str,
                 pretrain) -> tuple:
    """``settled`` — (config, prepared data, plan, model) at the recipe's view size — with the views
    chosen on the labels; when no candidate beat chance there and ``closer_size`` gives a larger
    size, ``settle(asked at that size)`` with the views chosen there, if one beat chance there."""
    resolved, dataset = settled[:2]
    chosen, rows, fine = choose(resolved, asked, validation_splits(dataset, scored_on, resolved.seed), facts, run,
                                pretrain)
    sizes, closer = [resolved.image_size], None if fine else closer_size(asked, resolved, facts)
    table = rows
    if closer:
        print(f"byol: no candidate beat chance at {resolved.image_size} px: trying them at {closer} px, where "
              "the grades may show", file=sys.stderr)
        larger = settle(asked.replace(image_size=closer))
        splits = validation_splits(larger[1], scored_on, resolved.seed)
        chosen_there, rows_there, fine = choose(larger[0], asked, splits, facts, run, pretrain, f"-{closer}px")
        sizes.append(closer)
        if fine:
            settled, chosen = larger, chosen_there
            print(f"byol: the run takes {closer}-px views, where a candidate beat chance", file=sys.stderr)
            table = [{**row, "chosen": False} for row in rows] + rows_there
        else:  # noise at both sizes: the run keeps the derived size, and the table says so
            table = rows + [{**row, "chosen": False} for row in rows_there]
    save_choice(run, table)
    if not fine:
        warn_at_chance(next(row for row in rows if row["chosen"]), dataset.test.labels, sizes)
    return (settled[0].replace(augmentations=chosen.augmentations, crop_min_scale=chosen.crop_min_scale),
            *settled[1:])


def choose(config: PretrainConfig, asked: PretrainConfig, dataset: DataSplits, facts: DataFacts, run: RunDir,
           pretrain, suffix: str = "") -> tuple[Candidate, list[dict], bool]:
    """The candidate whose proxy scores best on the validation split, every candidate's row, and
    whether it beat chance.  ``config``: the run's settings, resolved; ``asked``: as the user asked
    for them.  ``pretrain``: ``byol.pretrain`` itself (passed in: this module is part of it).
    ``suffix``: of the proxies' folders under choice/ (those of a closer look's size)."""
    rows, folder = [], run.path / "choice"
    print(f"byol: choosing the views on a validation split of {len(dataset.test)} labelled images: "
          f"{len(candidates(facts, config.crop_min_scale))} proxy runs of {PROXY_SHARE:.0%} of the epochs each "
          f"at {config.image_size} px (set --augmentations and --crop-min-scale to skip this)", file=sys.stderr)
    for candidate in candidates(facts, config.crop_min_scale):
        out = folder / (candidate.name + suffix)
        done = RunDir(out).read_results()
        try:
            results = done if done and "linear_top1" in done else \
                pretrain(dataset, **proxy_settings(config, asked, candidate, out)).results
        except Interrupted as stop:  # the proxy's own message would have the user resume the proxy alone
            raise Interrupted(f"stopped by {signal.Signals(stop.signal_number).name} while choosing the views "
                              f"(proxy {candidate.name + suffix}); continue with: byol pretrain --out {run.path} "
                              "--resume",
                              stop.signal_number) from None
        rows.append({"candidate": candidate.name, "image_size": config.image_size,
                     "augmentations": candidate.augmentations, "crop_min_scale": candidate.crop_min_scale,
                     "epochs": max(1, round(PROXY_SHARE * config.epochs)),
                     "linear_balanced_accuracy": results["linear_balanced_accuracy"],
                     "linear_qwk": results["linear_qwk"], "linear_top1": results["linear_top1"],
                     "knn_top1": results["knn_top1"], "seconds": results["seconds"]})
    best = max(rows, key=lambda row: (row["linear_balanced_accuracy"], row["knn_top1"]))
    for row in rows:
        row["chosen"] = row is best
    start = {key: results[key] for key in ("start_linear_balanced_accuracy", "start_linear_qwk", "start_linear_top1")
             if key in results}  # every proxy starts from the same network: the last one's figures serve
    print(choice_table(rows, start))
    if start and best["linear_balanced_accuracy"] < start["start_linear_balanced_accuracy"]:
        print(f"byol: warning: no candidate's proxy beat the network the proxies started from on the validation split "
              f"(best balanced accuracy {best['linear_balanced_accuracy']:.1%}, the start's "
              f"{start['start_linear_balanced_accuracy']:.1%}): pre-training with these views may lose what your "
              "labels depend on. Look at the views (byol views), try larger views (--time-budget), and check the "
              "run with byol compare against random init", file=sys.stderr)
    return Candidate(best["augmentations"], best["crop_min_scale"]), rows, beat_chance(best, dataset.test.labels)


def beat_chance(best: dict, labels: torch.Tensor) -> bool:
    """Whether ``best``'s proxy beat chance on the validation split ``labels`` by two standard errors."""
    return best["linear_balanced_accuracy"] > chance_bound(labels)[1]


def warn_at_chance(best: dict, labels: torch.Tensor, sizes: list[int]) -> None:
    """The warning that no candidate beat chance at any of ``sizes``."""
    chance, bound = chance_bound(labels)
    tried = " or ".join(f"{size}-px" for size in sizes)
    print(f"byol: warning: no candidate beat chance on the validation split (best balanced accuracy "
          f"{best['linear_balanced_accuracy']:.1%}; chance {chance:.1%}, and up to {bound:.1%} is within two "
          f"standard errors of it), so this choice rests on noise: the proxies may be too short to show the "
          f"grades, or the grades may not be visible in {tried} views. Look at the views (byol "
          "views); larger views (--image-size, --time-budget) or more labels may help", file=sys.stderr)


def chance_bound(labels) -> tuple[float, float]:
    """(chance, bound): the balanced accuracy of guessing among the classes present in ``labels``,
    and that plus two standard errors of a guesser's balanced accuracy on exactly these images
    (each class's recall a binomial of its count at the chance rate)."""
    counts = [count for count in torch.bincount(labels).tolist() if count]
    chance = 1 / len(counts)
    error = math.sqrt(sum(chance * (1 - chance) / count for count in counts)) / len(counts)
    return chance, chance + 2 * error


def choice_table(rows: list[dict], start: dict | None = None) -> str:
    lines = ["| views (crops from) | view px | proxy epochs | linear balanced acc. | linear QWK | linear top-1 | "
             "k-NN top-1 | seconds |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        mark = " **(chosen)**" if row["chosen"] else ""
        lines.append(f"| {row['augmentations']} ({row['crop_min_scale']:g}){mark} | {row['image_size']} | "
                     f"{row['epochs']} | "
                     f"{100 * row['linear_balanced_accuracy']:.2f} | {row['linear_qwk']:.3f} | "
                     f"{100 * row['linear_top1']:.2f} | {100 * row['knn_top1']:.2f} | {row['seconds']:.0f} |")
    if start:
        lines.append(f"| no pre-training: the start, for reference | {rows[0]['image_size']} | 0 | "
                     f"{100 * start['start_linear_balanced_accuracy']:.2f} | {start['start_linear_qwk']:.3f} | "
                     f"{100 * start['start_linear_top1']:.2f} | — | — |")
    return "\n".join(lines)


def save_choice(run: RunDir, rows: list[dict]) -> None:
    """``rows`` as choice.csv in the run directory."""
    def write(temporary: Path) -> None:
        with temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    atomic_write(run.path / "choice.csv", write)
