"""The labelled images an evaluation scores on: the pool labels are drawn from, the classes in an
order it can trust, the test images — fixed (the dataset's own, ``--test-data``, or the split a
pre-training run held out) or carved from the pool anew for each seed — and each seed's label
subsets and validation splits."""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..base.errors import UserError, setting
from ..data import DataError, DataSplits, ImageSet, as_splits
from ..settings.recipes import data_facts, default_image_size
from .splits import label_split, role_seed, stratified_split
from .tables import read_subset


@dataclass
class LabelledData:
    """A pool to draw labels from, and a test set that is fixed or carved from the pool per seed."""

    name: str
    pool: ImageSet
    fixed_test: ImageSet | None
    classes: tuple[str, ...]            # in grade order: label i is classes[i]
    mean: torch.Tensor
    std: torch.Tensor
    image_size: int
    test_fraction: float
    notes: tuple[str, ...] = ()          # what the tables say of the classes and the test split


@dataclass
class SeedSplit:
    """One seed's use of the labels: the test images and, per label fraction, (fit, val)."""

    seed: int
    roles: list[str]                  # per pool image: "" or "test"
    test_index: torch.Tensor | None   # pool indices of a carved test set (None: the fixed one)
    labels: dict[float, tuple[torch.Tensor, torch.Tensor]]

    def test_images(self, data: LabelledData) -> ImageSet:
        return data.fixed_test if self.test_index is None else data.pool.subset(self.test_index)

    def training_index(self, data: LabelledData) -> torch.Tensor:
        """Pool images outside this seed's test split."""
        return torch.tensor([i for i, role in enumerate(self.roles) if role != "test"], dtype=torch.long)


def grade_order(dataset: DataSplits, grades: tuple[str, ...] | None, ordinal: bool) -> tuple[tuple[str, ...], torch.Tensor | None]:
    """The classes in the order quadratic kappa weighs them, and the relabelling that puts them
    there (None: as they are).  Integer labels and numbered class folders are in order already;
    class names that are words need ``grades``; an ordinal metric without a trustworthy order is
    refused."""
    names = dataset.classes
    if grades:
        if names is None or set(grades) != set(names) or len(grades) != len(names):
            known = ", ".join(names) if names else f"integers 0..{dataset.num_classes - 1}, in order already"
            raise UserError(f"{setting('grades')} {','.join(grades)} must name every class once; the classes are: {known}")
        return tuple(grades), torch.tensor([grades.index(name) for name in names])
    if names is None:
        return tuple(str(i) for i in range(dataset.num_classes)), None
    if ordinal and not all(name.isdigit() for name in names):
        raise UserError(f"{setting('ordinal')} (quadratic kappa) needs the grades in order, but these labels are "
                        f"names ({', '.join(sorted(names))}); give their order, lowest first, with "
                        f"{setting('grades')} {','.join(sorted(names))}")
    return tuple(names), None


def _relabelled(images: ImageSet | None, remap: torch.Tensor | None) -> ImageSet | None:
    if images is None or remap is None or images.labels is None:
        return images
    return replace(images, labels=remap[images.labels])


def _align_test_labels(test: DataSplits, classes: tuple[str, ...], integer_labels: bool) -> ImageSet:
    """The test set's labels as indices of the training classes; unknown ones are an error."""
    test_set = test.eval_train or test.test
    name = setting("test_data")
    if test_set is None or test_set.labels is None:
        raise DataError(f"{name} {test.name}: has no labels to score against")
    if integer_labels or not test.classes:
        unknown = sorted(set(test_set.labels.tolist()) - set(range(len(classes))))
        if unknown:
            raise DataError(f"{name} {test.name}: labels {unknown[:5]} never occur in the training data "
                            f"(known: 0..{len(classes) - 1})")
        return test_set
    unknown = sorted(set(test.classes) - set(classes))
    if unknown:
        raise DataError(f"{name} {test.name}: labels {unknown[:5]} never occur in the training data "
                        f"(known: {', '.join(classes[:10])})")
    return replace(test_set, labels=torch.tensor([classes.index(c) for c in test.classes])[test_set.labels])


