"""``byol eval``, ``byol finetune``, ``byol compare`` and ``byol.evaluate``: encoders scored on
one labelled dataset, every encoder × protocol × label fraction on the same seeded splits.

The protocols are libraries of their own (``frozen.py``: k-NN and the linear probe;
``finetune.py``); this module chooses the images, runs them and writes the tables.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..settings.options import DataOptions, DeviceOption, KnnOptions
from ..data import DataError, ImageSet, as_splits
from ..base.device import resolve_device
from ..base.errors import setting
from .finetune import FinetuneSettings, finetune_and_predict
from .frozen import extract_features, knn_k_for, knn_predict, linear_probe
from .metrics import METRIC_NAMES, classification_metrics
from ..settings.mechanism import option, require
from .splits import label_split, stratified_split
from .tables import Comparison, read_subset, write_results, write_subset
from ..settings.recipes import data_facts, default_image_size
from ..models.weights import Pixels, encoder_config_of, load_weights

PROTOCOLS = ("knn", "linear", "finetune")
SELECTION_METRICS = tuple(m for m in METRIC_NAMES if m != "top5")
INIT_HELP = ("the encoder(s) to score: byol:RUN_DIR (or a run directory) | random | pixels (raw-pixel baseline) | a "
             "weights file: byol's .safetensors, or a torchvision .pth state dict of --arch, e.g. ImageNet weights "
             "you have; several for a comparison")


@dataclass
class EvalConfig(FinetuneSettings, KnnOptions, DeviceOption, DataOptions):
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
    arch: str | None = option(None, "encoder for random init or a .pth state dict; byol weights carry their own; "
                              "default: the architecture of the byol encoder beside it, else narrow_resnet")
    image_size: int | None = option(None, "side the images are evaluated at; default: the dataset's")
    out: str | None = option(None, "folder for the results (.csv, .md, subset files); default: the run directory "
                             "of a byol: init, else ./byol-eval")
    seeds: tuple[int, ...] = option((0,), "seeds of random init, label subsets, test and validation splits and "
                                    "fine-tuning: each cell is repeated per seed and reported as mean ± spread, with a "
                                    "verdict for every pair of encoders (e.g. 0 1 2)")

    def check(self) -> None:
        super().check()
        for fraction in self.label_fraction:
            require(0 < fraction <= 1, "label_fraction", f"{fraction}: give a fraction in (0, 1], e.g. 0.01 for 1 % "
                    "of the labels")
        require(not (self.subset and len(self.label_fraction) > 1), "subset",
                f"fixes the images of one label fraction; give one {setting('label_fraction')} with it")
        for name in ("val_fraction", "test_fraction"):
            require(0 < getattr(self, name) < 1, name, f"{getattr(self, name)}: give a fraction in (0, 1)")
        require(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), "seeds", f"needs distinct seeds, got {self.seeds}")
        require(not (self.subset and len(self.seeds) > 1), "subset",
                f"fixes the images of one seed; give one of {setting('seeds')} with it")
        require(len(self.protocols) >= 1, "protocols", "needs at least one of knn, linear, finetune")

    @property
    def selection_metric(self) -> str:
        return self.metric or ("qwk" if self.ordinal else "top1")


@dataclass
class LabelledData:
    """The labelled images of an evaluation: a pool to draw labels from, and a test set that is
    either fixed (the dataset's own, or test data) or carved from the pool for each seed."""

    name: str
    pool: ImageSet
    fixed_test: ImageSet | None
    classes: tuple[str, ...]
    mean: torch.Tensor
    std: torch.Tensor
    image_size: int
    test_fraction: float


@dataclass
class SeedSplit:
    """One seed's use of the labels: the test images and, per label fraction, (fit, val)."""

    seed: int
    roles: list[str]                  # per pool image: "" or "test"
    test_index: torch.Tensor | None   # pool indices of a carved test set (None: the fixed one)
    labels: dict[float, tuple[torch.Tensor, torch.Tensor]]

    def test_images(self, data: LabelledData) -> ImageSet:
        return data.fixed_test if self.test_index is None else data.pool.subset(self.test_index)


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
    return ImageSet(test_set.images, remap[test_set.labels], test_set.files, test_set.names, test_set.sizes)


def load_labelled(config: EvalConfig, data=None, trained_size: int | None = None,
                  device: str = "cpu") -> LabelledData:
    """The labelled images of an evaluation, decoded for the view size (the setting, else the
    size the encoders were trained at, else the recipe's), and the test set: the dataset's own,
    or the test data, or else (per seed) a stratified fraction of the labels."""
    dataset = as_splits(data if data is not None else config.data, **config.read_options())
    image_size = config.image_size or trained_size or default_image_size(data_facts(dataset, device))
    dataset = dataset.prepared(image_size)
    pool = dataset.eval_train
    if pool is None:
        raise DataError(f"{dataset.name} has no labels; evaluation needs class folders, a labelled CSV or a "
                        "labelled format (byol embed works on unlabeled images)")
    classes = dataset.classes or tuple(str(i) for i in range(dataset.num_classes))
    test = None
    if config.test_data:
        test_dataset = as_splits(config.test_data, **config.read_options()).prepared(image_size)
        test = _align_test_labels(test_dataset, classes, dataset.classes is None)
        if test.channels != pool.channels:
            raise DataError(f"{setting('test_data')} {config.test_data}: images have {test.channels} channels, the "
                            f"training images {pool.channels}")
    elif dataset.test is not None and dataset.test.labels is not None:
        test = dataset.test
    else:
        print(f"byol: {dataset.name} has no test split: holding out a stratified {100 * config.test_fraction:g} % "
              f"of the labelled images as test set, drawn anew for each seed ({setting('test_fraction')}, or give "
              f"{setting('test_data')})", file=sys.stderr)
    mean, std = dataset.channel_stats()
    return LabelledData(dataset.name, pool, test, classes, mean, std, image_size, config.test_fraction)


def seed_split(data: LabelledData, config: EvalConfig, seed: int) -> SeedSplit:
    """The test images and every fraction's (fit, val) for ``seed`` — or those of the subset file."""
    roles, test_index = [""] * len(data.pool), None
    if data.fixed_test is None:
        _, test_index = stratified_split(data.pool.labels, data.test_fraction, seed + 2)
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


# Below this many validation images a held-out split is too small to choose settings on: the
# probe's L2 is then chosen by 5-fold cross-validation over all the labels of the fraction, and
# fine-tuning runs its fixed schedule (``finetune.py``).
MIN_VALIDATION = 100
CV_FOLDS = 5


def score(protocol: str, encoder: nn.Module, data: LabelledData, split: SeedSplit, fraction: float,
          config: EvalConfig, device: torch.device, features) -> tuple[torch.Tensor, str]:
    """Test-set class scores of one protocol, and a note on how its settings were chosen.
    ``features(split)`` gives the frozen (pool, test) features, computed once per encoder."""
    metric, num_classes = config.selection_metric, len(data.classes)
    fit, val = split.labels[fraction]
    test = split.test_images(data)
    if protocol == "finetune":
        return finetune_and_predict(encoder, data.pool.subset(fit), data.pool.subset(val), test, num_classes,
                                    data.mean, data.std, data.image_size, device, config, metric, split.seed,
                                    fixed_schedule=len(val) < MIN_VALIDATION)
    pool_features, test_features = features(split)
    used = torch.cat([fit, val])
    train_features, labels = pool_features[used.to(pool_features.device)], data.pool.labels[used]
    if protocol == "knn":
        k = config.knn_k or knn_k_for(labels)
        scores = knn_predict(train_features, labels, test_features, num_classes, k, config.knn_temperature)
        rule = "" if config.knn_k else f" (√{len(labels)}, at most 200 and the smallest class)"
        return scores, f"k={k}{rule}, T={config.knn_temperature:g}"
    folds = CV_FOLDS if len(val) < MIN_VALIDATION else 0
    probe = linear_probe(train_features, labels, test_features, test.labels, num_classes, seed=split.seed,
                         metric=metric, val_index=torch.arange(len(fit), len(used)), folds=folds)
    return probe.test_scores, f"L2 {probe.weight_decay:g} by {probe.selection} ({metric} {probe.val_score:.4f})"


def evaluate_encoder(name: str, encoder: nn.Module, data: LabelledData, config: EvalConfig, device: torch.device,
                     splits: list[SeedSplit]) -> list[dict]:
    """Every protocol × label fraction × seed for one encoder, on the shared ``splits``."""
    encoder = encoder.to(device).to(memory_format=torch.channels_last)
    if getattr(encoder, "normalisation", None):  # what the encoder was trained with, else the data's
        data = replace(data, mean=torch.tensor(encoder.normalisation[0]), std=torch.tensor(encoder.normalisation[1]))
    cache = {}

    def features(split: SeedSplit):
        if "pool" not in cache:  # once per encoder, for every frozen-feature protocol, fraction and seed
            cache["pool"] = extract_features(encoder, data.pool, data.mean, data.std, data.image_size, device=device)
        if split.test_index is not None:
            return cache["pool"], cache["pool"][split.test_index.to(cache["pool"].device)]
        if "test" not in cache:
            cache["test"] = extract_features(encoder, data.fixed_test, data.mean, data.std, data.image_size,
                                             device=device)
        return cache["pool"], cache["test"]

    rows = []
    for split in splits:
        test_labels = split.test_images(data).labels
        for fraction, (fit, val) in split.labels.items():
            for protocol in config.protocols:
                if protocol == "finetune" and isinstance(encoder, Pixels):
                    print(f"byol: skipping finetune of {name}: raw pixels have no encoder to fine-tune", file=sys.stderr)
                    continue
                torch.manual_seed(split.seed)
                scores, detail = score(protocol, encoder, data, split, fraction, config, device, features)
                metrics = classification_metrics(scores.float(), test_labels, len(data.classes))
                rows.append({"init": name, "protocol": protocol, "label_fraction": fraction,
                             "labels": len(fit) + len(val), "seed": split.seed,
                             **{k: metrics[k] for k in METRIC_NAMES if k in metrics}, "detail": detail,
                             "per_class_accuracy": metrics["per_class_accuracy"],
                             "confusion_matrix": metrics["confusion_matrix"]})
                print(f"byol: {name} {protocol} at {100 * fraction:g} % labels, seed {split.seed}: "
                      f"{config.selection_metric} {rows[-1][config.selection_metric]:.4f}", file=sys.stderr)
    return rows


def _load(spec, config: EvalConfig, data: LabelledData) -> nn.Module:
    torch.manual_seed(config.seeds[0])  # a random-init baseline is reproducible from the seed
    return load_weights(spec, config.arch, data.pool.channels, data.image_size)


def default_out(inits: tuple[str, ...]) -> Path:
    """The run directory of the first ``byol:`` init, else ./byol-eval."""
    for init in inits:
        path = Path(init.removeprefix("byol:"))
        if path.is_dir():
            return path
    return Path("byol-eval")


def evaluate(encoders=(), data=None, *, stem: str = "compare", config_file: str | None = None,
             **settings) -> Comparison:
    """Score ``encoders`` (init names as ``byol compare --init`` takes them, ``nn.Module``s, or
    results of ``byol.pretrain``) on ``data`` (a path, an array/tensor of images with labels, a
    torch Dataset) with every protocol, label fraction and seed; the tables (mean ± spread
    over seeds, and a verdict for every pair of encoders) are printed and written as
    STEM.csv / STEM.md in ``out``."""
    encoders = [encoders] if isinstance(encoders, (str, nn.Module)) or hasattr(encoders, "encoder") else list(encoders)
    names = [e if isinstance(e, str) else f"byol:{e.run_dir}" if hasattr(e, "run_dir") else f"encoder {i + 1}"
             for i, e in enumerate(encoders)]
    config = EvalConfig.create(config_file, **({"init": tuple(names)} if encoders else {}), **settings)
    require(len(config.init) >= 1, "init", "needs at least one encoder to evaluate, e.g. random")
    device = resolve_device(config.device)
    specs = [getattr(e, "encoder", e) for e in encoders] or list(config.init)
    trained = next((built for built in map(encoder_config_of, specs) if built), {})
    if config.arch is None:  # a random baseline: the architecture of the pre-trained encoder beside it
        config = config.replace(arch=trained.get("name") if trained.get("name") not in (None, "custom") else "narrow_resnet")
    labelled = load_labelled(config, data, trained.get("image_size"), device.type)
    out = Path(config.out) if config.out else default_out(config.init)
    loaded = [_load(spec, config, labelled) for spec in specs]  # every encoder loads before any runs
    splits = [seed_split(labelled, config, seed) for seed in config.seeds]
    out.mkdir(parents=True, exist_ok=True)
    if not config.subset:  # a given subset file is already the record
        for split in splits:
            for fraction, (fit, val) in split.labels.items():
                write_subset(out / f"subset-{fraction:g}-seed{split.seed}.csv", labelled.pool, split.roles, fit, val)
    rows = [row for name, encoder in zip(config.init, loaded)
            for row in evaluate_encoder(name, encoder, labelled, config, device, splits)]
    comparison = Comparison(rows, config.selection_metric)
    print(comparison.markdown())
    write_results(comparison, out, stem, labelled.name, labelled.classes,
                  f"{len(labelled.pool)} labelled images; "
                  + (f"{len(labelled.fixed_test)} test images" if labelled.fixed_test is not None
                     else f"a stratified {100 * labelled.test_fraction:g} % of them held out as test set per seed")
                  + f"; selection metric {config.selection_metric}; seeds {', '.join(map(str, config.seeds))}.")
    print(f"byol: results in {out / stem}.csv and .md")
    return comparison
