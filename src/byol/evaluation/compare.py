"""``byol eval``, ``byol finetune``, ``byol compare`` and ``byol.evaluate``: encoders scored on
one labelled dataset, every encoder × protocol × label fraction on the same seeded splits.

The protocols are libraries of their own (``frozen.py``: k-NN and the linear probe;
``finetune.py``); this module chooses the images, runs them and writes the tables.
"""
from __future__ import annotations

import functools
import hashlib
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..base.device import resolve_device
from ..base.errors import first_line, setting
from ..base.rundir import RunDir, atomic_write
from ..models.weights import Pixels, encoder_config_of, load_weights
from ..settings.mechanism import option, require
from ..settings.options import DataOptions, DeviceOption, KnnOptions
from ..settings.recipes import DataFacts, default_arch
from .finetune import FinetuneSettings, finetune_and_predict
from .frozen import MIN_VALIDATION, calibrated, extract_features, knn_k_for, knn_predict, linear_probe
from .labelled import LabelledData, SeedSplit, load_labelled, seen_note, seed_split
from .metrics import METRIC_NAMES, classification_metrics
from .splits import role_seed
from .tables import Comparison, write_results, write_subset

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
                           "weighted kappa; integer labels and numbered class folders are in order, names need --grades")
    grades: tuple[str, ...] | None = option(None, "the classes' order, lowest grade first, when they are names: e.g. "
                                            "none,mild,moderate,severe (quadratic kappa weighs by it)")
    arch: str | None = option(None, "encoder for random init or a .pth state dict; byol weights carry their own; "
                              "default: the architecture of the byol encoder beside it, else narrow_resnet")
    image_size: int | None = option(None, "side the images are evaluated at; default: the dataset's")
    out: str | None = option(None, "folder for the results (.csv, .md, subset files); default: the run directory "
                             "of a byol: init, else ./byol-eval")
    seeds: tuple[int, ...] = option((0,), "seeds of random init, label subsets, test and validation splits and "
                                    "fine-tuning: each cell is repeated per seed and reported as mean ± spread; every "
                                    "pair of encoders gets the difference with a 95 % interval over test images and "
                                    "seeds, and a verdict from two seeds on (e.g. 0 1 2)")

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
        require(self.balance == "none" or set(self.protocols) - {"knn"}, "balance",
                f"{self.balance} acts in the linear probe and fine-tuning; the k-NN vote has nothing to balance: add "
                f"{setting('protocols')} linear or finetune, or drop it")

    @property
    def selection_metric(self) -> str:
        return self.metric or ("qwk" if self.ordinal else "top1")


def score(protocol: str, encoder: nn.Module, data: LabelledData, split: SeedSplit, fraction: float,
          config: EvalConfig, device: torch.device, features) -> tuple[torch.Tensor, str]:
    """Test-set class scores of one protocol, and a note on how its settings were chosen.
    ``features()`` gives the frozen (pool, test) features of this encoder and split."""
    metric, num_classes = config.selection_metric, len(data.classes)
    fit, val = split.labels[fraction]
    test = split.test_images(data)
    if protocol == "finetune":
        small = len(val) < MIN_VALIDATION  # too few to choose an epoch on: all labels train, fixed schedule
        train, chosen = (data.pool.subset(torch.cat([fit, val])), None) if small else \
            (data.pool.subset(fit), data.pool.subset(val))
        return finetune_and_predict(encoder, train, chosen, test, num_classes, data.mean, data.std, data.image_size,
                                    device, config, metric, split.seed)
    pool_features, test_features = features()
    used = torch.cat([fit, val])
    train_features, labels = pool_features[used.to(pool_features.device)], data.pool.labels[used]
    if protocol == "knn":
        k = config.knn_k or knn_k_for(labels)
        scores = knn_predict(train_features, labels, test_features, num_classes, k, config.knn_temperature)
        rule = "" if config.knn_k else f" (√{len(labels)}, at most 200 and the smallest class)"
        return scores, f"k={k}{rule}, T={config.knn_temperature:g}"
    probe = linear_probe(train_features, labels, test_features, test.labels, num_classes, seed=split.seed,
                         metric=metric, val_index=torch.arange(len(fit), len(used)), balance=config.balance != "none")
    return probe.test_scores, f"L2 {probe.weight_decay:g} by {probe.selection} ({metric} {probe.val_score:.4f})"


