"""What every reader returns: ``DataSplits`` of ``ImageSet``s — uint8 images in memory or
streamed from files, optional labels, optional test split."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from ..errors import UserError, setting


class DataError(UserError):
    """The data the user pointed at cannot be used; the message says why and what to do."""


class StreamedFiles(Protocol):
    """Images decoded from files batch by batch (``data.images.ImageFiles``)."""

    channels: int
    size: int

    def __len__(self) -> int: ...
    def subset(self, index: list[int]) -> "StreamedFiles": ...
    def batches(self, order: torch.Tensor, batch_size: int, device: torch.device,
                drop_last: bool) -> Iterator[torch.Tensor]: ...


@dataclass
class ImageSet:
    """Images and optional labels, either decoded in memory or streamed from files.

    In memory: ``images`` (N, C, H, W) uint8, a batch is a gather.  Streaming: ``files``
    decodes each batch in DataLoader workers.  ``batches`` hides which."""

    images: torch.Tensor | None = None  # (N, C, H, W) uint8
    labels: torch.Tensor | None = None  # (N,) int64
    files: StreamedFiles | None = None
    names: list[str] | None = None      # file names (relative to the data folder) when read from files

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.files)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        if self.images is not None:
            return tuple(self.images.shape[1:])
        return (self.files.channels, self.files.size, self.files.size)

    def subset(self, index: torch.Tensor) -> "ImageSet":
        """The images (labels, names) at ``index``, still in memory or still streamed."""
        index = index.cpu()
        labels = self.labels[index] if self.labels is not None else None
        names = [self.names[i] for i in index.tolist()] if self.names is not None else None
        if self.images is not None:
            return ImageSet(self.images[index.to(self.images.device)], labels, names=names)
        return ImageSet(labels=labels, files=self.files.subset(index.tolist()), names=names)

    def batches(self, order: torch.Tensor, batch_size: int, device: torch.device | str,
                drop_last: bool = False) -> Iterator[torch.Tensor]:
        """uint8 batches of the images at indices ``order``, delivered on ``device``."""
        device = torch.device(device)
        if self.images is None:
            yield from self.files.batches(order, batch_size, device, drop_last)
            return
        order = order.to(self.images.device)
        end = len(order) - len(order) % batch_size if drop_last else len(order)
        for start in range(0, end, batch_size):
            yield self.images[order[start:start + batch_size]].to(device, non_blocking=True)


@dataclass
class DataSplits:
    """A training split (what pre-training sees, without labels) and, when the format has
    one, a labelled test split for the k-NN monitor and the final evaluation."""

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
        n = len(self.train)
        # A sample pins the statistics to ~3 decimals at a fraction of the cost
        # (10k images in memory, 2k when each has to be decoded from a file).
        index = torch.linspace(0, n - 1, min(n, 10_000 if self.train.images is not None else 2_000)).long()
        sample = torch.cat(list(self.train.batches(index, 256, "cpu")))
        pixels = sample.transpose(0, 1).reshape(sample.shape[1], -1).double() / 255
        return pixels.mean(dim=1).float(), pixels.std(dim=1).float()

    def normalisation(self, mean: tuple[float, ...] | None = None,
                      std: tuple[float, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean``/``std`` when given (one value per channel), else computed from the training images."""
        channels = self.train.image_shape[0]
        for name, given in (("mean", mean), ("std", std)):
            if given is not None and len(given) != channels:
                raise UserError(f"{setting(name)} {','.join(map(str, given))}: need {channels} value(s), one per "
                                f"channel of these {channels}-channel images")
        computed = self.channel_stats() if mean is None or std is None else None
        return (torch.tensor(mean) if mean is not None else computed[0],
                torch.tensor(std) if std is not None else computed[1])
