"""How good is an encoder (paper §4): frozen features → weighted k-NN and a linear probe;
fine-tuning (``finetune.py``); and the commands that run them on a labelled dataset —
``byol eval``, ``byol finetune``, ``byol compare`` — and ``byol embed``."""
from __future__ import annotations

import copy
import csv
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import create_encoder, load_encoder
from .config import UserError, first_line, resolve_device
from .data import DataError, Dataset, ImageSet, load_dataset
from .finetune import FinetuneSettings, finetune, predict
from .metrics import METRIC_NAMES, classification_metrics


@torch.no_grad()
def extract_features(
    encoder: nn.Module, images: torch.Tensor | ImageSet, mean: torch.Tensor, std: torch.Tensor,
    image_size: int | None = None, batch_size: int = 1024, device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Features (N, D) of uint8 images — a tensor (N, C, H, W) or an ``ImageSet``, in memory
    or streamed — with the encoder in eval mode, computed and returned on ``device``.

    Images are resized to ``image_size`` when it differs from theirs (the size the
    encoder was trained at), then normalised exactly as during pre-training."""
    image_set = images if isinstance(images, ImageSet) else ImageSet(images)
    was_training = encoder.training
    encoder.eval()
    device = torch.device(device)
    mean, std = mean.to(device).view(1, -1, 1, 1), std.to(device).view(1, -1, 1, 1)
    features = []
    for batch in image_set.batches(torch.arange(len(image_set)), batch_size, device):
        x = batch.float() / 255
        if image_size is not None and x.shape[-1] != image_size:
            x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", antialias=True).clamp_(0, 1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            features.append(encoder(((x - mean) / std).contiguous(memory_format=torch.channels_last)).float())
    encoder.train(was_training)
    return torch.cat(features)


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor, train_labels: torch.Tensor, query_features: torch.Tensor,
    num_classes: int, k: int = 200, temperature: float = 0.1, chunk_size: int = 1024,
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
                 k: int = 200, temperature: float = 0.1) -> float:
    """Top-1 accuracy (0–1) of ``knn_predict`` on a labelled test set."""
    scores = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature)
    return (scores.argmax(dim=1).cpu() == test_labels.cpu()).float().mean().item()


@dataclass
class LinearProbeResult:
    accuracy: float            # test top-1, 0–1
    weight_decay: float        # L2 strength chosen on the validation split
    val_score: float           # validation score (the selection metric) at that strength
    classifier: nn.Linear      # fitted on standardised features (see ``standardise``)
    test_scores: torch.Tensor  # (N_test, num_classes) logits


def fit_logistic_regression(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                            weight_decay: float, max_iter: int = 500) -> nn.Linear:
    """Multinomial logistic regression, full batch, trained to convergence with L-BFGS
    (cross-entropy + weight_decay/2·‖W‖²; the bias is not penalised)."""
    classifier = nn.Linear(features.shape[1], num_classes).to(features.device)
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.LBFGS(classifier.parameters(), lr=1, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")
    labels = labels.to(features.device)

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(classifier(features), labels)
        loss = loss + weight_decay / 2 * classifier.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return classifier.requires_grad_(False)


def stratified_split(labels: torch.Tensor, fraction: float, seed: int,
                     minimum: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (rest, held_out) with ``fraction`` of every class held out (at least
    ``minimum``, and never a whole class of two or more), reproducible from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    held_out = []
    labels = labels.cpu()
    for value in labels.unique():
        members = (labels == value).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        count = max(minimum, int(round(fraction * len(members))))
        held_out.append(members[: min(count, max(1, len(members) - 1))])
    held_out = torch.cat(held_out).sort().values
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[held_out] = False
    return mask.nonzero().squeeze(1), held_out


def label_split(labels: torch.Tensor, label_fraction: float = 1.0, val_fraction: float = 0.1,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Which labelled images an evaluation may use: indices (fit, val), disjoint.

    ``label_fraction`` of every class is drawn first (the paper's 1 % / 10 % subsets;
    at least two images per class), then ``val_fraction`` of that subset, again per
    class, is held out for choosing the probe's L2 or the fine-tuning epoch.  The test
    split is never touched.  Reproducible from ``seed``."""
    pool = torch.arange(len(labels))
    if label_fraction < 1:
        pool = stratified_split(labels, label_fraction, seed + 1, minimum=2)[1]
    fit, val = stratified_split(labels.cpu()[pool], val_fraction, seed)
    return pool[fit], pool[val]


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Zero-mean, unit-variance features using the training set's statistics."""
    mean, std = train.mean(dim=0), train.std(dim=0).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def linear_probe(
    train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
    test_labels: torch.Tensor, num_classes: int,
    weight_decays: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2), val_fraction: float = 0.1, seed: int = 0,
    val_index: torch.Tensor | None = None, metric: str = "top1",
) -> LinearProbeResult:
    """Linear evaluation (§4.1) on frozen features.

    The L2 strength is chosen by ``metric`` on a validation split of the training set
    (``val_index``, or a stratified ``val_fraction`` drawn with ``seed``) — never on the
    test set — then the classifier is refit on the whole training set and scored once
    on the test set."""
    train_features, test_features = standardise(train_features.float(), test_features.float())
    if val_index is None:
        fit_index, val_index = stratified_split(train_labels, val_fraction, seed)
    else:
        mask = torch.ones(len(train_labels), dtype=torch.bool)
        mask[val_index.cpu()] = False
        fit_index = mask.nonzero().squeeze(1)
    fit_index, val_index = fit_index.to(train_features.device), val_index.to(train_features.device)
    train_labels = train_labels.to(train_features.device)
    best = (-math.inf, weight_decays[0])
    for weight_decay in weight_decays:
        classifier = fit_logistic_regression(train_features[fit_index], train_labels[fit_index],
                                             num_classes, weight_decay)
        scores = classifier(train_features[val_index])
        best = max(best, (classification_metrics(scores, train_labels[val_index], num_classes)[metric], weight_decay))
    val_score, weight_decay = best
    classifier = fit_logistic_regression(train_features, train_labels, num_classes, weight_decay)
    scores = classifier(test_features)
    accuracy = (scores.argmax(dim=1).cpu() == test_labels.cpu()).float().mean().item()
    return LinearProbeResult(accuracy, weight_decay, val_score, classifier, scores)
