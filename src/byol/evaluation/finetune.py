"""Fine-tuning (paper §4.2, semi-supervised): the whole encoder plus a new linear head,
trained on the labelled images with crop/flip augmentation, stopped early on a
validation split, with optional class-imbalance handling (a class-weighted probe to start
from, or class-balanced draws).

The caller chooses the images (``evaluate.label_split`` gives the paper's 1 % / 10 %
subsets and a validation split inside them); this module only trains and scores.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..views.spec import DOMAIN_CHANGES, ViewSpec

from ..views.apply import augment

from ..views.ops import eval_crop_for, eval_view, normalise
from ..data import ImageSet
from ..base.device import autocast
from .frozen import (calibrated, class_weights, extract_features, feature_scale, fit_logistic_regression,
                     linear_probe, standardise)
from .metrics import classification_metrics
from ..optim.lars import parameter_groups
from ..optim.schedule import learning_rate
from ..settings.mechanism import Settings, option, require

BALANCING = ("none", "loss", "sampler")
VIEWS = ("crop-flip", "geometric")


@dataclass
class FinetuneSettings(Settings):
    """The fine-tuning recipe (``byol finetune`` / ``byol compare`` flags)."""

    epochs: int = option(30, "epochs of fine-tuning (at least min-steps optimizer steps: small label sets get more)")
    min_steps: int = option(200, "at least this many optimizer steps, however few the labels")
    patience: int = option(0, "stop after this many epochs without a better validation score; 0: run all epochs")
    batch_size: int = option(64, "fine-tuning batch (at most the number of labelled images)")
    lr: float = option(0.05, "SGD (Nesterov momentum 0.9) learning rate of the head per 256 images; cosine decay")
    encoder_lr: float = option(1.0, "the encoder's learning rate as a share of the head's; 1 (the whole network "
                               "at one rate, chosen on a validation split of Fashion-MNIST's training images "
                               "over 0.1) — lower keeps the pre-trained encoder closer to where it started")
    head: str = option("probe", "probe: start from the linear probe on standardised features (LP-FT, Kumar et al. "
                       "2022), so fine-tuning starts where the probe ends; new: a zero head. Either way the head is "
                       "re-fitted at the end as the probe was, on the fine-tuned features", choices=("probe", "new"))
    weight_decay: float = option(0.0, "weight decay on weights (not biases or norm parameters)")
    crop_min_scale: float = option(0.4, "random resized crop scale (min, 1) of the fine-tuning views")
    views: str = option("crop-flip", "fine-tuning views: crop-flip = random resized crop and horizontal flip, the "
                        "paper's; geometric = those plus vertical flips and any rotation, for images with no up and "
                        "down (retinal scans, microscopy), where it lifted few-label fine-tuning (BENCHMARKS.md)",
                        choices=VIEWS)
    balance: str = option("none", "class imbalance: loss = class-weighted cross-entropy in the linear probe, which "
                          "fine-tuning starts from and then trains with plain cross-entropy (weighted or logit-"
                          "adjusted fine-tuning made random init predict the rare grade for most images, "
                          "BENCHMARKS.md); sampler = class-balanced draws in fine-tuning (the probe weights its "
                          "loss); none", choices=BALANCING)
    clip_grad: float = option(1.0, "clip the gradients' global norm at this each step (0: no clipping); 1 keeps "
                              "fine-tuning from falling below its own probe or to one grade (chosen on validation "
                              "splits of the development grading sets over no clipping, BENCHMARKS.md)")

    def check(self) -> None:
        super().check()
        require(self.epochs >= 1, "epochs", f"must be at least 1, got {self.epochs}")
        require(self.min_steps >= 0, "min_steps", f"must be >= 0, got {self.min_steps}")
        require(self.patience >= 0, "patience", f"must be >= 0, got {self.patience}")
        require(self.batch_size >= 2, "batch_size", f"must be at least 2, got {self.batch_size}")
        require(self.lr >= 0, "lr", f"must be >= 0, got {self.lr}")
        require(self.encoder_lr >= 0, "encoder_lr", f"must be >= 0, got {self.encoder_lr}")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(0 < self.crop_min_scale <= 1, "crop_min_scale", f"must be in (0, 1], got {self.crop_min_scale}")
        require(self.clip_grad >= 0, "clip_grad", f"must be >= 0, got {self.clip_grad}")


def fine_tuning_view(crop_min_scale: float, views: str = "crop-flip") -> ViewSpec:
    """Standard supervised augmentation: random resized crop and horizontal flip only; with
    ``views="geometric"`` also vertical flips and any rotation (pre-training's ``geometric`` set)."""
    view = ViewSpec(crop_scale=(crop_min_scale, 1.0), jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0,
                    solarize_prob=0.0)
    return replace(view, **DOMAIN_CHANGES["geometric"]) if views == "geometric" else view


def epoch_order(labels: torch.Tensor, num_classes: int, balance: str, generator: torch.Generator) -> torch.Tensor:
    """One epoch of training indices: a permutation, or with ``balance="sampler"`` as many
    draws with replacement, each class equally likely."""
    if balance != "sampler":
        return torch.randperm(len(labels), generator=generator)
    weights = class_weights(labels, num_classes)[labels.cpu()]
    return torch.multinomial(weights, len(labels), replacement=True, generator=generator)


def predict(model: nn.Module, images: ImageSet, mean: torch.Tensor, std: torch.Tensor, image_size: int,
            device: torch.device) -> torch.Tensor:
    """Class scores of ``model`` (encoder + head) in eval mode, on un-augmented images: the same
    resize / normalise / eval-mode path as frozen features."""
    return extract_features(model, images, mean, std, image_size, device=device)


class Standardise(nn.BatchNorm1d):
    """The head's input: the encoder's features standardised dimension by dimension.  Before any
    step, by the frozen features' statistics (so the network is exactly the linear probe); in
    training, by each batch's own, as BatchNorm does (no affine part); for scoring, by the
    statistics of the un-augmented training images as the network then is (``settle``).

    A fixed standardisation broke fine-tuning from a BYOL encoder whose frozen features were all
    but constant (on the fundus-like development set 43 % exactly 0, the rest's median spread
    7e-4): the training views, and the encoder's own BatchNorm in training mode, move such a
    feature by far more than its frozen spread, so the probe's head saw inputs hundreds of times
    too large (a first-epoch cross-entropy of 27 where random init's is 0.7) and the clipped
    steps erased the encoder (QWK 0.37 → 0.00 in three epochs).  And the statistics the batches
    leave behind describe augmented views, not the images as scored: re-estimated on those,
    random init fine-tuned on the OCTA-like development set went from QWK 0.38 to 0.72
    (BENCHMARKS.md, "The head's standardisation: the batch's in training, the images' for scoring")."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__(len(mean), eps=1e-12, affine=False)  # eps: std is floored at 1e-6 already
        self.set(mean, std)

    def set(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.running_mean.copy_(mean)
        self.running_var.copy_(std.square())


def settle(model: nn.Sequential, images: ImageSet, mean, std, image_size: int,
           device: torch.device) -> torch.Tensor:
    """Set the head's standardisation (``Standardise``) to the statistics of ``model``'s features of
    the un-augmented ``images``: how they will be scored.  Returns those features."""
    features = extract_features(model[0], images, mean, std, image_size, device=device).float()
    model[1].set(*feature_scale(features))
    return features


def build_classifier(encoder: nn.Module, train: ImageSet, num_classes: int, mean, std, image_size: int,
                     device: torch.device, settings: FinetuneSettings, metric: str,
                     seed: int) -> tuple[nn.Sequential, str, float]:
    """encoder → Standardise → Linear, the head warm-started from the linear probe of the frozen
    features of ``train`` (its L2 chosen by 5-fold cross-validation on them; a 10 % split above
    10,000 images): fine-tuning starts where the probe ends, with every encoder.  Also that L2,
    for ``refit_head``."""
    encoder = calibrated(encoder.to(device), train, mean, std, image_size, device)
    features = extract_features(encoder, train, mean, std, image_size, device=device).float()
    feature_mean, feature_std = feature_scale(features)
    head = nn.Linear(encoder.num_features, num_classes)
    probe = linear_probe(features, train.labels, features[:1], train.labels[:1], num_classes, seed=seed,
                         metric=metric, balance=settings.balance != "none")
    note = f"new head; re-fitted at the end (L2 {probe.weight_decay:g})"
    if settings.head == "probe":
        head.load_state_dict(probe.classifier.state_dict())
        note = f"head from the probe and re-fitted at the end (L2 {probe.weight_decay:g})"
    else:
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    model = nn.Sequential(encoder, Standardise(feature_mean, feature_std), head)
    return model.to(device).to(memory_format=torch.channels_last), note, probe.weight_decay


@dataclass
class FinetuneResult:
    model: nn.Sequential        # encoder, Standardise, head (re-fitted): at the best validation epoch, or the last
    best_epoch: int
    val_score: float
    epochs_run: int
    history: list[dict]         # per epoch (0 = before training) with validation: loss, validation metrics
    note: str = ""              # how the head started


def finetune(encoder: nn.Module, train: ImageSet, val: ImageSet | None, num_classes: int, mean: torch.Tensor,
             std: torch.Tensor, image_size: int, device: torch.device, settings: FinetuneSettings,
             metric: str = "top1", seed: int = 0, progress: bool = True) -> FinetuneResult:
    """Train ``encoder`` + a head (``build_classifier``) on ``train`` with crop / flip views.  With
    ``val``, keep the epoch with the best ``metric`` on it (epoch 0 = before any step: the probe)
    and stop after ``patience`` epochs without improvement; without, run the fixed schedule.
    Then re-fit the head (``refit_head``)."""
    torch.manual_seed(seed)
    model, note, probe_l2 = build_classifier(encoder, train, num_classes, mean, std, image_size, device, settings,
                                             metric, seed)
    batch_size = min(settings.batch_size, len(train))
    steps_per_epoch = math.ceil(len(train) / batch_size)
    epochs = max(settings.epochs, math.ceil(settings.min_steps / steps_per_epoch))
    total_steps = epochs * steps_per_epoch
    peak_lr = settings.lr * batch_size / 256
    encoder_groups = parameter_groups(list(model[0].named_parameters()), settings.weight_decay)
    head_groups = parameter_groups(list(model[2].named_parameters()), settings.weight_decay)
    for group in encoder_groups:
        group["scale"] = settings.encoder_lr
    optimizer = torch.optim.SGD(encoder_groups + head_groups, lr=peak_lr, momentum=0.9, nesterov=True)
    trainer = Trainer(model, optimizer, train, num_classes, mean, std, image_size, device, settings, seed)
    history, best, start = [], (-math.inf, 0, None), copy.deepcopy(model.state_dict())
    for epoch in tqdm(range(epochs + 1), desc="fine-tune", unit="epoch", disable=not progress, dynamic_ncols=True,
                      leave=False):
        loss = trainer.epoch(epoch - 1, total_steps, max(1, total_steps // 20), peak_lr) if epoch else math.nan
        if epoch and not math.isfinite(loss):  # diverged: what it learned is lost, the probe it started from is not
            model.load_state_dict(start)
            return FinetuneResult(model, 0, best[0], epoch, history, f"{note}; diverged in epoch {epoch}: the probe "
                                  "is kept")
        if val is None:
            continue
        training = copy.deepcopy(model[1].state_dict())  # the batches' statistics, which training goes on from
        settle(model, train, mean, std, image_size, device)
        metrics = classification_metrics(predict(model, val, mean, std, image_size, device).float(), val.labels,
                                         num_classes)
        history.append({"epoch": epoch, "loss": loss, **{k: v for k, v in metrics.items() if isinstance(v, float)}})
        if metrics[metric] > best[0]:
            best = (metrics[metric], epoch, copy.deepcopy(model.state_dict()))
        elif settings.patience and epoch - best[1] >= settings.patience:
            break
        model[1].load_state_dict(training)
    if val is not None:
        model.load_state_dict(best[2])
    features = settle(model, train, mean, std, image_size, device)  # a kept epoch's statistics: the same again
    refit_head(model[2], standardise(features)[0], train.labels, num_classes, probe_l2, settings.balance != "none")
    return FinetuneResult(model, best[1] if val is not None else epochs, best[0], epochs, history, note)


def refit_head(head: nn.Linear, features: torch.Tensor, labels: torch.Tensor, num_classes: int, l2: float,
               balance: bool) -> None:
    """Fit the head again as the probe was fitted — logistic regression to convergence (L-BFGS),
    class-weighted under ``balance``, with the probe's L2 — on the fine-tuned encoder's features
    of the un-augmented training images, standardised as they will be scored (``features``).  The
    probe's L2, not one chosen anew: the encoder has now seen these images, so cross-validation on
    them would choose on memorised features.

    SGD on the views leaves a head that is not the probe's kind of fit: with the encoder all but
    held (L2-SP, anchor 10) fine-tuning ended below its own probe in 7 of 10 runs at 10 % of the
    labels.  Re-fitted, none of 20 runs fell below on the OCTA-like development set (3 had; 100 % and
    10 % of the labels, 5 seeds) and BYOL's mean QWK rose 0.08 to 0.15 (BENCHMARKS.md, "The head
    re-fitted after fine-tuning")."""
    weights = class_weights(labels, num_classes).to(features.device) if balance else None
    head.load_state_dict(fit_logistic_regression(features, labels, num_classes, l2, start=head,
                                                 class_weights=weights).state_dict())


class Trainer:
    """One epoch of fine-tuning at a time: augmented views, plain cross-entropy, SGD
    with a linear warm-up and cosine decay; each parameter group's lr times its ``scale``."""

    def __init__(self, model, optimizer, train: ImageSet, num_classes: int, mean, std, image_size: int,
                 device: torch.device, settings: FinetuneSettings, seed: int):
        self.model, self.optimizer, self.settings, self.device = model, optimizer, settings, device
        self.num_classes, self.image_size, self.step = num_classes, image_size, 0
        self.labels = train.labels.to(device)
        self.train = train.to(device) if train.images is not None else train  # small labelled sets: on the device
        self.recipe = fine_tuning_view(settings.crop_min_scale, settings.views)
        self.mean, self.std = mean.to(device), std.to(device)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.order_generator = torch.Generator().manual_seed(seed)

    def epoch(self, epoch: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
        self.model.train()
        order = epoch_order(self.train.labels, self.num_classes, self.settings.balance, self.order_generator)
        batch_size = min(self.settings.batch_size, len(self.train))
        losses = []
        for start, batch in zip(range(0, len(order), batch_size), self.train.batches(order, batch_size, self.device)):
            if len(batch.images) < 2:
                continue  # BatchNorm cannot train on one image
            labels = self.labels[order[start:start + len(batch.images)].to(self.device)]
            x = augment(batch.images, self.recipe, self.image_size, self.mean, self.std, self.generator, batch.sizes)
            lr = learning_rate(self.step, total_steps, warmup_steps, peak_lr)
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group.get("scale", 1.0)
            with autocast(self.device):
                loss = F.cross_entropy(self.model(x.contiguous(memory_format=torch.channels_last)).float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.settings.clip_grad:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.clip_grad)
            self.optimizer.step()
            losses.append(loss.detach())
            self.step += 1
        return torch.stack(losses).mean().item() if losses else math.nan


def finetune_and_predict(encoder: nn.Module, train: ImageSet, val: ImageSet | None, test: ImageSet, num_classes: int,
                         mean, std, image_size: int, device: torch.device, settings: FinetuneSettings, metric: str,
                         seed: int) -> tuple[torch.Tensor, str]:
    """The fine-tuning protocol of ``byol compare``: test-set scores, and how the epoch was chosen.
    Without a validation split (too few labels to choose on: the caller puts them all in
    ``train``), the fixed schedule's last epoch is taken, as the paper's semi-supervised protocol does."""
    result = finetune(copy.deepcopy(encoder), train, val, num_classes, mean, std, image_size, device, settings,
                      metric, seed, progress=False)
    if val is None:
        epoch = f"fixed schedule, last of {result.epochs_run} epochs (too few labels to validate on)"
    else:
        epoch = f"best epoch {result.best_epoch}/{result.epochs_run} (val {metric} {result.val_score:.4f})"
    views = f"{settings.views} views, crops from {settings.crop_min_scale:g}"
    return predict(result.model, test, mean, std, image_size, device), f"{views}; {result.note}; {epoch}"
