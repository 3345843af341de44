"""``byol eval``, ``byol finetune``, ``byol compare`` and ``byol.evaluate``: encoders scored on
one labelled dataset, every encoder × protocol × label fraction on the same seeded splits.

The protocols are libraries of their own (``frozen.py``: k-NN and the linear probe;
``finetune.py``); this module chooses the images, runs them and writes the tables.
"""
from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .config import DataOptions
from .data import DataError, ImageSet, as_splits
from .device import resolve_device
from .errors import setting
from .finetune import FinetuneSettings, finetune, predict
from .frozen import MONITOR_K, extract_features, knn_predict, linear_probe
from .metrics import METRIC_NAMES, classification_metrics
from .settings import option, require
from .splits import label_split, stratified_split
from .tables import print_table, read_subset, write_results, write_subset
from .weights import Pixels, load_weights

PROTOCOLS = ("knn", "linear", "finetune")
SELECTION_METRICS = tuple(m for m in METRIC_NAMES if m != "top5")
INIT_HELP = ("the encoder(s) to score: byol:RUN_DIR (or a run directory) | random | pixels (raw-pixel baseline) | a "
             "weights file: byol's .safetensors, or a torchvision .pth state dict of --arch, e.g. ImageNet weights "
             "you have; several for a comparison")


@dataclass
class EvalConfig(FinetuneSettings, DataOptions):
    """Settings of ``byol eval`` / ``finetune`` / ``compare`` (the fine-tuning recipe included)."""

    init: tuple[str, ...] = option((), INIT_HELP)
    protocols: tuple[str, ...] = option(PROTOCOLS, "evaluation protocols: knn (weighted cosine vote), linear "
                                        "(logistic-regression probe), finetune (whole encoder + head)", choices=PROTOCOLS)
    test_data: str | None = option(None, "test images with labels, when the data has no test split")
    test_fraction: float = option(0.2, "without a test split or test data: stratified share of the labelled "
                                  "images held out as test set")
    label_fraction: tuple[float, ...] = option((1.0,), "share of the training labels used, stratified and seeded, "
                                               "e.g. 0.01 0.1 1 (each subset is saved as subset-F-seedS.csv)")
    val_fraction: float = option(0.1, "share of those labels held out to choose the probe's L2 / the fine-tuning "
                                 "epoch")
    subset: str | None = option(None, "a subset-*.csv from an earlier run: use exactly its images")
    metric: str | None = option(None, "selection metric: top1, balanced_accuracy, macro_f1 or qwk; default: qwk "
                                "with ordinal, else top1", choices=SELECTION_METRICS)
    ordinal: bool = option(False, "labels are ordered grades (e.g. retinopathy 0/1/2): select by quadratic "
                           "weighted kappa")
    arch: str = option("narrow_resnet", "encoder for random init or a .pth state dict; byol weights carry their own")
    image_size: int | None = option(None, "side the images are evaluated at; default: the dataset's")
    out: str | None = option(None, "folder for the results (.csv, .md, subset files); default: the run directory "
                             "of a byol: init, else ./byol-eval")
    device: str = option("auto", "cuda, cpu or auto (cuda when available)")
    knn_k: int = option(MONITOR_K, "neighbours in the k-NN vote")
    knn_temperature: float = option(0.1, "temperature of the k-NN vote weights exp(similarity / T)")
    seed: int = option(0, "seed of random init, label subsets, splits and fine-tuning")

    def check(self) -> None:
        FinetuneSettings.check(self)
        DataOptions.check(self)
        for fraction in self.label_fraction:
            require(0 < fraction <= 1, "label_fraction", f"{fraction}: give a fraction in (0, 1], e.g. 0.01 for 1 % "
                    "of the labels")
        require(not (self.subset and len(self.label_fraction) > 1), "subset",
                f"fixes the images of one label fraction; give one {setting('label_fraction')} with it")
        for name in ("val_fraction", "test_fraction"):
            require(0 < getattr(self, name) < 1, name, f"{getattr(self, name)}: give a fraction in (0, 1)")
        require(self.knn_k >= 1 and self.knn_temperature > 0, "knn_k", "must be >= 1 (and the temperature > 0)")
        require(len(self.protocols) >= 1, "protocols", "needs at least one of knn, linear, finetune")

    @property
    def selection_metric(self) -> str:
        return self.metric or ("qwk" if self.ordinal else "top1")