def resolve_encoder(init: str, arch: str, in_channels: int, image_size: int) -> nn.Module:
    """The encoder ``--init`` names: ``random`` (``arch`` at random initialisation),
    ``byol:RUN_DIR`` or a run directory (its encoder.safetensors), or a weights file —
    byol's ``.safetensors``, or a torchvision state dict (``.pth``/``.pt``) of ``arch``,
    e.g. ImageNet weights you downloaded yourself (nothing is downloaded here); or
    ``pixels``, the raw-pixel baseline."""
    if init == "random":
        return create_encoder(arch, in_channels, None, image_size)
    if init == "pixels":
        return Pixels(in_channels * image_size * image_size)
    path = Path(init.removeprefix("byol:"))
    if path.is_dir():
        path = path / "encoder.safetensors"
    if not path.is_file():
        raise UserError(f"--init {init}: no weights file at {path} (give random, a run directory or a weights file)")
    if path.suffix == ".safetensors":
        try:
            return load_encoder(path)
        except Exception as error:  # a foreign or damaged file: say which, not where it broke
            raise UserError(f"--init {path}: not a byol encoder file ({first_line(error)})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.get("state_dict", state).items() if not k.startswith("fc.")}
    except Exception as error:
        raise UserError(f"--init {path}: not a PyTorch state dict ({first_line(error)})") from None
    # ImageNet weights have the 7x7 stride-2 stem; keep it whatever the image size.
    small_stem = state["conv1.weight"].shape[-1] == 3 if "conv1.weight" in state else None
    encoder = create_encoder(arch, in_channels, small_stem, image_size)
    if in_channels == 1 and state.get("conv1.weight") is not None and state["conv1.weight"].shape[1] == 3:
        state["conv1.weight"] = state["conv1.weight"].sum(dim=1, keepdim=True)  # RGB filters on gray input
    try:
        encoder.load_state_dict(state)
    except RuntimeError as error:
        detail = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise UserError(f"--init {path} does not fit --arch {arch} ({detail[min(1, len(detail) - 1)]})") from None
    return encoder


class Pixels(nn.Flatten):
    """The raw-pixel baseline as an "encoder": normalised pixels, flattened."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features


# ---------------------------------------------------------------------------------------
# The evaluation commands.  One labelled dataset, one split per (label fraction, seed),
# every init and every method on that same split, one table.

METHODS = ("knn", "linear", "finetune")


@dataclass
class EvalSettings:
    """What ``byol eval`` / ``finetune`` / ``compare`` share; see ``byol compare --help``."""

    data: str | None = None
    test_data: str | None = None
    test_fraction: float = 0.2
    image_size: int | None = None
    arch: str = "narrow_resnet"
    label_fractions: tuple[float, ...] = (1.0,)
    val_fraction: float = 0.1
    subset: str | None = None
    metric: str | None = None   # None: qwk when ordinal, else top1
    ordinal: bool = False
    knn_k: int = 200
    knn_temperature: float = 0.1
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)

    @property
    def selection_metric(self) -> str:
        return self.metric or ("qwk" if self.ordinal else "top1")


@dataclass
class LabelledData:
    """A labelled training set and a test set, ready for every method."""

    name: str
    train: ImageSet
    test: ImageSet
    classes: tuple[str, ...]
    mean: torch.Tensor
    std: torch.Tensor
    image_size: int
    roles: list[str]   # per training image: "" (usable), or "test" when the test split was carved from it


def _check_settings(settings: EvalSettings) -> None:
    choices = [m for m in METRIC_NAMES if m != "top5"]
    if settings.metric is not None and settings.metric not in choices:
        raise UserError(f"--metric {settings.metric}: choose one of {', '.join(choices)}")
    for fraction in settings.label_fractions:
        if not 0 < fraction <= 1:
            raise UserError(f"--label-fraction {fraction}: give a fraction in (0, 1], e.g. 0.01 for 1 % of the labels")
    if settings.subset and len(settings.label_fractions) > 1:
        raise UserError("--subset fixes the images of one label fraction; give one --label-fraction with it")
    for name in ("val_fraction", "test_fraction"):
        if not 0 < getattr(settings, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} {getattr(settings, name)}: give a fraction in (0, 1)")


def _align_test_labels(test: Dataset, classes: tuple[str, ...], integer_labels: bool) -> ImageSet:
    """The test set's labels as indices of the training classes; unknown ones are an error."""
    test_set = test.eval_train or test.test
    if test_set is None or test_set.labels is None:
        raise DataError(f"--test-data {test.name}: has no labels to score against")
    if integer_labels or not test.classes:
        unknown = sorted(set(test_set.labels.tolist()) - set(range(len(classes))))
        if unknown:
            raise DataError(f"--test-data {test.name}: labels {unknown[:5]} never occur in the training data "
                            f"(known: 0..{len(classes) - 1})")
        return test_set
    unknown = sorted(set(test.classes) - set(classes))
    if unknown:
        raise DataError(f"--test-data {test.name}: labels {unknown[:5]} never occur in the training data "
                        f"(known: {', '.join(classes[:10])})")
    remap = torch.tensor([classes.index(name) for name in test.classes])
    return ImageSet(test_set.images, remap[test_set.labels], test_set.files, test_set.names)


def load_labelled(settings: EvalSettings) -> LabelledData:
    """The training and test images of an evaluation: the dataset's own test split, or
    ``--test-data``, or else a stratified ``--test-fraction`` carved from the labelled
    images (seeded; recorded in the subset file)."""
    dataset = load_dataset(settings.data, image_size=settings.image_size)
    train = dataset.eval_train
    if train is None:
        raise DataError(f"{dataset.name} has no labels; evaluation needs class folders, a labelled CSV or a "
                        "labelled format (byol embed works on unlabeled images)")
    num_classes = dataset.num_classes
    classes = dataset.classes or tuple(str(i) for i in range(num_classes))
    roles = [""] * len(train)
    if settings.test_data:
        test_dataset = load_dataset(settings.test_data, image_size=settings.image_size or train.image_shape[1])
        test = _align_test_labels(test_dataset, classes, dataset.classes is None)
        if test.image_shape != train.image_shape:
            raise DataError(f"--test-data {settings.test_data}: images are {test.image_shape}, training images "
                            f"{train.image_shape}; pass --image-size")
    elif dataset.test is not None and dataset.test.labels is not None:
        test = dataset.test
    else:
        rest, held = stratified_split(train.labels, settings.test_fraction, settings.seed + 2)
        for i in held.tolist():
            roles[i] = "test"
        print(f"byol: {dataset.name} has no test split: holding out a stratified {100 * settings.test_fraction:g} % "
              f"({len(held)} images, seed {settings.seed}) as test set (--test-fraction, or give --test-data)",
              file=sys.stderr)
        test = train.subset(held)
    mean, std = dataset.channel_stats()
    return LabelledData(dataset.name, train, test, classes, mean, std, settings.image_size or train.image_shape[1],
                        roles)


def _split(data: LabelledData, fraction: float, settings: EvalSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, val) indices into ``data.train`` for one label fraction, drawn from the images
    not held out as test — or read back from ``--subset``."""
    if settings.subset:
        return read_subset(Path(settings.subset), data)
    usable = torch.tensor([i for i, role in enumerate(data.roles) if role == ""], dtype=torch.long)
    counts = torch.bincount(data.train.labels[usable], minlength=len(data.classes))
    if counts.min() < 2:
        name = data.classes[int(counts.argmin())]
        raise DataError(f"class {name} has {int(counts.min())} labelled training images (outside the test split); "
                        "each class needs 2, one to fit and one to validate on: add images or drop the class")
    fit, val = label_split(data.train.labels[usable], fraction, settings.val_fraction, settings.seed)
    return usable[fit], usable[val]


def write_subset(path: Path, data: LabelledData, fit: torch.Tensor, val: torch.Tensor) -> None:
    """Every training image's role (fit / val / test / unused), so the run can be repeated
    exactly with ``--subset``."""
    roles = ["unused" if role == "" else role for role in data.roles]
    for indices, role in ((fit, "fit"), (val, "val")):
        for i in indices.tolist():
            roles[i] = role
    names = data.train.names or [str(i) for i in range(len(data.train))]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "image", "label", "role"])
        writer.writerows(zip(range(len(names)), names, data.train.labels.tolist(), roles))


def read_subset(path: Path, data: LabelledData) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        labels = [int(row["label"]) for row in rows]
        roles = [row["role"] for row in rows]
    except (OSError, KeyError, ValueError, csv.Error) as error:
        raise UserError(f"--subset {path}: not a subset file written by byol ({first_line(error)})") from None
    if labels != data.train.labels.tolist() or any((r == "test") != (d == "test") for r, d in zip(roles, data.roles)):
        raise UserError(f"--subset {path} was written for other data ({len(rows)} images; these are "
                        f"{len(data.train)}) or another --seed/--test-fraction; drop --subset or use the same data")
    return (torch.tensor([i for i, r in enumerate(roles) if r == "fit"]),
            torch.tensor([i for i, r in enumerate(roles) if r == "val"]))


def _load_init(init: str, settings: EvalSettings, data: LabelledData) -> nn.Module:
    torch.manual_seed(settings.seed)  # a random-init baseline is reproducible from --seed
    return resolve_encoder(init, settings.arch, data.train.image_shape[0], data.image_size)


def _run(init: str, encoder: nn.Module, methods: list[str], data: LabelledData, settings: EvalSettings,
         device: torch.device, out: Path) -> list[dict]:
    """Every method × label fraction for one init, on the shared splits."""
    num_classes, metric, rows = len(data.classes), settings.selection_metric, []
    encoder = encoder.to(device).to(memory_format=torch.channels_last)
    frozen = None
    for fraction in settings.label_fractions:
        fit, val = _split(data, fraction, settings)
        if not settings.subset:  # a given subset file is already the record
            write_subset(out / f"subset-{fraction:g}-seed{settings.seed}.csv", data, fit, val)
        used = torch.cat([fit, val])
        for method in methods:
            row = {"init": init, "method": method, "labels": len(used), "label_fraction": fraction}
            if method == "finetune":
                if isinstance(encoder, Pixels):
                    print(f"byol: skipping finetune of {init}: raw pixels have no encoder to fine-tune", file=sys.stderr)
                    continue
                result = finetune(copy.deepcopy(encoder), data.train.subset(fit), data.train.subset(val),
                                  num_classes, data.mean, data.std, data.image_size, device, settings.finetune,
                                  seed=settings.seed)
                scores = predict(result.model, data.test, data.mean, data.std, data.image_size, device)
                row["detail"] = (f"best epoch {result.best_epoch}/{result.epochs_run} "
                                 f"(val {metric} {result.val_score:.4f})")
            else:
                if frozen is None:  # once per init, for every frozen-feature method and label fraction
                    frozen = (extract_features(encoder, data.train, data.mean, data.std, data.image_size, device=device),
                              extract_features(encoder, data.test, data.mean, data.std, data.image_size, device=device))
                train_features, test_features = frozen[0][used.to(frozen[0].device)], frozen[1]
                labels = data.train.labels[used]
                if method == "knn":
                    scores = knn_predict(train_features, labels, test_features, num_classes, settings.knn_k,
                                         settings.knn_temperature)
                    row["detail"] = f"k={settings.knn_k}, T={settings.knn_temperature:g}"
                else:
                    probe = linear_probe(train_features, labels, test_features, data.test.labels, num_classes,
                                         seed=settings.seed, metric=metric, val_index=torch.arange(len(fit), len(used)))
                    scores = probe.test_scores
                    row["detail"] = f"L2 {probe.weight_decay:g} (val {metric} {probe.val_score:.4f})"
            metrics = classification_metrics(scores.float(), data.test.labels, num_classes)
            row.update({k: metrics[k] for k in METRIC_NAMES if k in metrics})
            row["per_class_accuracy"], row["confusion_matrix"] = metrics["per_class_accuracy"], metrics["confusion_matrix"]
            print(f"byol: {init} {method} at {100 * fraction:g} % labels: {metric} {row[metric]:.4f}", file=sys.stderr)
            rows.append(row)
    return rows


def _format(key: str, value) -> str:
    if isinstance(value, str):
        return value
    if key == "qwk":
        return f"{value:.4f}"
    if key == "label_fraction":
        return f"{100 * value:g} %"
    return str(value) if isinstance(value, int) else f"{100 * value:.2f}"


def results_table(rows: list[dict]) -> str:
    """Markdown table of the scalar results; percentages except QWK."""
    columns = [c for c in ("init", "method", "label_fraction", "labels", *METRIC_NAMES, "detail")
               if any(c in row for row in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_format(c, row[c]) if c in row else "" for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_results(rows: list[dict], out: Path, stem: str, data: LabelledData, settings: EvalSettings) -> None:
    """``STEM.csv`` (one row per init × method × label fraction) and ``STEM.md`` (the table,
    then per-class accuracy and the confusion matrix of each row)."""
    scalar = [c for c in ("init", "method", "label_fraction", "labels", *METRIC_NAMES, "detail")
              if any(c in row for row in rows)]
    with (out / f"{stem}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=scalar, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    sections = [f"# {stem} on {data.name}\n", f"{len(data.train)} labelled training images, {len(data.test)} test "
                f"images; selection metric {settings.selection_metric}; seed {settings.seed}.\n", results_table(rows)]
    k = len(data.classes)
    for row in rows:
        title = f"{row['init']} · {row['method']} · {100 * row['label_fraction']:g} % labels"
        per_class = "\n".join(f"| {name} | {100 * acc:.2f} |" for name, acc in zip(data.classes, row["per_class_accuracy"]))
        confusion = "\n".join(f"| **{name}** | " + " | ".join(map(str, r)) + " |"
                              for name, r in zip(data.classes, row["confusion_matrix"]))
        sections.append(f"\n## {title}\n\n| class | accuracy (%) |\n| --- | --- |\n{per_class}\n\n"
                        f"Confusion matrix (rows: true, columns: predicted)\n\n| | {' | '.join(data.classes)} |\n"
                        f"|{' --- |' * (k + 1)}\n{confusion}")
    (out / f"{stem}.md").write_text("\n".join(sections) + "\n")


def default_out(inits: list[str]) -> Path:
    """The run directory of the first ``byol:`` init, else ./byol-eval."""
    for init in inits:
        path = Path(init.removeprefix("byol:"))
        if path.is_dir():
            return path
    return Path("byol-eval")


def run_evaluation(inits: list[str], methods: list[str], settings: EvalSettings, stem: str) -> list[dict]:
    """What ``byol eval``, ``byol finetune`` and ``byol compare`` do: every init × method ×
    label fraction on the same splits; the table printed and written as STEM.csv/.md."""
    _check_settings(settings)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown method {unknown[0]}; choose from {', '.join(METHODS)}")
    device = resolve_device(settings.device)
    data = load_labelled(settings)
    out = Path(settings.out) if settings.out else default_out(inits)
    encoders = [_load_init(init, settings, data) for init in inits]  # every init loads before any runs
    out.mkdir(parents=True, exist_ok=True)
    rows = [row for init, encoder in zip(inits, encoders)
            for row in _run(init, encoder, methods, data, settings, device, out)]
    print(results_table(rows))
    write_results(rows, out, stem, data, settings)
    print(f"byol: results in {out / stem}.csv and .md")
    return rows


def embed(init: str, out: str, data: str | None = None, arch: str = "narrow_resnet", image_size: int | None = None,
          device: str = "auto", seed: int = 0) -> Path:
    """``byol embed``: the encoder's features of every image (train, then test) as
    ``OUT`` (.npy, float32, N × D) and ``OUT`` with .csv: row, split, image, label."""
    import numpy as np

    out_path = Path(out)
    if out_path.suffix != ".npy":
        raise UserError(f"--out {out}: give a .npy path (the image list is written beside it as .csv)")
    target_device = resolve_device(device)
    dataset = load_dataset(data, image_size=image_size)
    splits = [("train", dataset.train)] + ([("test", dataset.test)] if dataset.test is not None else [])
    channels, height, _ = dataset.train.image_shape
    torch.manual_seed(seed)
    encoder = resolve_encoder(init, arch, channels, image_size or height).to(target_device)
    mean, std = dataset.channel_stats()
    features, rows = [], []
    for split, images in splits:
        features.append(extract_features(encoder.to(memory_format=torch.channels_last), images, mean, std,
                                         image_size or height, device=target_device).cpu())
        names = images.names or [f"{split}/{i}" for i in range(len(images))]
        labels = images.labels.tolist() if images.labels is not None else [""] * len(images)
        rows += [(split, name, label) for name, label in zip(names, labels)]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(out_path, torch.cat(features).numpy())
    with out_path.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "split", "image", "label"])
        writer.writerows((i, *row) for i, row in enumerate(rows))
    print(f"byol: {len(rows)} x {features[0].shape[1]} features in {out_path}, image list in "
          f"{out_path.with_suffix('.csv')}")
    return out_path
