"""Frozen-encoder evaluation (paper §4.1): features computed once with the encoder in eval
mode, then a weighted k-NN vote or a linear probe (logistic regression, L-BFGS) whose L2 is
chosen on the training labels — a validation split, or cross-validation where a split would be
too small — never on the test set.  One rule for every caller: ``byol pretrain``'s final probe,
``byol eval`` and ``byol compare``.

BatchNorm statistics that were never estimated (a random initialisation's defaults, mean 0 and
variance 1, describe no real activation) are estimated on the labelled training images first
(``calibrated``); an encoder's own statistics are kept.  Fine-tuning starts from the same
encoder, so its epoch 0 and the probe see the same features."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..views.ops import eval_crop_for, eval_view, normalise
from ..data import ImageSet
from ..base.device import autocast
from .metrics import classification_metrics
from ..settings.options import KNN_TEMPERATURE, MONITOR_K
from .splits import stratified_folds, stratified_split


@torch.no_grad()
def extract_features(
    encoder: nn.Module, images: torch.Tensor | ImageSet, mean: torch.Tensor, std: torch.Tensor,
    image_size: int | None = None, batch_size: int = 1024, device: torch.device | str = "cpu",
    crop: float | None = None, progress: str | None = None,
) -> torch.Tensor:
    """Features (N, D) of images — a tensor (N, C, H, W) or an ``ImageSet``, in memory or
    streamed — with the encoder in eval mode, computed and returned on ``device``.

    Each image is seen through ``augment.eval_view``: its centred square of side ``crop`` ×
    its shorter side (default: ``augment.eval_crop_for`` the size), resized to ``image_size``
    (the size the encoder was trained at; default: the images' own), then normalised exactly as
    during pre-training.  ``progress`` names a progress bar."""
    image_set = images if isinstance(images, ImageSet) else ImageSet(images)
    was_training = encoder.training
    encoder.eval()
    device = torch.device(device)
    mean, std = mean.to(device), std.to(device)
    features = []
    batches = image_set.batches(torch.arange(len(image_set)), batch_size, device)
    for batch in tqdm(batches, total=-(-len(image_set) // batch_size), desc=progress, unit="batch", leave=False,
                      disable=progress is None, dynamic_ncols=True):
        size = image_size or batch.images.shape[-1]
        x = eval_view(batch.images, size, eval_crop_for(size) if crop is None else crop, batch.sizes)
        with autocast(device):
            features.append(encoder(normalise(x, mean, std).contiguous(memory_format=torch.channels_last)).float())
    encoder.train(was_training)
    return torch.cat(features)


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor, train_labels: torch.Tensor, query_features: torch.Tensor,
    num_classes: int, k: int = MONITOR_K, temperature: float = KNN_TEMPERATURE, chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores (N_query, num_classes) from the k nearest training features by cosine
    similarity, each neighbour voting with weight exp(similarity / temperature)
    (Wu et al. 2018, the k-NN monitor of the seed tutorial: k = 200, T = 0.1)."""
    bank = F.normalize(train_features, dim=1)
    labels = train_labels.to(bank.device)
    k = min(k, len(bank))
    scores = []
    for start in range(0, len(query_features), chunk_size):
        query = F.normalize(query_features[start:start + chunk_size].to(bank.device), dim=1)
        similarity, index = (query @ bank.T).topk(k, dim=1)
        weights = (similarity / temperature).exp()
        votes = torch.zeros(len(query), num_classes, device=bank.device)
        scores.append(votes.scatter_add_(1, labels[index], weights))
    return torch.cat(scores)


def knn_accuracy(train_features, train_labels, test_features, test_labels, num_classes: int,
                 k: int = MONITOR_K, temperature: float = KNN_TEMPERATURE) -> float:
    """Top-1 accuracy (0–1) of ``knn_predict`` on a labelled test set."""
    scores = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature)
    return (scores.argmax(dim=1).cpu() == test_labels.cpu()).float().mean().item()