@dataclass
class LabelledData:
    """A labelled training set and a test set, ready for every protocol."""

    name: str
    train: ImageSet
    test: ImageSet
    classes: tuple[str, ...]
    mean: torch.Tensor
    std: torch.Tensor
    image_size: int
    roles: list[str]   # per training image: "" (usable), or "test" when the test split was carved from it


def _align_test_labels(test, classes: tuple[str, ...], integer_labels: bool) -> ImageSet:
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
    remap = torch.tensor([classes.index(c) for c in test.classes])
    return ImageSet(test_set.images, remap[test_set.labels], test_set.files, test_set.names)


def load_labelled(config: EvalConfig, data=None) -> LabelledData:
    """The training and test images of an evaluation: the dataset's own test split, or the
    test data, or else a stratified test fraction carved from the labelled images (seeded;
    recorded in the subset file)."""
    dataset = as_splits(data if data is not None else config.data, **config.read_options())
    image_size = config.image_size or min(dataset.native_size(), 64)
    dataset = dataset.prepared(image_size)
    train = dataset.eval_train
    if train is None:
        raise DataError(f"{dataset.name} has no labels; evaluation needs class folders, a labelled CSV or a "
                        "labelled format (byol embed works on unlabeled images)")
    classes = dataset.classes or tuple(str(i) for i in range(dataset.num_classes))
    roles = [""] * len(train)
    if config.test_data:
        test_dataset = as_splits(config.test_data, **config.read_options()).prepared(image_size)
        test = _align_test_labels(test_dataset, classes, dataset.classes is None)
        if test.channels != train.channels:
            raise DataError(f"{setting('test_data')} {config.test_data}: images have {test.channels} channels, the "
                            f"training images {train.channels}")
    elif dataset.test is not None and dataset.test.labels is not None:
        test = dataset.test
    else:
        _, held = stratified_split(train.labels, config.test_fraction, config.seed + 2)
        for i in held.tolist():
            roles[i] = "test"
        print(f"byol: {dataset.name} has no test split: holding out a stratified {100 * config.test_fraction:g} % "
              f"({len(held)} images, seed {config.seed}) as test set ({setting('test_fraction')}, or give "
              f"{setting('test_data')})", file=sys.stderr)
        test = train.subset(held)
    mean, std = dataset.channel_stats()
    return LabelledData(dataset.name, train, test, classes, mean, std, image_size, roles)


