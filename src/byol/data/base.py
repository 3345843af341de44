"""What every reader returns: uint8 images in memory, optional labels, optional test split."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import UserError


class DataError(UserError):
    """The data the user pointed at cannot be used; the message says why and what to do."""


@dataclass
class ImageSet:
    images: torch.Tensor                # (N, C, H, W) uint8
    labels: torch.Tensor | None = None  # (N,) int64


@dataclass
class Dataset:
    """A training split (what pre-training sees, without labels) and, when the format
    has one, a labelled test split for the k-NN monitor and the final evaluation."""

    name: str
    train: ImageSet
    test: ImageSet | None = None
    classes: tuple[str, ...] | None = None
    labelled_train: ImageSet | None = None  # the k-NN bank / probe training set, when not ``train`` itself

    @property
    def eval_train(self) -> ImageSet | None:
        """The labelled training images that evaluation fits on (None when there are none)."""
        if self.labelled_train is not None:
            return self.labelled_train
        return self.train if self.train.labels is not None else None

    @property
    def num_classes(self) -> int:
        if self.classes:
            return len(self.classes)
        labels = [s.labels for s in (self.eval_train, self.test) if s is not None and s.labels is not None]
        return int(max(int(l.max()) for l in labels)) + 1 if labels else 0

    def can_evaluate(self) -> bool:
        return self.eval_train is not None and self.test is not None and self.test.labels is not None

    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the training images in [0, 1], for normalisation."""
        images = self.train.images
        n_channels = images.shape[1]
        # A 10k-image sample pins the statistics to ~3 decimals at a fraction of the cost.
        sample = images[torch.linspace(0, len(images) - 1, min(len(images), 10_000)).long()]
        pixels = sample.transpose(0, 1).reshape(n_channels, -1).double() / 255
        return pixels.mean(dim=1).float(), pixels.std(dim=1).float()
