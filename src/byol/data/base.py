"""What every reader returns: ``DataSplits`` of ``ImageSet``s — images in memory (uint8, or
uint16 for 16-bit data) or files not yet decoded / streamed, optional labels, optional test split."""
from __future__ import annotations

import hashlib
import os
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple, Protocol

import torch

from ..base.errors import UserError, setting


def loader_workers() -> int:
    """DataLoader workers for decoding files: the cores there are, at most 8."""
    return min(8, os.cpu_count() or 1)


class DataError(UserError):
    """The data the user pointed at cannot be used; the message says why and what to do."""


class Batch(NamedTuple):
    """A batch as the device receives it."""

    images: torch.Tensor          # (N, C, H, W) uint8 or uint16: the canvas every image sits in
    sizes: torch.Tensor | None    # (N, 2) each image's (height, width) at the canvas's top-left; None: all fill it


class ImageFiles(Protocol):
    """Images still in their files (``data.files.FileImages``): decoded later, into memory or batch by batch."""

    channels: int
    bits: int

    def __len__(self) -> int: ...
    def subset(self, index: list[int]) -> "ImageFiles": ...
    def shapes(self) -> list[tuple[int, int]]: ...
    def batches(self, order: torch.Tensor, batch_size: int, device: torch.device, drop_last: bool) -> Iterator[Batch]: ...
    def prepared(self, image_size: int, stream: bool | None, budget: int | None,
                 strict: bool) -> tuple["ImageSet", list[int] | None]: ...


@dataclass
class ImageSet:
    """Images and optional labels, in memory or in files.  In memory: ``images`` (N, C, H, W),
    and ``sizes`` when they do not all fill H × W; a batch is a gather.  In files: ``files``
    decodes each batch in DataLoader workers.  ``batches`` hides which."""

    images: torch.Tensor | None = None  # (N, C, H, W) uint8 or uint16
    labels: torch.Tensor | None = None  # (N,) int64
    files: ImageFiles | None = None
    names: list[str] | None = None      # file names (relative to the data folder) when read from files
    sizes: torch.Tensor | None = None   # (N, 2) int64 valid (height, width), when images differ in shape
    ids: torch.Tensor | None = None     # (N,) int64 identities (``identities``), kept once known

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.files)

    @property
    def channels(self) -> int:
        return self.images.shape[1] if self.images is not None else self.files.channels

    @property
    def bits(self) -> int:
        return (16 if self.images.dtype == torch.uint16 else 8) if self.images is not None else self.files.bits

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W): the in-memory canvas, or the median file's size before decoding."""
        if self.images is not None:
            return tuple(self.images.shape[1:])
        shapes = self.files.shapes()
        return (self.files.channels, int(statistics.median(h for h, _ in shapes)),
                int(statistics.median(w for _, w in shapes)))

    def identities(self) -> torch.Tensor:
        """(N,) int64 names of the images that do not depend on how they are decoded: a hash of
        each file's absolute path, or of each array image's pixels.  What lets a comparison tell
        which of its test images a pre-training run saw (``pretrain-images.npy``)."""
        if self.ids is None:
            if self.files is not None:
                keys = (str(Path(path).resolve()).encode() for path in self.files.paths)
            else:
                keys = (image.tobytes() for image in self.images.cpu().numpy())
            self.ids = torch.tensor([int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little", signed=True)
                                     for key in keys], dtype=torch.long)
        return self.ids

    def subset(self, index: torch.Tensor) -> "ImageSet":
        """The images (labels, names, sizes, identities) at ``index``, still in memory or in files."""
        index = index.cpu()
        labels = self.labels[index] if self.labels is not None else None
        names = [self.names[i] for i in index.tolist()] if self.names is not None else None
        ids = self.ids[index] if self.ids is not None else None
        if self.images is not None:
            sizes = self.sizes[index] if self.sizes is not None else None
            return ImageSet(self.images[index.to(self.images.device)], labels, names=names, sizes=sizes, ids=ids)
        return ImageSet(labels=labels, files=self.files.subset(index.tolist()), names=names, ids=ids)

    def to(self, device: torch.device) -> "ImageSet":
        """The in-memory images moved to ``device`` (batches are then gathered there)."""
        sizes = self.sizes.to(device) if self.sizes is not None else None
        return replace(self, images=self.images.to(device), sizes=sizes) if self.images is not None else self

    def prepared(self, image_size: int, stream: bool | None = None, budget: int | None = None,
                 strict: bool = False) -> "ImageSet":
        """Ready for views of ``image_size`` px: files decoded into memory, or set up to stream,
        at a size the random crops can draw from (``FileImages.prepared``); arrays as they are."""
        if self.images is not None:
            return self
        ids = self.identities()  # from the paths, before they are gone
        prepared, kept = self.files.prepared(image_size, stream, budget, strict)
        if kept is None:
            return replace(prepared, labels=self.labels, names=self.names, ids=ids)
        index = torch.tensor(kept, dtype=torch.long)
        labels = self.labels[index] if self.labels is not None else None
        return replace(prepared, labels=labels, names=[self.names[i] for i in kept] if self.names else None,
                       ids=ids[index])

    def batches(self, order: torch.Tensor, batch_size: int, device: torch.device | str,
                drop_last: bool = False) -> Iterator[Batch]:
        """``Batch``es of the images at indices ``order``, delivered on ``device``."""
        device = torch.device(device)
        if self.images is None:
            yield from self.files.batches(order, batch_size, device, drop_last)
            return
        order = order.to(self.images.device)
        end = len(order) - len(order) % batch_size if drop_last else len(order)
        for start in range(0, end, batch_size):
            index = order[start:start + batch_size]
            sizes = self.sizes[index].to(device, non_blocking=True) if self.sizes is not None else None
            yield Batch(self.images[index].to(device, non_blocking=True), sizes)