def knn_k_for(labels: torch.Tensor, cap: int = MONITOR_K) -> int:
    """Neighbours for a bank with these labels: √N (the usual rule for k-NN), at most ``cap``
    (the monitor's 200 on large banks) and at most the smallest class's count, so that the
    rarest grade can still win a vote; at least 1."""
    counts = torch.bincount(labels.cpu())
    smallest = int(counts[counts > 0].min()) if len(labels) else 1
    return max(1, min(cap, round(math.sqrt(len(labels))), smallest))


@dataclass
class LinearProbeResult:
    accuracy: float            # test top-1, 0–1
    weight_decay: float        # L2 strength chosen on the training labels
    val_score: float           # validation (or cross-validation) score at that strength
    classifier: nn.Linear      # fitted on standardised features (see ``standardise``)
    test_scores: torch.Tensor  # (N_test, num_classes) logits
    selection: str = ""        # how the L2 was chosen, for the tables


def fit_logistic_regression(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                            weight_decay: float, max_iter: int = 500, start: nn.Linear | None = None,
                            class_weights: torch.Tensor | None = None) -> nn.Linear:
    """Multinomial logistic regression, full batch, trained to convergence with L-BFGS
    (cross-entropy, class-weighted when given, + weight_decay/2·‖W‖²; the bias is not
    penalised), from zeros or from the weights of ``start`` (a fit with more L2: the path from
    strong to weak converges in a few steps each)."""
    classifier = nn.Linear(features.shape[1], num_classes).to(features.device)
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    if start is not None:
        classifier.load_state_dict(start.state_dict())
    optimizer = torch.optim.LBFGS(classifier.parameters(), lr=1, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")
    labels = labels.to(features.device)

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(classifier(features), labels, weight=class_weights)
        loss = loss + weight_decay / 2 * classifier.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return classifier.requires_grad_(False)


def feature_scale(train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of each dimension of the training set's features (the spread floored at 1e-6)."""
    return train.mean(dim=0), train.std(dim=0).clamp_min(1e-6)


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Zero-mean, unit-variance features using the training set's statistics (``feature_scale``)."""
    mean, std = feature_scale(train)
    return [(x - mean) / std for x in (train, *others)]


def weight_decays_for(n_labels: int) -> tuple[float, ...]:
    """The L2 strengths a probe chooses from: 1e-6 … 1e-2, and up to 1 below 10,000 labels,
    where stronger regularisation is often best."""
    return (1e-6, 1e-5, 1e-4, 1e-3, 1e-2) + ((1e-1, 1.0) if n_labels < 10_000 else ())


# Below this many validation images a held-out split is too small to choose settings on: the
# probe's L2 is then chosen by 5-fold cross-validation over all the labels, and fine-tuning runs
# its fixed schedule (``finetune.py``).
MIN_VALIDATION = 100
CV_FOLDS = 5


def selection_folds(labels: torch.Tensor, val_index: torch.Tensor | None, val_fraction: float,
                    seed: int) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], str]:
    """The (fit, val) pairs a setting is chosen on, and how to say it: ``val_index`` (or a
    stratified ``val_fraction`` drawn with ``seed``) when it holds ``MIN_VALIDATION`` images,
    else ``CV_FOLDS``-fold cross-validation over every label."""
    if val_index is None:
        val_index = stratified_split(labels, val_fraction, seed)[1]
    if len(val_index) >= MIN_VALIDATION:
        mask = torch.ones(len(labels), dtype=torch.bool)
        mask[val_index.cpu()] = False
        return [(mask.nonzero().squeeze(1), val_index.cpu())], f"a validation split of {len(val_index)}"
    return stratified_folds(labels, CV_FOLDS, seed), f"{CV_FOLDS}-fold cross-validation on {len(labels)} labels"


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """N / (K · n_c) for each class c (1 for a balanced set); absent classes get 0."""
    counts = torch.bincount(labels.cpu(), minlength=num_classes).float()
    return torch.where(counts > 0, len(labels) / (num_classes * counts.clamp_min(1)), torch.zeros(()))


