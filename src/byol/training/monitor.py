"""What a pre-training run measures about itself: the k-NN monitor, the final frozen-feature
evaluation (k-NN and linear probe), and the collapse statistic with its warning; and which
labelled images it measures on — the data's test split; or, for labelled data without one, a
test split held out from pre-training (``test_fraction``) or else a validation split of the
labels, pre-trained on without their labels (stated as such)."""
from __future__ import annotations

import sys

import torch

from ..base.errors import UserError

from ..base.errors import setting
from ..data import DataSplits, ImageSet
from ..evaluation.frozen import calibrated, extract_features, knn_accuracy, knn_k_for, linear_probe
from ..evaluation.intervals import paired_difference
from ..evaluation.metrics import classification_metrics
from ..evaluation.splits import role_seed, stratified_split
from ..models.methods import collapse_statistic, healthy_spread, is_collapsed
from ..settings.pretrain import PretrainConfig
from .distributed import Process, gather_rows, local_rows

VALIDATION_FRACTION = 0.2  # of the labels, to watch progress on when the data has no test split


def measured_on(dataset: DataSplits, config: PretrainConfig) -> tuple[DataSplits, str]:
    """The splits the monitor and the final evaluation use, and what to call the images they
    score: "test" (the data's own test split, or one held out from pre-training) or
    "validation" (labelled images pre-training sees without their labels)."""
    if dataset.test is not None and dataset.test.labels is not None:
        if config.test_fraction:
            raise UserError(f"{setting('test_fraction')} {config.test_fraction}: {dataset.name} has a test split of "
                            "its own, which pre-training never sees; drop the setting")
        return dataset, "validation" if dataset.test_is_validation else "test"
    labelled = dataset.eval_train
    if labelled is None:
        if config.test_fraction:
            raise UserError(f"{setting('test_fraction')}: {dataset.name} has no labels to hold a test split out of")
        return dataset, "test"
    share = config.test_fraction or VALIDATION_FRACTION
    held = stratified_split(labelled.labels, share, role_seed(config.seed, "held-out" if config.test_fraction
                                                                  else "monitor"))[1]
    return dataset.split_off(held, exclude=bool(config.test_fraction)), "test" if config.test_fraction else "validation"


@torch.no_grad()
def projection_spread(model: torch.nn.Module, views: torch.Tensor) -> float:
    """``collapse_statistic`` of the online projections of a batch of views, in eval mode
    (no BatchNorm statistics change, no RNG is drawn)."""
    model.eval()
    spread = collapse_statistic(model.project(views))
    model.train()
    return spread


def sharded_features(encoder, images: ImageSet, mean, std, image_size: int, device: torch.device,
                     process: Process) -> torch.Tensor:
    """Frozen features of every image; with several processes each embeds 1/N and all gather."""
    if not process.distributed:
        return extract_features(encoder, images, mean, std, image_size, device=device)
    local = extract_features(encoder, images.subset(local_rows(len(images), process)), mean, std, image_size,
                             device=device)
    return gather_rows(local, len(images), process)


def frozen_evaluation(encoder, dataset: DataSplits, mean, std, config: PretrainConfig, image_size: int, device: torch.device,
                      process: Process, probe: bool, start: torch.nn.Module | None = None) -> dict:
    """k-NN (and, with ``probe``, linear-probe) test accuracy on frozen features; {} without
    labelled splits, and on ranks other than 0.  Features are computed by all ranks together,
    scored by rank 0.  With ``start`` (the network the run started from) and ``probe``, the same
    probe on its features too, and pre-trained − start in balanced accuracy with its interval."""
    if not dataset.can_evaluate():
        return {}
    labelled = dataset.eval_train
    if probe and process.is_main:
        print("byol: final evaluation: features of the labelled images ...", file=sys.stderr)
    train = sharded_features(encoder, labelled, mean, std, image_size, device, process)
    test = sharded_features(encoder, dataset.test, mean, std, image_size, device, process)
    if not process.is_main:
        return {}
    k = config.knn_k or knn_k_for(labelled.labels)
    results = {"knn_top1": knn_accuracy(train, labelled.labels, test, dataset.test.labels, dataset.num_classes,
                                        k, config.knn_temperature), "knn_k": k}
    if probe:
        print("byol: final evaluation: linear probe, choosing its L2 on the training labels ...", file=sys.stderr)
        result, metrics = probed(train, test, dataset, config)
        results.update(linear_top1=result.accuracy, linear_balanced_accuracy=metrics["balanced_accuracy"],
                       linear_qwk=metrics["qwk"], linear_weight_decay=result.weight_decay,
                       linear_val_top1=result.val_score, linear_selection=result.selection)
    if probe and start is not None:
        results.update(against_start(start, result.test_scores, dataset, mean, std, config, image_size, device))
    return results


