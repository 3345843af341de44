"""How sure a comparison of two encoders is: the paired difference A − B of a metric, with a 95 %
interval that counts both sources of noise, and the verdict it supports.

Both encoders are scored on the same test images in every seed, so the difference is taken
per seed, d_s = metric(A_s) − metric(B_s), and averaged over the S seeds.  Its uncertainty has
two parts:
- the test images: which ones happened to be drawn.  A paired bootstrap resamples them
  (``RESAMPLES`` times; the same resampled images for A and B, and for every seed that shares
  the test set) and recomputes the metric — QWK, balanced accuracy and macro-F1 are not
  averages over images, so each resample gets its own confusion matrix;
- the seeds: split, label subset, initialisation, fine-tuning.  Their spread s² of d_s.
With one test set for every seed (the dataset's own, ``--test-data``, a run's held-out split)
the two add: the variance of the mean is s²/S + V_bootstrap, the first known on S − 1 degrees
of freedom only, so the interval is the quantile of their generalised pivot (``sum_quantile``;
Welch–Satterthwaite's t covered 91 % instead of 95 % in the simulation test).  With a test
split drawn anew per seed, s² already holds the test-image noise: the half-width is
t(S − 1)·√(s²/S), but never less than the bootstrap's own 1.96·√V (a lucky spread over few
seeds is no evidence).  The interval is estimate ± the half-width.  A spread of zero never
narrows it to nothing: the test images still count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .metrics import confusion_matrices, from_confusion

RESAMPLES = 2000
RULE = ("A − B is the mean over seeds of the paired difference; its 95 % interval counts the test images (a paired "
        f"bootstrap, {RESAMPLES:,} resamples, the same for both encoders) and the seeds (their spread, Student's t). "
        "better: the whole interval above 0; worse: below 0; same: every prediction identical; within noise: the "
        "interval holds 0.  One seed gives the test-image interval alone, and no verdict.")


@dataclass(frozen=True)
class Difference:
    estimate: float   # mean over seeds of metric(A) − metric(B)
    low: float        # the 95 % interval
    high: float
    verdict: str      # better, worse, same, within noise, or why there is none


def t_quantile(probability: float, freedom: float) -> float:
    """Student's t quantile (∞ freedom: the normal's), by bisection on the CDF integrated with
    Simpson's rule — accurate to 1e-6, no scipy needed."""
    if math.isinf(freedom):
        return math.sqrt(2) * torch.special.erfinv(torch.tensor(2 * probability - 1, dtype=torch.float64)).item()
    log_norm = math.lgamma((freedom + 1) / 2) - math.lgamma(freedom / 2) - 0.5 * math.log(freedom * math.pi)

    def cdf(x: float) -> float:
        grid = torch.linspace(0, x, 2001, dtype=torch.float64)
        density = torch.exp(log_norm - (freedom + 1) / 2 * torch.log1p(grid ** 2 / freedom))
        weights = torch.ones(2001, dtype=torch.float64)
        weights[1:-1:2], weights[2:-1:2] = 4, 2
        return 0.5 + (weights * density).sum().item() * x / 6000

    low, high = 0.0, 64.0  # t(0.975) is 12.7 at one degree of freedom, less above
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) < probability else (low, middle)
    return (low + high) / 2


def sum_quantile(estimated: float, freedom: int, known: float, probability: float = 0.975) -> float:
    """The ``probability`` quantile of Z·√(V) with V = ``estimated``·ν/χ²_ν + ``known`` (the
    generalised pivot of a variance with two parts, one estimated on ν degrees of freedom, one
    as good as known): Student's t(ν)·√estimated when ``known`` is 0, the normal's when
    ``estimated`` is 0.  Monte Carlo, 100,000 seeded draws (the quantile to about 0.3 %)."""
    generator, draws = torch.Generator().manual_seed(0), 100_000
    chi2 = (torch.randn(draws, freedom, generator=generator, dtype=torch.float64) ** 2).sum(1)
    variance = estimated * freedom / chi2 + known
    pivot = torch.randn(draws, generator=generator, dtype=torch.float64) * variance.sqrt()
    return torch.quantile(pivot.abs(), 2 * probability - 1).item()


def _resampled(predicted: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, num_classes: int,
               metric: str) -> torch.Tensor:
    """The metric of each resample (R,) of one set of predictions, ``index`` (R, N) into it."""
    return from_confusion(confusion_matrices(predicted[index], labels[index], num_classes))[metric]


def paired_difference(a: list[torch.Tensor], b: list[torch.Tensor], labels: list[torch.Tensor],
                      test_ids: list[torch.Tensor], num_classes: int, metric: str, seed: int = 0,
                      resamples: int = RESAMPLES) -> Difference:
    """A − B of ``metric`` over seeds, with the 95 % interval and verdict of the module docstring.
    Per seed s: ``a[s]``, ``b[s]`` the predicted classes of the test images, ``labels[s]`` theirs,
    ``test_ids[s]`` which images they are (equal in every seed: a shared test set)."""
    if all(torch.equal(x, y) for x, y in zip(a, b)):
        return Difference(0.0, 0.0, 0.0, "same")
    seeds = len(a)
    per_seed = torch.tensor([(_resampled(x, y, torch.arange(len(y))[None], num_classes, metric)
                              - _resampled(z, y, torch.arange(len(y))[None], num_classes, metric)).item()
                             for x, z, y in zip(a, b, labels)], dtype=torch.float64)
    shared = all(torch.equal(ids, test_ids[0]) for ids in test_ids)
    generator = torch.Generator().manual_seed(seed)
    draws = [torch.randint(len(y), (resamples, len(y)), generator=generator) for y in labels[:1 if shared else None]]
    replicates = torch.stack([_resampled(x, y, draws[0 if shared else s], num_classes, metric)
                              - _resampled(z, y, draws[0 if shared else s], num_classes, metric)
                              for s, (x, z, y) in enumerate(zip(a, b, labels))]).mean(0)
    bootstrap = replicates.var().item()
    estimate = per_seed.mean().item()
    if seeds == 1:
        half = t_quantile(0.975, math.inf) * math.sqrt(bootstrap)
        return Difference(estimate, estimate - half, estimate + half, "one seed: no verdict")
    spread = per_seed.var().item() / seeds
    if shared:
        half = sum_quantile(spread, seeds - 1, bootstrap)
    else:  # the seeds' spread holds the test images' noise; the bootstrap alone bounds it from below
        half = max(t_quantile(0.975, seeds - 1) * math.sqrt(spread), t_quantile(0.975, math.inf) * math.sqrt(bootstrap))
    low, high = estimate - half, estimate + half
    verdict = "better" if low > 0 else "worse" if high < 0 else "within noise"
    return Difference(estimate, low, high, verdict)