def evaluate_encoder(name: str, encoder: nn.Module, data: LabelledData, config: EvalConfig, device: torch.device,
                     split: SeedSplit, cache: dict) -> list[dict]:
    """Every protocol × label fraction of one seed for one encoder (``cache``: its pool features,
    kept across seeds while the encoder is the same)."""
    encoder = encoder.to(device).to(memory_format=torch.channels_last)
    if getattr(encoder, "normalisation", None):  # what the encoder was trained with, else the data's
        data = replace(data, mean=torch.tensor(encoder.normalisation[0]), std=torch.tensor(encoder.normalisation[1]))
    # a random init's BatchNorm statistics, estimated on this seed's training images (never its test images)
    encoder = calibrated(encoder, data.pool.subset(split.training_index(data)), data.mean, data.std, data.image_size,
                         device)

    def features():
        if "pool" not in cache:  # once per encoder, for every frozen-feature protocol, fraction and seed
            cache["pool"] = extract_features(encoder, data.pool, data.mean, data.std, data.image_size, device=device)
        if split.test_index is not None:
            return cache["pool"], cache["pool"][split.test_index.to(cache["pool"].device)]
        if "test" not in cache:
            cache["test"] = extract_features(encoder, data.fixed_test, data.mean, data.std, data.image_size,
                                             device=device)
        return cache["pool"], cache["test"]

    rows, test = [], split.test_images(data)
    for fraction, (fit, val) in split.labels.items():
        for protocol in config.protocols:
            if protocol == "finetune" and isinstance(encoder, Pixels):
                print(f"byol: skipping finetune of {name}: raw pixels have no encoder to fine-tune", file=sys.stderr)
                continue
            torch.manual_seed(role_seed(split.seed, "fine-tuning"))
            scores, detail = score(protocol, encoder, data, split, fraction, config, device, features)
            metrics = classification_metrics(scores.float(), test.labels, len(data.classes))
            rows.append({"init": name, "protocol": protocol, "label_fraction": fraction,
                         "labels": len(fit) + len(val), "seed": split.seed,
                         **{k: metrics[k] for k in METRIC_NAMES if k in metrics}, "detail": detail,
                         "per_class_accuracy": metrics["per_class_accuracy"],
                         "confusion_matrix": metrics["confusion_matrix"], "predicted": scores.argmax(1).cpu(),
                         "test_labels": test.labels.cpu(), "test_ids": test.identities()})
            print(f"byol: {name} {protocol} at {100 * fraction:g} % labels, seed {split.seed}: "
                  f"{config.selection_metric} {rows[-1][config.selection_metric]:.4f}", file=sys.stderr)
    return rows


class Encoders:
    """The encoders the specs name, each loaded once — but a random initialisation drawn anew for
    every seed, from that seed (the same seed, the same weights)."""

    def __init__(self, specs: list, config: EvalConfig, data: LabelledData):
        self.specs, self.config, self.data = specs, config, data
        self.first = [self._load(spec, config.seeds[0]) for spec in specs]  # every one loads before any runs

    def _load(self, spec, seed: int) -> nn.Module:
        torch.manual_seed(role_seed(seed, "initialisation"))
        return load_weights(spec, self.config.arch, self.data.pool.channels, self.data.image_size)

    def key(self, number: int, seed: int) -> tuple:
        """What identifies the encoder ``for_seed`` gives (its features are cached under it)."""
        return (number, seed if self.specs[number] == "random" else None)

    def for_seed(self, number: int, seed: int) -> nn.Module:
        if self.specs[number] == "random" and seed != self.config.seeds[0]:
            return self._load("random", seed)
        return self.first[number]