def choose_labels(data: LabelledData, fraction: float, config: EvalConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, val) indices into ``data.train`` for one label fraction, drawn from the images
    not held out as test — or read back from the subset file."""
    if config.subset:
        return read_subset(Path(config.subset), data.train.labels.tolist(), data.roles)
    usable = torch.tensor([i for i, role in enumerate(data.roles) if role == ""], dtype=torch.long)
    counts = torch.bincount(data.train.labels[usable], minlength=len(data.classes))
    if counts.min() < 2:
        name = data.classes[int(counts.argmin())]
        raise DataError(f"class {name} has {int(counts.min())} labelled training images (outside the test split); "
                        "each class needs 2, one to fit and one to validate on: add images or drop the class")
    fit, val = label_split(data.train.labels[usable], fraction, config.val_fraction, config.seed)
    return usable[fit], usable[val]


def score(protocol: str, encoder: nn.Module, data: LabelledData, fit: torch.Tensor, val: torch.Tensor,
          config: EvalConfig, device: torch.device, features) -> tuple[torch.Tensor, str]:
    """Test-set class scores of one protocol, and a note on how its settings were chosen.
    ``features`` computes the frozen (train, test) features once per encoder."""
    metric, num_classes = config.selection_metric, len(data.classes)
    if protocol == "finetune":
        result = finetune(copy.deepcopy(encoder), data.train.subset(fit), data.train.subset(val), num_classes,
                          data.mean, data.std, data.image_size, device, config, metric=metric, seed=config.seed)
        scores = predict(result.model, data.test, data.mean, data.std, data.image_size, device)
        return scores, f"best epoch {result.best_epoch}/{result.epochs_run} (val {metric} {result.val_score:.4f})"
    train_features, test_features = features()
    used = torch.cat([fit, val])
    train_features, labels = train_features[used.to(train_features.device)], data.train.labels[used]
    if protocol == "knn":
        scores = knn_predict(train_features, labels, test_features, num_classes, config.knn_k, config.knn_temperature)
        return scores, f"k={config.knn_k}, T={config.knn_temperature:g}"
    probe = linear_probe(train_features, labels, test_features, data.test.labels, num_classes, seed=config.seed,
                         metric=metric, val_index=torch.arange(len(fit), len(used)))
    return probe.test_scores, f"L2 {probe.weight_decay:g} (val {metric} {probe.val_score:.4f})"


def evaluate_encoder(name: str, encoder: nn.Module, data: LabelledData, config: EvalConfig, device: torch.device,
                     splits: dict[float, tuple[torch.Tensor, torch.Tensor]]) -> list[dict]:
    """Every protocol × label fraction for one encoder, on the shared (fit, val) ``splits``."""
    encoder = encoder.to(device).to(memory_format=torch.channels_last)
    cache = []

    def features():
        if not cache:  # once per encoder, for every frozen-feature protocol and label fraction
            cache.extend(extract_features(encoder, images, data.mean, data.std, data.image_size, device=device)
                         for images in (data.train, data.test))
        return cache

    rows = []
    for fraction, (fit, val) in splits.items():
        for protocol in config.protocols:
            if protocol == "finetune" and isinstance(encoder, Pixels):
                print(f"byol: skipping finetune of {name}: raw pixels have no encoder to fine-tune", file=sys.stderr)
                continue
            scores, detail = score(protocol, encoder, data, fit, val, config, device, features)
            metrics = classification_metrics(scores.float(), data.test.labels, len(data.classes))
            row = {"init": name, "protocol": protocol, "label_fraction": fraction, "labels": len(fit) + len(val),
                   **{k: metrics[k] for k in METRIC_NAMES if k in metrics}, "detail": detail,
                   "per_class_accuracy": metrics["per_class_accuracy"], "confusion_matrix": metrics["confusion_matrix"]}
            print(f"byol: {name} {protocol} at {100 * fraction:g} % labels: {config.selection_metric} "
                  f"{row[config.selection_metric]:.4f}", file=sys.stderr)
            rows.append(row)
    return rows


def _load(spec, config: EvalConfig, data: LabelledData) -> nn.Module:
    torch.manual_seed(config.seed)  # a random-init baseline is reproducible from the seed
    return load_weights(spec, config.arch, data.train.channels, data.image_size)


def default_out(inits: tuple[str, ...]) -> Path:
    """The run directory of the first ``byol:`` init, else ./byol-eval."""
    for init in inits:
        path = Path(init.removeprefix("byol:"))
        if path.is_dir():
            return path
    return Path("byol-eval")


def evaluate(encoders=(), data=None, *, stem: str = "compare", config_file: str | None = None,
             **settings) -> list[dict]:
    """Score ``encoders`` (init names as ``byol compare --init`` takes them, ``nn.Module``s, or
    results of ``byol.pretrain``) on ``data`` (a path, an array/tensor of images with labels, a
    torch Dataset) with every protocol and label fraction; the table is printed and written
    as STEM.csv / STEM.md in ``out``.  Returns one row per encoder × protocol × fraction."""
    encoders = [encoders] if isinstance(encoders, (str, nn.Module)) or hasattr(encoders, "encoder") else list(encoders)
    names = [e if isinstance(e, str) else f"byol:{e.run_dir}" if hasattr(e, "run_dir") else f"encoder {i + 1}"
             for i, e in enumerate(encoders)]
    config = EvalConfig.create(config_file, **({"init": tuple(names)} if encoders else {}), **settings)
    require(len(config.init) >= 1, "init", "needs at least one encoder to evaluate, e.g. random")
    device = resolve_device(config.device)
    labelled = load_labelled(config, data)
    out = Path(config.out) if config.out else default_out(config.init)
    specs = [getattr(e, "encoder", e) for e in encoders] or list(config.init)
    loaded = [_load(spec, config, labelled) for spec in specs]  # every encoder loads before any runs
    splits = {fraction: choose_labels(labelled, fraction, config) for fraction in config.label_fraction}
    out.mkdir(parents=True, exist_ok=True)
    if not config.subset:  # a given subset file is already the record
        for fraction, (fit, val) in splits.items():
            write_subset(out / f"subset-{fraction:g}-seed{config.seed}.csv", labelled.train, labelled.roles, fit, val)
    rows = [row for name, encoder in zip(config.init, loaded)
            for row in evaluate_encoder(name, encoder, labelled, config, device, splits)]
    print_table(rows)
    write_results(rows, out, stem, labelled.name, labelled.classes,
                  f"{len(labelled.train)} labelled training images, {len(labelled.test)} test images; selection "
                  f"metric {config.selection_metric}; seed {config.seed}.")
    print(f"byol: results in {out / stem}.csv and .md")
    return rows