def probed(train: torch.Tensor, test: torch.Tensor, dataset: DataSplits, config: PretrainConfig):
    """The final linear probe on frozen features of the labelled training and the scored images,
    and its metrics on the scored images."""
    result = linear_probe(train, dataset.eval_train.labels, test, dataset.test.labels, dataset.num_classes,
                          seed=config.seed)
    return result, classification_metrics(result.test_scores, dataset.test.labels, dataset.num_classes)


def against_start(start: torch.nn.Module, scores: torch.Tensor, dataset: DataSplits, mean, std, config: PretrainConfig,
                  image_size: int, device: torch.device) -> dict:
    """The final probe on the features of the network the run started from (its BatchNorm
    statistics estimated on the labelled training images, as ``byol compare``'s random init), and
    pre-trained − start in balanced accuracy with a paired bootstrap interval over the scored
    images.  Where the labels have no test split this is the only reference a run can give: on
    the fundus-like development set BYOL's steps took the probe below the random network it began
    from (BENCHMARKS.md, "The LARS rate of short runs")."""
    labelled, test = dataset.eval_train, dataset.test
    start = calibrated(start.to(device), labelled, mean, std, image_size, device)
    train_features = extract_features(start, labelled, mean, std, image_size, device=device)
    test_features = extract_features(start, test, mean, std, image_size, device=device)
    reference, metrics = probed(train_features, test_features, dataset, config)
    difference = paired_difference([scores.argmax(1).cpu()], [reference.test_scores.argmax(1).cpu()],
                                   [test.labels.cpu()], [torch.arange(len(test))], dataset.num_classes,
                                   "balanced_accuracy", seed=config.seed)
    return {"start_linear_top1": reference.accuracy, "start_linear_balanced_accuracy": metrics["balanced_accuracy"],
            "start_linear_qwk": metrics["qwk"], "gain_balanced_accuracy": difference.estimate,
            "gain_low": difference.low, "gain_high": difference.high}


def warn_if_collapsed(spread: float, epoch: int, config: PretrainConfig) -> None:
    """Warn of collapse — a fall of the spread — from the second epoch and once the warm-up is over.
    Before, a low spread is the barely trained network's: on grading sets of similar-looking scans
    every run was near 0.005 at epoch 1 (healthy 0.0625; the chooser's proxies too, whose warm-up
    is shorter than an epoch) and at 0.03–0.05 by epoch 2, and a warning there told the user to
    lower a rate that had not yet done anything (BENCHMARKS.md, "The LARS rate of short runs")."""
    if epoch > max(1.0, config.warmup_epochs) and is_collapsed(spread, config.projection_dim):
        healthy = healthy_spread(config.projection_dim)
        target_advice = f", raise {setting('base_target_momentum')}" if config.method == "byol" else ""
        print(f"byol: warning: epoch {epoch}: the representation is collapsing — the spread of normalised "
              f"projections is {spread:.4f}, healthy is about {healthy:.4f} (1/sqrt({config.projection_dim}))"
              f"; lower {setting('base_lr')}{target_advice}, or check the augmentations", file=sys.stderr)