def default_out(inits: tuple[str, ...]) -> Path:
    """The run directory of the first ``byol:`` init, else ./byol-eval."""
    for init in inits:
        path = Path(init.removeprefix("byol:"))
        if path.is_dir():
            return path
    return Path("byol-eval")


def _runs(inits: tuple[str, ...]) -> list[tuple[str, RunDir]]:
    """The pre-training runs among the inits (what they saw, what they held out)."""
    found = []
    for init in inits:
        run = RunDir(init.removeprefix("byol:")) if isinstance(init, str) else None
        if run is not None and run.path.is_dir() and run.config.is_file():
            found.append((init, run))
    return found


def evaluate(encoders=(), data=None, *, stem: str = "compare", config_file: str | None = None,
             **settings) -> Comparison:
    """Score ``encoders`` (init names as ``byol compare --init`` takes them, ``nn.Module``s, or
    results of ``byol.pretrain``) on ``data`` (a path, an array/tensor of images with labels, a
    torch Dataset) with every protocol, label fraction and seed; the tables (mean ± spread
    over seeds, and a paired verdict with its interval for every pair of encoders) are printed
    and written as STEM.csv / STEM.md in ``out``."""
    encoders = [encoders] if isinstance(encoders, (str, nn.Module)) or hasattr(encoders, "encoder") else list(encoders)
    names = [e if isinstance(e, str) else f"byol:{e.run_dir}" if hasattr(e, "run_dir") else f"encoder {i + 1}"
             for i, e in enumerate(encoders)]
    config = EvalConfig.create(config_file, **({"init": tuple(names)} if encoders else {}), **settings)
    require(len(config.init) >= 1, "init", "needs at least one encoder to evaluate, e.g. random")
    device = resolve_device(config.device)
    specs = [getattr(e, "encoder", e) for e in encoders] or list(config.init)
    built = [(name, found) for name, found in zip(config.init, map(encoder_config_of, specs)) if found]
    trained = built[0][1] if built else {}
    runs = _runs(config.init)
    held_out = next(((name, ids) for name, run in runs if (ids := run.read_held_out()) is not None), None)
    labelled = load_labelled(config, data, trained.get("image_size"), device.type, held_out)
    sizes = {found.get("image_size") for _, found in built} - {None}
    if len(sizes) > 1 and not config.image_size:
        each = ", ".join(f"{name} {found.get('image_size')} px" for name, found in built)
        print(f"byol: warning: the encoders were trained at different sizes ({each}); all are scored at "
              f"{labelled.image_size} px: give {setting('image_size')} to choose", file=sys.stderr)
    if config.arch is None:  # a random baseline: the architecture of the pre-trained encoder beside it
        default = default_arch(DataFacts(len(labelled.pool), labelled.image_size, labelled.pool.channels, 8, False,
                                         device.type))[0]
        config = config.replace(arch=trained["name"] if trained.get("name") not in (None, "custom") else default)
    out = Path(config.out) if config.out else default_out(config.init)
    loader = Encoders(specs, config, labelled)
    splits = [seed_split(labelled, config, seed) for seed in config.seeds]
    out.mkdir(parents=True, exist_ok=True)
    if not config.subset:  # a given subset file is already the record
        for split in splits:
            for fraction, (fit, val) in split.labels.items():
                write_subset(out / f"subset-{fraction:g}-seed{split.seed}.csv", labelled.pool, split.roles, fit, val)
    parts = out / f"{stem}.parts"
    try:
        rows = _score_all(config, labelled, loader, splits, device, parts)
    except KeyboardInterrupt:
        kept = len(list(parts.glob("*.pt"))) if parts.is_dir() else 0
        print(f"byol: stopped: {kept} of {len(splits) * len(config.init)} encoder × seed scorings are kept in "
              f"{parts}; the same command goes on from them", file=sys.stderr)
        raise
    notes = labelled.notes + tuple(seen_note(name, seen, labelled, splits) for name, run in runs
                                   if (seen := run.read_seen()) is not None)
    comparison = Comparison(rows, config.selection_metric, len(labelled.classes), notes)
    print(comparison.markdown())
    write_results(comparison, out, stem, labelled.name, labelled.classes,
                  f"{len(labelled.pool)} labelled images; selection metric {config.selection_metric}; "
                  f"seeds {', '.join(map(str, config.seeds))}.")
    print(f"byol: results in {out / stem}.csv and .md")
    if any(parts.glob("*.pt")):  # none on a disk too full to keep them
        print(f"byol: each encoder × seed is kept in {parts}: the same command with more {setting('seeds')} scores "
              "only the new seeds, and the verdicts pool them all")
    return comparison