def choose_weight_decay(features: torch.Tensor, labels: torch.Tensor, num_classes: int, folds, metric: str,
                        weight_decays: tuple[float, ...], balance: bool = False) -> tuple[float, float]:
    """(L2, score): the strength with the best mean ``metric`` over ``folds`` ((fit, val) index pairs)."""
    best, previous = (-math.inf, weight_decays[0]), [None] * len(folds)
    for weight_decay in sorted(weight_decays, reverse=True):  # strong to weak, each fit warm-started
        scores = []
        for number, (fit, val) in enumerate(folds):
            fit, val = fit.to(features.device), val.to(features.device)
            weights = class_weights(labels[fit], num_classes).to(features.device) if balance else None
            previous[number] = fit_logistic_regression(features[fit], labels[fit], num_classes, weight_decay,
                                                       start=previous[number], class_weights=weights)
            scores.append(classification_metrics(previous[number](features[val]), labels[val], num_classes)[metric])
        best = max(best, (sum(scores) / len(scores), weight_decay))
    return best[1], best[0]


def linear_probe(
    train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
    test_labels: torch.Tensor, num_classes: int, weight_decays: tuple[float, ...] | None = None,
    val_fraction: float = 0.1, seed: int = 0, val_index: torch.Tensor | None = None, metric: str = "top1",
    balance: bool = False,
) -> LinearProbeResult:
    """Linear evaluation (§4.1) on frozen features.

    The L2 strength is chosen by ``metric`` on the training labels alone (``selection_folds``:
    the validation split ``val_index``, or a stratified ``val_fraction`` drawn with ``seed``, or
    cross-validation where that split is too small), then the classifier is refit on the whole
    training set and scored once on the test set.  ``balance``: class-weighted cross-entropy."""
    train_features, test_features = standardise(train_features.float(), test_features.float())
    train_labels = train_labels.to(train_features.device)
    weight_decays = weight_decays or weight_decays_for(len(train_labels))
    pairs, selection = selection_folds(train_labels.cpu(), val_index, val_fraction, seed)
    weight_decay, val_score = choose_weight_decay(train_features, train_labels, num_classes, pairs, metric,
                                                  weight_decays, balance)
    weights = class_weights(train_labels, num_classes).to(train_features.device) if balance else None
    classifier = fit_logistic_regression(train_features, train_labels, num_classes, weight_decay,
                                         class_weights=weights)
    scores = classifier(test_features)
    accuracy = (scores.argmax(dim=1).cpu() == test_labels.cpu()).float().mean().item()
    return LinearProbeResult(accuracy, weight_decay, val_score, classifier, scores,
                             selection + (", class-weighted" if balance else ""))


def never_estimated(encoder: nn.Module) -> bool:
    """Whether the encoder's BatchNorm layers still hold their initial statistics (a random init)."""
    layers = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    return bool(layers) and all(int(m.num_batches_tracked) == 0 for m in layers)


@torch.no_grad()
def recalibrate_batchnorm(encoder: nn.Module, images: ImageSet, mean, std, image_size: int,
                          device: torch.device) -> None:
    """Re-estimate the encoder's BatchNorm running statistics on ``images`` (train-mode forward
    passes, a plain average over them; no weight changes)."""
    layers = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the batches
    was_training = encoder.training
    encoder.train()
    mean, std = mean.to(device), std.to(device)
    for batch in images.batches(torch.arange(len(images)), 256, device):
        if len(batch.images) > 1:
            view = normalise(eval_view(batch.images, image_size, eval_crop_for(image_size), batch.sizes), mean, std)
            with autocast(device):
                encoder(view.contiguous(memory_format=torch.channels_last))
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    encoder.train(was_training)


def calibrated(encoder: nn.Module, images: ImageSet, mean, std, image_size: int, device: torch.device) -> nn.Module:
    """``encoder``, its BatchNorm statistics estimated on ``images`` when it never had any."""
    if never_estimated(encoder):
        recalibrate_batchnorm(encoder, images, mean, std, image_size, device)
    return encoder
