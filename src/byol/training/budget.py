"""Spending a time budget (``time_budget``): the training step and the feature pass timed at the
start, on the run's own model at each view size the recipe may choose, on synthetic batches of
the run's size; then the epochs — and, by the recipe's rule (``settings.recipes.budget_size``),
the view size — that fit the budget, the views chosen on the labels and the evaluations
included."""
from __future__ import annotations

import io
import math
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from ..base.device import autocast, synchronize
from ..data import DataSplits
from ..settings.pretrain import PretrainConfig
from ..settings.recipes import DataFacts, budget_size, budget_sizes, resolve
from .choose import PROXY_SHARE, candidates
from .step import SyntheticStep

EVALUATIONS = 5  # k-NN passes a run makes: four monitors and the final one (which also fits the probe)


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
    """What a time budget affords, measured at the start."""

    config: PretrainConfig   # with the view size and the epochs
    lines: list[str]         # how, to print
    final_seconds: float     # to keep for the final evaluation
    epoch_seconds: float     # one of the run's epochs, its checkpoint and monitor included

    def length(self, config: PretrainConfig, facts: DataFacts, started: float, now: float,
               shorten: bool) -> tuple[PretrainConfig, float]:
        """(``config``, the deadline training must keep: a ``time.perf_counter()``).  With
        ``shorten`` (after choosing the views, whose proxies took what they took), ``config`` with
        the epochs that still fit by ``now``, when fewer than planned: so that its learning rate
        still decays to 0 within the budget, where the deadline alone would cut it mid-schedule."""
        deadline = started + config.budget_seconds - self.final_seconds
        epochs = max(1, min(config.epochs, math.floor((deadline - now) / self.epoch_seconds)))
        if shorten and epochs < config.epochs:
            print(f"byol: choosing took longer than planned: {epochs} epochs instead of {config.epochs}, so that the "
                  "learning rate still decays to 0 within the budget", file=sys.stderr)
            kept = ("image_size", "mean", "std", "augmentations", "crop_min_scale")
            config = resolve(self.config.replace(epochs=epochs, **{name: getattr(config, name) for name in kept}),
                             facts)[0]
        return config, deadline


def fit_budget(config: PretrainConfig, facts: DataFacts, labelled: int, device: torch.device, candidates: int,
               started: float) -> BudgetPlan:
    """The plan: ``config`` with the view size (where open) and the epochs that spend what is left of
    ``time_budget`` (counted from ``started``, a ``time.perf_counter()``) after these
    measurements: the run's steps, ``PROXY_SHARE`` of them again for each of ``candidates`` views
    chosen among, each epoch's checkpoint and collapse check, and the feature passes over the
    ``labelled`` images (``EVALUATIONS``, one more per candidate); and the seconds to keep for the
    final evaluation (training stops in time for it if the steps turn out slower: ``Loop.deadline``)."""
    lines, plans, passes, measured, run_epoch = [], {}, 1 + candidates * PROXY_SHARE, {}, {}
    for size in ([config.image_size] if config.image_size else budget_sizes(facts)):
        trial, _ = resolve(config.replace(image_size=size, epochs=1), facts)
        measured[size] = trial, step_and_feature_seconds(trial, facts.channels, device)
    budget = config.budget_seconds - (time.perf_counter() - started)
    for size, (trial, (step, per_image, checkpoint)) in measured.items():
        steps_per_epoch = max(1, facts.images // trial.batch_size)
        evaluations = (EVALUATIONS + candidates) * labelled * per_image
        epoch = step * steps_per_epoch * passes + checkpoint + trial.batch_size * per_image
        if config.knn_every:  # a monitor every knn_every epochs, on top of the final evaluations
            evaluations, epoch = (1 + candidates) * labelled * per_image, epoch + labelled * per_image / config.knn_every
        plans[size] = max(1, math.floor((budget - evaluations) / epoch))
        run_epoch[size] = epoch - step * steps_per_epoch * (passes - 1)  # the run's own epoch, without the proxies
        lines.append(f"  {size} px: {step:.2f} s a step x {steps_per_epoch} steps an epoch"
                     f"{f' x {passes:g} (the views chosen)' if candidates else ''}, {checkpoint:.2f} s a checkpoint, "
                     f"{evaluations:.0f} s of evaluation: {plans[size]} epochs")
    lines.insert(0, f"  {budget:.0f} s left after set-up and these measurements")
    size, why = budget_size(plans, facts) if not config.image_size else (config.image_size, "as given")
    lines.append(f"  -> {size} px, {plans[size]} epochs ({why})")
    final = labelled * measured[size][1][1] * (1 + candidates)
    return BudgetPlan(config.replace(image_size=size, epochs=plans[size]), lines, final, run_epoch[size])


def plan_budget(config: PretrainConfig, facts: DataFacts, dataset: DataSplits, device: torch.device, choosing: bool,
                started: float, main: bool) -> BudgetPlan:
    """The epochs (and view size) that fit the time budget, printed."""
    labelled = len(dataset.eval_train or ()) + len(dataset.test or ())
    proxies = len(candidates(facts, config.crop_min_scale or 0.3)) if choosing else 0
    plan = fit_budget(config, facts, labelled, device, proxies, started)
    if main:
        print(f"byol: spending the time budget of {config.time_budget} (step times measured here):\n" +
              "\n".join(plan.lines))
    return plan