def _score_all(config: EvalConfig, labelled: LabelledData, loader: Encoders, splits: list[SeedSplit],
               device: torch.device, parts: Path) -> list[dict]:
    """Every encoder's rows for every seed; each (encoder, seed) saved in ``parts`` as it ends, and
    taken from there when an earlier run of the same comparison left it — stopped, or with other
    seeds (``finished_part``)."""
    rows, caches, common = [], {}, fingerprint(config, labelled)
    for split in splits:
        for number, name in enumerate(config.init):
            encoder = loader.for_seed(number, split.seed)
            part, key = parts / f"{number}-seed{split.seed}.pt", weights_key(common, encoder)
            done = finished_part(part, key)
            if done is None:
                done = evaluate_encoder(name, encoder, labelled, config, device, split,
                                        caches.setdefault(loader.key(number, split.seed), {}))
                try:
                    parts.mkdir(exist_ok=True)
                    atomic_write(part, lambda temporary: torch.save({"key": key, "rows": done}, temporary))
                except OSError as error:  # a full disk: the comparison goes on, only a restart would lose more
                    print(f"byol: warning: could not keep {name}, seed {split.seed} in {parts} ({first_line(error)});"
                          " the comparison goes on, but a stop now would score it again", file=sys.stderr)
            else:
                print(f"byol: {name}, seed {split.seed}: scored by an earlier run of this comparison; kept "
                      f"({part})", file=sys.stderr)
            rows += done
    return rows


def fingerprint(config: EvalConfig, labelled: LabelledData):
    """What every encoder's rows depend on: every setting but where the tables go, the device and
    the seeds (a seed's splits, initialisation and fine-tuning are drawn from it alone, so the
    rows of seed 3 are the same in a comparison of seeds 0–4 as of seeds 3–4), the labelled
    images (by identity) with their labels, and the code that scores them (``scoring_code``);
    ``weights_key`` adds the encoder."""
    settings = {k: v for k, v in config.to_dict().items() if k not in ("out", "device", "seeds")}
    digest = hashlib.sha256(json.dumps({**settings, "code": scoring_code()}, sort_keys=True, default=str).encode())
    tensors = [labelled.pool.identities(), labelled.pool.labels]
    if labelled.fixed_test is not None:
        tensors += [labelled.fixed_test.identities(), labelled.fixed_test.labels]
    return _hashed(digest, tensors)


@functools.cache
def scoring_code(package: Path = Path(__file__).parents[1]) -> str:
    """byol's source and torch's version: parts kept by another version of either are scored
    again, not pooled with this one's seeds (byol's version number does not change with every
    edit of its source)."""
    digest = hashlib.sha256(torch.__version__.encode())
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + path.read_bytes())
    return digest.hexdigest()


def weights_key(common, encoder: nn.Module) -> str:
    """The key of one encoder's rows for one seed: ``common`` (``fingerprint``) and its weights."""
    return _hashed(common.copy(), encoder.state_dict().values()).hexdigest()


def _hashed(digest, tensors):
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest


def finished_part(path: Path, key: str) -> list[dict] | None:
    """The rows an earlier run of the same comparison — interrupted, or with other seeds — saved
    for this encoder and seed (``evaluate`` writes one file per encoder and seed as it goes, and
    keeps them); None when there are none, or they belong to other settings, data or weights."""
    try:
        saved = torch.load(path, weights_only=False)
    except Exception:  # absent, or cut short: score again
        return None
    return saved["rows"] if isinstance(saved, dict) and saved.get("key") == key else None
