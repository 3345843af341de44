"""Spending a time budget (``time_budget``): the training step and the feature pass timed at the
start, on the run's own model at each view size the recipe may choose, on synthetic batches of
the run's size; then the epochs that fit the budget at each size, the proxies that choose the
views (and, with labels, the size: ``choose.choose_size``) and the evaluations included.
Without labels to choose on, the size follows the recipe's rule (``settings.recipes.budget_size``)."""
from __future__ import annotations

import io
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..base.device import autocast, synchronize
from ..base.rundir import write_text
from ..data import DataSplits
from ..settings.pretrain import PretrainConfig
from ..settings.recipes import DataFacts, budget_size, budget_sizes, resolve
from .choose import PROXY_SHARE, candidates
from .step import SyntheticStep

EVALUATIONS = 5  # k-NN passes a run makes: four monitors and the final one (which also fits the probe)
BUDGET_FILE = "budget.json"  # the plan, in the run directory
MIN_PROXY_EPOCHS = 2  # a view size is tried only where its proxy gets this many epochs


def timed(function, repeats: int, device: torch.device) -> float:
    """Median seconds of ``function`` after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_and_feature_seconds(config: PretrainConfig, channels: int,
                             device: torch.device) -> tuple[float, float, float]:
    """(seconds per training step, seconds per image of the frozen-feature pass, seconds an
    epoch's checkpoint takes to serialise) of ``config``."""
    step = SyntheticStep(config, channels, device)

    def features():
        with torch.no_grad(), autocast(device):
            step.model.online_encoder.eval()(step.images.float().contiguous(memory_format=torch.channels_last))

    def checkpoint():
        torch.save({"model": step.model.state_dict(), "optimizer": step.train_step.optimizer.state_dict()},
                   io.BytesIO())

    return timed(step, 2, device), timed(features, 2, device) / config.batch_size, timed(checkpoint, 1, device)


@dataclass
class BudgetPlan:
    """What a time budget affords: for each view size the run may take, its epochs, the seconds one
    of its epochs takes and the seconds its final evaluation takes."""

    config: PretrainConfig                      # the size (provisional while it is chosen) and its epochs
    epochs: dict[int, int]
    epoch_seconds: dict[int, float]
    final_seconds: dict[int, float]
    lines: list[str]
    size_open: bool = False                     # the size is chosen on the labels among ``epochs``

    def save(self, path: Path) -> None:
        write_text(path, json.dumps({"image_size": self.config.image_size, "size_open": self.size_open,
                                     "lines": self.lines, **{name: {str(size): value for size, value in
                                                                    getattr(self, name).items()}
                                                             for name in ("epochs", "epoch_seconds", "final_seconds")}},
                                    indent=1))

    @classmethod
    def load(cls, path: Path, config: PretrainConfig) -> "BudgetPlan":
        """The plan ``save`` wrote, for ``config`` as asked."""
        saved = json.loads(path.read_text())
        tables = {name: {int(size): value for size, value in saved[name].items()}
                  for name in ("epochs", "epoch_seconds", "final_seconds")}
        size = saved["image_size"]
        return cls(config.replace(image_size=size, epochs=tables["epochs"][size]), **tables, lines=saved["lines"],
                   size_open=saved["size_open"])

    def at(self, size: int) -> PretrainConfig:
        return self.config.replace(image_size=size, epochs=self.epochs[size])

    def length(self, config: PretrainConfig, facts: DataFacts, started: float,
               shorten: bool) -> tuple[PretrainConfig, float]:
        """(``config``, the deadline training must keep: a ``time.perf_counter()``).  With
        ``shorten`` (after choosing, whose proxies took what they took), ``config`` with the epochs
        that still fit, when fewer than planned: so that its learning rate still decays to 0."""
        size = config.image_size
        deadline = started + config.budget_seconds - self.final_seconds[size]
        epochs = max(1, min(config.epochs, math.floor((deadline - time.perf_counter()) / self.epoch_seconds[size])))
        if shorten and epochs < config.epochs:
            print(f"byol: choosing took longer than planned: {epochs} epochs instead of {config.epochs}, so that the "
                  "learning rate still decays to 0 within the budget", file=sys.stderr)
            kept = ("image_size", "mean", "std", "augmentations", "crop_min_scale")
            config = resolve(self.config.replace(epochs=epochs, **{name: getattr(config, name) for name in kept}),
                             facts)[0]
        return config, deadline


def fit_budget(config: PretrainConfig, facts: DataFacts, labelled: int, device: torch.device, candidates: int,
               started: float, size_open: bool = False) -> BudgetPlan:
    """The view size (where open) and the epochs that spend what is left of ``time_budget``
    (counted from ``started``, a ``time.perf_counter()``) after these measurements: the run's
    steps, ``PROXY_SHARE`` of them again for each of ``candidates`` views chosen among, each
    epoch's checkpoint and collapse check, and the feature passes over the ``labelled`` images
    (``EVALUATIONS``, one more per candidate).  With ``size_open`` (labels to choose on), the size
    is chosen on them: every size gets the same time to train, the run's and a proxy's share of it
    for each size tried (``choose.choose_size``), the views' proxies reusing that size's first;
    else the recipe's rule (``budget_size``).  Training stops in time for the final evaluation if
    the steps turn out slower (``Loop.deadline``)."""
    lines, passes, measured = [], 1 + candidates * PROXY_SHARE, {}
    for size in ([config.image_size] if config.image_size else budget_sizes(facts)):
        trial, _ = resolve(config.replace(image_size=size, epochs=1), facts)
        measured[size] = trial, step_and_feature_seconds(trial, facts.channels, device)
    size_open = size_open and len(measured) > 1
    budget = config.budget_seconds - (time.perf_counter() - started)
    epoch_seconds, evaluation, final, epochs = {}, {}, {}, {}
    for size, (trial, (step, per_image, checkpoint)) in measured.items():
        training = step * max(1, facts.images // trial.batch_size)
        overhead = checkpoint + trial.batch_size * per_image  # and the collapse check's pass
        evaluation[size] = labelled * per_image
        runs = EVALUATIONS + candidates
        if config.knn_every:  # a monitor every knn_every epochs, on top of the final evaluations
            runs, overhead = 1 + candidates, overhead + evaluation[size] / config.knn_every
        epoch_seconds[size], final[size] = training + overhead, evaluation[size] * (1 + candidates)
        epochs[size] = max(1, math.floor((budget - runs * evaluation[size]) / (training * passes + overhead)))
    if size_open:  # one proxy per size, then the views' (one reused): the same training time for every size
        shares = 1 + PROXY_SHARE * (len(measured) + max(0, candidates - 1))
        spent = sum(evaluation.values()) + (runs - 1) * max(evaluation.values())
        epochs = {size: max(1, math.floor((budget - spent) / shares / epoch_seconds[size])) for size in measured}
    lines.append(f"  {budget:.0f} s left after set-up and these measurements")
    for size, (trial, (step, per_image, checkpoint)) in measured.items():
        steps_per_epoch = max(1, facts.images // trial.batch_size)
        lines.append(f"  {size} px: {step:.2f} s a step x {steps_per_epoch} steps an epoch, {checkpoint:.2f} s a "
                     f"checkpoint, {evaluation[size]:.0f} s a pass over the labelled images: {epochs[size]} epochs")
    if size_open:
        sizes = {size: n for size, n in epochs.items() if round(PROXY_SHARE * n) >= MIN_PROXY_EPOCHS}
        epochs = sizes or {min(epochs): epochs[min(epochs)]}
        size = min(epochs)  # provisional
        lines.append(f"  -> the size chosen on the labels among {', '.join(f'{s} px' for s in epochs)} (each "
                     f"size's proxy at least {MIN_PROXY_EPOCHS} epochs), {PROXY_SHARE:.0%} of its epochs each, the "
                     f"{candidates} views' proxies and the run at the size chosen")
    else:
        size, why = budget_size(epochs, facts) if not config.image_size else (config.image_size, "as given")
        lines.append(f"  -> {size} px, {epochs[size]} epochs ({why}"
                     f"{f'; {candidates} views chosen first, {PROXY_SHARE:.0%} of the epochs each' if candidates else ''})")
    return BudgetPlan(config.replace(image_size=size, epochs=epochs[size]), epochs,
                      {s: epoch_seconds[s] for s in epochs}, {s: final[s] for s in epochs}, lines,
                      size_open and len(epochs) > 1)


def plan_budget(config: PretrainConfig, facts: DataFacts, dataset: DataSplits, device: torch.device,
                choosing: bool, started: float, main: bool, run: Path) -> BudgetPlan:
    """The epochs (and view size) that fit the time budget; a resumed run's plan, as it was made."""
    if config.resume and (run / BUDGET_FILE).exists():
        return BudgetPlan.load(run / BUDGET_FILE, config)
    labelled = len(dataset.eval_train or ()) + len(dataset.test or ())
    proxies = len(candidates(facts, config.crop_min_scale or 0.3)) if choosing else 0
    plan = fit_budget(config, facts, labelled, device, proxies, started, size_open=choosing)
    if main:
        print(f"byol: spending the time budget of {config.time_budget} (step times measured here):\n" +
              "\n".join(plan.lines))
    return plan