@dataclass
class DataSplits:
    """A training split (what pre-training sees, without labels) and, when the format has
    one, a labelled test split for the k-NN monitor and the final evaluation."""

    name: str
    train: ImageSet
    test: ImageSet | None = None
    classes: tuple[str, ...] | None = None
    labelled_train: ImageSet | None = None  # the k-NN bank / probe training set, when not ``train`` itself
    test_is_validation: bool = False  # ``test`` was split off the labelled images that pre-training sees

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

    def native_size(self) -> int:
        """The training images' shorter side (the median one, for files of many sizes)."""
        return min(self.train.image_shape[1:])

    def can_evaluate(self) -> bool:
        return self.eval_train is not None and self.test is not None and self.test.labels is not None

    def prepared(self, image_size: int, stream: bool | None = None, budget: int | None = None,
                 strict: bool = False) -> "DataSplits":
        """Every split ready for views of ``image_size`` px (``ImageSet.prepared``)."""
        def ready(images: ImageSet | None) -> ImageSet | None:
            return images.prepared(image_size, stream, budget, strict) if images is not None else None

        return replace(self, train=ready(self.train), test=ready(self.test), labelled_train=ready(self.labelled_train))

    def split_off(self, index: torch.Tensor, exclude: bool) -> "DataSplits":
        """The labelled training images at ``index`` (of ``eval_train``) become the test split, the
        other labelled images the labelled training set.  ``exclude``: pre-training no longer sees
        them either (a held-out test split); else it still does, without their labels (a
        validation split to watch progress on)."""
        labelled = self.eval_train
        rest = torch.ones(len(labelled), dtype=torch.bool)
        rest[index] = False
        train = self.train
        if exclude:
            train = train.subset((~torch.isin(train.identities(), labelled.identities()[index])).nonzero().squeeze(1))
        return replace(self, train=train, test=labelled.subset(index),
                       labelled_train=labelled.subset(rest.nonzero().squeeze(1)), test_is_validation=not exclude)

    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the training images in [0, 1], for normalisation."""
        n = len(self.train)
        # A sample pins the statistics to ~3 decimals at a fraction of the cost
        # (10k images in memory, 2k when each has to be decoded from a file).
        index = torch.linspace(0, n - 1, min(n, 10_000 if self.train.images is not None else 2_000)).long()
        full_scale = 65535.0 if self.train.bits == 16 else 255.0
        pixels = []
        for batch in self.train.batches(index, 256, "cpu"):
            values = batch.images.to(torch.float64) / full_scale
            if batch.sizes is None:
                pixels.append(values.transpose(0, 1).reshape(values.shape[1], -1))
            else:  # only the pixels of each image, not the canvas around it
                pixels += [image[:, :h, :w].reshape(image.shape[0], -1) for image, (h, w) in zip(values, batch.sizes.tolist())]
        pixels = torch.cat(pixels, dim=1)
        return pixels.mean(dim=1).float(), pixels.std(dim=1).float()

    def normalisation(self, mean: tuple[float, ...] | None = None,
                      std: tuple[float, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean``/``std`` when given (one value per channel), else computed from the training images."""
        channels = self.train.channels
        for name, given in (("mean", mean), ("std", std)):
            if given is not None and len(given) != channels:
                raise UserError(f"{setting(name)} {','.join(map(str, given))}: need {channels} value(s), one per "
                                f"channel of these {channels}-channel images")
        computed = self.channel_stats() if mean is None or std is None else None
        return (torch.tensor(mean) if mean is not None else computed[0],
                torch.tensor(std) if std is not None else computed[1])
