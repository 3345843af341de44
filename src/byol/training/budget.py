"""Spending a time budget (``time_budget``): the training step and the feature pass timed at the
start, on the run's own model at each view size the recipe may choose, on synthetic batches of
the run's size; then the epochs — and, by the recipe's rule (``settings.recipes.budget_size``),
the view size — that fit the budget, the views chosen on the labels and the evaluations
included."""
from __future__ import annotations

import io
import math
import statistics
import time

import torch

from ..base.device import autocast, synchronize
from ..settings.pretrain import PretrainConfig
from ..settings.recipes import DataFacts, budget_size, budget_sizes, resolve
from .choose import PROXY_SHARE
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


def fit_budget(config: PretrainConfig, facts: DataFacts, labelled: int, device: torch.device, candidates: int,
               started: float) -> tuple[PretrainConfig, list[str], float]:
    """``config`` with the view size (where open) and the epochs that spend what is left of
    ``time_budget`` (counted from ``started``, a ``time.perf_counter()``) after these
    measurements: the run's steps, ``PROXY_SHARE`` of them again for each of ``candidates`` views
    chosen among, each epoch's checkpoint and collapse check, and the feature passes over the
    ``labelled`` images (``EVALUATIONS``, one more per candidate); and the seconds to keep for the
    final evaluation (training stops in time for it if the steps turn out slower: ``Loop.deadline``)."""
    lines, plans, passes, measured = [], {}, 1 + candidates * PROXY_SHARE, {}
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
        lines.append(f"  {size} px: {step:.2f} s a step x {steps_per_epoch} steps an epoch"
                     f"{f' x {passes:g} (the views chosen)' if candidates else ''}, {checkpoint:.2f} s a checkpoint, "
                     f"{evaluations:.0f} s of evaluation: {plans[size]} epochs")
    lines.insert(0, f"  {budget:.0f} s left after set-up and these measurements")
    size, why = budget_size(plans, facts) if not config.image_size else (config.image_size, "as given")
    lines.append(f"  -> {size} px, {plans[size]} epochs ({why})")
    final = labelled * measured[size][1][1] * (1 + candidates)
    return config.replace(image_size=size, epochs=plans[size]), lines, final