def load_labelled(config, data=None, trained_size: int | None = None, device: str = "cpu",
                  held_out: tuple[str, torch.Tensor] | None = None) -> LabelledData:
    """The labelled images of an evaluation (``config``: an ``EvalConfig``), decoded for the view
    size (the setting, else the size the encoders were trained at, else the recipe's), and the
    test set: ``--test-data``, the dataset's own, the images a pre-training run held out
    (``held_out``: its name and their identities), or else (per seed) a stratified fraction."""
    dataset = as_splits(data if data is not None else config.data, **config.read_options())
    image_size = config.image_size or trained_size or default_image_size(data_facts(dataset, device))
    why = "as given" if config.image_size else "the size the encoder was trained at" if trained_size else \
        "the recipe's size for these images"
    classes, remap = grade_order(dataset, config.grades, config.ordinal or config.metric == "qwk")
    dataset = dataset.prepared(image_size)
    pool = _relabelled(dataset.eval_train, remap)
    if pool is None:
        raise DataError(f"{dataset.name} has no labels; evaluation needs class folders, a labelled CSV or a "
                        "labelled format (byol embed works on unlabeled images)")
    notes = [f"images scored at {image_size} px ({why})"]
    notes += [f"grades in order: {' < '.join(classes)}"] if (config.ordinal or config.grades) else []
    test = None
    if config.test_data:
        test = _align_test_labels(as_splits(config.test_data, **config.read_options()).prepared(image_size),
                                  dataset.classes or classes, dataset.classes is None)
        test = _relabelled(test, remap) if dataset.classes is not None else test
        if test.channels != pool.channels:
            raise DataError(f"{setting('test_data')} {config.test_data}: images have {test.channels} channels, the "
                            f"training images {pool.channels}")
        notes.append(f"test images: {len(test)} from {config.test_data}")
    elif dataset.test is not None and dataset.test.labels is not None:
        test = _relabelled(dataset.test, remap)
        notes.append(f"test images: the dataset's own test split, {len(test)}")
    elif held_out is not None and torch.isin(held_out[1], pool.identities()).all():
        chosen = torch.isin(pool.identities(), held_out[1])
        test, pool = pool.subset(chosen.nonzero().squeeze(1)), pool.subset((~chosen).nonzero().squeeze(1))
        notes.append(f"test images: the {len(test)} that {held_out[0]} held out from its pre-training")
    else:
        print(f"byol: {dataset.name} has no test split: holding out a stratified {100 * config.test_fraction:g} % "
              f"of the labelled images as test set, drawn anew for each seed ({setting('test_fraction')}, or give "
              f"{setting('test_data')})", file=sys.stderr)
        notes.append(f"test images: a stratified {100 * config.test_fraction:g} % of the labelled images, drawn "
                     "anew for each seed")
    mean, std = dataset.channel_stats()
    return LabelledData(dataset.name, pool, test, classes, mean, std, image_size, config.test_fraction, tuple(notes))


def seed_split(data: LabelledData, config, seed: int) -> SeedSplit:
    """The test images and every fraction's (fit, val) for ``seed`` — or those of the subset file."""
    roles, test_index = [""] * len(data.pool), None
    if data.fixed_test is None:
        _, test_index = stratified_split(data.pool.labels, data.test_fraction, role_seed(seed, "test"))
        for i in test_index.tolist():
            roles[i] = "test"
    if config.subset:
        fraction = config.label_fraction[0]
        return SeedSplit(seed, roles, test_index, {fraction: read_subset(Path(config.subset), data.pool.labels.tolist(), roles)})
    usable = torch.tensor([i for i, role in enumerate(roles) if role == ""], dtype=torch.long)
    counts = torch.bincount(data.pool.labels[usable], minlength=len(data.classes))
    if counts.min() < 2:
        name = data.classes[int(counts.argmin())]
        raise DataError(f"class {name} has {int(counts.min())} labelled training images (outside the test split); "
                        "each class needs 2, one to fit and one to validate on: add images or drop the class")
    labels = {}
    for fraction in config.label_fraction:
        fit, val = label_split(data.pool.labels[usable], fraction, config.val_fraction, seed)
        labels[fraction] = (usable[fit], usable[val])
    return SeedSplit(seed, roles, test_index, labels)


def test_identities(data: LabelledData, split: SeedSplit) -> torch.Tensor:
    return split.test_images(data).identities()


def seen_note(name: str, seen: torch.Tensor, data: LabelledData, splits: list[SeedSplit]) -> str:
    """How many of the test images encoder ``name`` pre-trained on (without their labels)."""
    counts = [int(torch.isin(test_identities(data, split), seen).sum()) for split in splits]
    total = len(splits[0].test_images(data))
    low, high = min(counts), max(counts)
    share = f"{low}" if low == high else f"{low}–{high}"
    setup = ("transductive, as in a challenge whose test images are at hand" if high
             else "held out: pre-training never saw them")
    return f"{name} pre-trained on {share} of the {total} test images (without their labels): {setup}"
