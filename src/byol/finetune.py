"""Fine-tuning (paper §4.2, semi-supervised): the whole encoder plus a new linear head,
trained on the labelled images with crop/flip augmentation, stopped early on a
validation split, with optional class-imbalance handling.

The caller chooses the images (``evaluate.label_split`` gives the paper's 1 % / 10 %
subsets and a validation split inside them); this module only trains and scores.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .augment import ViewRecipe, augment
from .data import ImageSet
from .device import autocast
from .frozen import extract_features
from .metrics import classification_metrics
from .optim import learning_rate, parameter_groups
from .settings import Settings, option, require

BALANCING = ("none", "loss", "sampler")


@dataclass
class FinetuneSettings(Settings):
    """The fine-tuning recipe (``byol finetune`` / ``byol compare`` flags)."""

    epochs: int = option(50, "at most this many epochs; the best validation epoch is kept")
    patience: int = option(0, "stop after this many epochs without a better validation score; 0: run all epochs "
                           "(under the cosine decay the late epochs improve most; on the H100 table patience "
                           "10-20 stopped random init at epoch 0)")
    batch_size: int = option(256, "fine-tuning batch (at most the number of labelled images)")
    lr: float = option(0.05, "SGD (Nesterov momentum 0.9) learning rate per 256 images, cosine decay")
    weight_decay: float = option(0.0, "weight decay on weights (not biases or norm parameters)")
    crop_min_scale: float = option(0.4, "random resized crop scale (min, 1), plus horizontal flip: nothing else")
    balance: str = option("none", "class imbalance: loss = class-weighted cross-entropy, sampler = class-balanced "
                          "draws", choices=BALANCING)

    def check(self) -> None:
        require(self.epochs >= 1, "epochs", f"must be at least 1, got {self.epochs}")
        require(self.patience >= 0, "patience", f"must be >= 0, got {self.patience}")
        require(self.batch_size >= 2, "batch_size", f"must be at least 2, got {self.batch_size}")
        require(self.lr >= 0, "lr", f"must be >= 0, got {self.lr}")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(0 < self.crop_min_scale <= 1, "crop_min_scale", f"must be in (0, 1], got {self.crop_min_scale}")


def fine_tuning_view(crop_min_scale: float) -> ViewRecipe:
    """Standard supervised augmentation: random resized crop and horizontal flip only."""
    return ViewRecipe(crop_scale=(crop_min_scale, 1.0), jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0,
                      solarize_prob=0.0)


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """N / (K · n_c) for each class c (1 for a balanced set); absent classes get 0."""
    counts = torch.bincount(labels.cpu(), minlength=num_classes).float()
    return torch.where(counts > 0, len(labels) / (num_classes * counts.clamp_min(1)), torch.zeros(()))


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


@dataclass
class FinetuneResult:
    model: nn.Sequential        # encoder + head at the best validation epoch
    best_epoch: int
    val_score: float
    epochs_run: int
    history: list[dict]         # per epoch (0 = before training): loss, validation metrics


def finetune(encoder: nn.Module, train: ImageSet, val: ImageSet, num_classes: int, mean: torch.Tensor,
             std: torch.Tensor, image_size: int, device: torch.device, settings: FinetuneSettings,
             metric: str = "top1", seed: int = 0, progress: bool = True) -> FinetuneResult:
    """Train ``encoder`` + a new linear head on ``train`` (uint8 images with labels); keep
    the weights of the epoch with the best ``metric`` on ``val`` (early stopping by
    selection; epoch 0 = before any step); with ``settings.patience``, stop after that many
    epochs without improvement."""
    torch.manual_seed(seed)
    model = nn.Sequential(encoder, nn.Linear(encoder.num_features, num_classes)).to(device).to(memory_format=torch.channels_last)
    batch_size = min(settings.batch_size, len(train))
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total_steps = settings.epochs * steps_per_epoch
    peak_lr = settings.lr * batch_size / 256
    optimizer = torch.optim.SGD(parameter_groups(list(model.named_parameters()), settings.weight_decay),
                                lr=peak_lr, momentum=0.9, nesterov=True)
    loss_weights = class_weights(train.labels, num_classes).to(device) if settings.balance == "loss" else None
    labels = train.labels.to(device)
    if train.images is not None:
        train = train.to(device)  # small labelled sets: gather on the device
    recipe, mean_d, std_d = fine_tuning_view(settings.crop_min_scale), mean.to(device), std.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    order_generator = torch.Generator().manual_seed(seed)

    def validate(epoch: int, loss: float) -> float:
        metrics = classification_metrics(predict(model, val, mean, std, image_size, device).float(), val.labels,
                                         num_classes)
        history.append({"epoch": epoch, "loss": loss, **{k: v for k, v in metrics.items() if isinstance(v, float)}})
        return metrics[metric]

    history, step = [], 0
    best_score, best_epoch, best_state = validate(0, math.nan), 0, copy.deepcopy(model.state_dict())
    bar = tqdm(range(settings.epochs), desc="fine-tune", unit="epoch", disable=not progress, dynamic_ncols=True)
    for epoch in bar:
        model.train()
        order = epoch_order(train.labels, num_classes, settings.balance, order_generator)
        loss_sum = torch.zeros((), device=device)
        for start, batch in zip(range(0, len(order), batch_size), train.batches(order, batch_size, device)):
            if len(batch.images) < 2:
                continue  # BatchNorm cannot train on one image
            batch_labels = labels[order[start:start + len(batch.images)].to(device)]
            x = augment(batch.images, recipe, image_size, mean_d, std_d, generator, batch.sizes)
            x = x.contiguous(memory_format=torch.channels_last)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total_steps, 0, peak_lr)
            with autocast(device):
                loss = F.cross_entropy(model(x).float(), batch_labels, weight=loss_weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            step += 1
        score = validate(epoch + 1, loss_sum.item() / steps_per_epoch)
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", **{f"val_{metric}": f"{score:.4f}"})
        if score > best_score:
            best_score, best_epoch = score, epoch + 1
            best_state = copy.deepcopy(model.state_dict())
        elif settings.patience and epoch + 1 - best_epoch >= settings.patience:
            break
    bar.close()
    model.load_state_dict(best_state)
    return FinetuneResult(model, best_epoch, best_score, len(history) - 1, history)
