"""How good is an encoder (paper §4): frozen features → weighted k-NN and a linear probe."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import create_encoder, load_encoder
from .config import UserError, first_line, resolve_device
from .data import ImageSet, load_dataset


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


def frozen_features(encoder: nn.Module, dataset, mean: torch.Tensor, std: torch.Tensor, image_size: int | None,
                    device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of a dataset's labelled training split and of its test split, for evaluation."""
    return (extract_features(encoder, dataset.eval_train, mean, std, image_size, device=device),
            extract_features(encoder, dataset.test, mean, std, image_size, device=device))


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
    val_accuracy: float        # validation top-1 at that strength
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


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (rest, held_out) with ``fraction`` of every class held out, reproducible from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    held_out = []
    labels = labels.cpu()
    for value in labels.unique():
        members = (labels == value).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        held_out.append(members[: max(1, int(round(fraction * len(members))))])
    held_out = torch.cat(held_out).sort().values
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[held_out] = False
    return mask.nonzero().squeeze(1), held_out


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Zero-mean, unit-variance features using the training set's statistics."""
    mean, std = train.mean(dim=0), train.std(dim=0).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def linear_probe(
    train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
    test_labels: torch.Tensor, num_classes: int,
    weight_decays: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2), val_fraction: float = 0.1, seed: int = 0,
) -> LinearProbeResult:
    """Linear evaluation (§4.1) on frozen features.

    The L2 strength is chosen on a stratified validation split carved from the
    training set — never on the test set — then the classifier is refit on the
    whole training set and scored once on the test set."""
    train_features, test_features = standardise(train_features.float(), test_features.float())
    fit_index, val_index = stratified_split(train_labels, val_fraction, seed)
    fit_index, val_index = fit_index.to(train_features.device), val_index.to(train_features.device)
    train_labels = train_labels.to(train_features.device)
    best = (-1.0, weight_decays[0])
    for weight_decay in weight_decays:
        classifier = fit_logistic_regression(train_features[fit_index], train_labels[fit_index],
                                             num_classes, weight_decay)
        predicted = classifier(train_features[val_index]).argmax(dim=1)
        val_accuracy = (predicted == train_labels[val_index]).float().mean().item()
        best = max(best, (val_accuracy, weight_decay))
    val_accuracy, weight_decay = best
    classifier = fit_logistic_regression(train_features, train_labels, num_classes, weight_decay)
    scores = classifier(test_features)
    accuracy = (scores.argmax(dim=1).cpu() == test_labels.cpu()).float().mean().item()
    return LinearProbeResult(accuracy, weight_decay, val_accuracy, classifier, scores)


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts; rows are true classes, columns predictions."""
    index = labels.cpu().long() * num_classes + predicted.cpu().long()
    return torch.bincount(index, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def quadratic_weighted_kappa(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Cohen's kappa with quadratic weights (the DRAC 2022 grading metric): 1 − Σ w·O / Σ w·E
    with w_ij = (i − j)² / (K − 1)², O the confusion matrix, E the outer product of its
    marginals scaled to the same total."""
    observed = confusion_matrix(predicted, labels, num_classes).double()
    expected = observed.sum(1, keepdim=True) @ observed.sum(0, keepdim=True) / observed.sum()
    grades = torch.arange(num_classes, dtype=torch.float64)
    weights = (grades[:, None] - grades[None, :]) ** 2 / max(num_classes - 1, 1) ** 2
    denominator = (weights * expected).sum()
    return 1.0 if denominator == 0 else float(1 - (weights * observed).sum() / denominator)


def classification_metrics(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Top-1 (and top-5 with ≥ 5 classes), balanced accuracy, macro-F1, quadratic weighted
    kappa, per-class accuracy and the confusion matrix, from class scores (N, K)."""
    scores, labels = scores.cpu(), labels.cpu()
    predicted = scores.argmax(dim=1)
    matrix = confusion_matrix(predicted, labels, num_classes).double()
    support, predicted_count, correct = matrix.sum(1), matrix.sum(0), matrix.diag()
    present = support > 0
    per_class = torch.where(present, correct / support.clamp_min(1), torch.nan)
    precision = correct / predicted_count.clamp_min(1)
    f1 = torch.where(present, 2 * precision * per_class / (precision + per_class).clamp_min(1e-12), torch.nan)
    results = {
        "top1": (predicted == labels).double().mean().item(),
        "balanced_accuracy": per_class[present].mean().item(),
        "macro_f1": f1[present].nan_to_num(0.0).mean().item(),
        "qwk": quadratic_weighted_kappa(predicted, labels, num_classes),
        "per_class_accuracy": per_class.tolist(),
        "confusion_matrix": matrix.long().tolist(),
    }
    if num_classes >= 5:
        results["top5"] = (scores.topk(5, dim=1).indices == labels[:, None]).any(dim=1).double().mean().item()
    return results


def resolve_encoder(init: str, arch: str, in_channels: int, image_size: int) -> nn.Module:
    """The encoder ``--init`` names: ``random`` (``arch`` at random initialisation),
    ``byol:RUN_DIR`` or a run directory (its encoder.safetensors), or a weights file —
    byol's ``.safetensors``, or a torchvision state dict (``.pth``/``.pt``) of ``arch``,
    e.g. ImageNet weights you downloaded yourself (nothing is downloaded here)."""
    if init == "random":
        return create_encoder(arch, in_channels, None, image_size)
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
    encoder = create_encoder(arch, in_channels, None, image_size)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"--init {path}: not a PyTorch state dict ({first_line(error)})") from None
    state = {k: v for k, v in state.get("state_dict", state).items() if not k.startswith("fc.")}
    if in_channels == 1 and state.get("conv1.weight") is not None and state["conv1.weight"].shape[1] == 3:
        state["conv1.weight"] = state["conv1.weight"].sum(dim=1, keepdim=True)  # RGB filters on gray input
    try:
        encoder.load_state_dict(state)
    except RuntimeError as error:
        detail = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise UserError(f"--init {path} does not fit --arch {arch} ({detail[min(1, len(detail) - 1)]})") from None
    return encoder


METRIC_NAMES = ("top1", "top5", "balanced_accuracy", "macro_f1", "qwk")


def evaluate_encoder(init: str, method: str, data: str | None = None, arch: str = "narrow_resnet",
                     image_size: int | None = None, out: str | None = None, device: str = "auto",
                     knn_k: int = 200, knn_temperature: float = 0.1, seed: int = 0) -> dict:
    """``byol eval knn|linear``: frozen features of the ``init`` encoder on the dataset's
    labelled train split, scored on its test split; results printed and, with ``out``,
    written as eval-METHOD.csv and eval-METHOD.md."""
    if method not in ("knn", "linear"):
        raise UserError(f"unknown evaluation '{method}'; choose knn or linear")
    target_device = resolve_device(device)
    dataset = load_dataset(data, image_size=image_size)
    if not dataset.can_evaluate():
        raise UserError(f"{dataset.name} has no labelled train and test splits to evaluate on")
    channels, height, _ = dataset.train.image_shape
    torch.manual_seed(seed)  # a random-init baseline is reproducible from --seed
    encoder = resolve_encoder(init, arch, channels, image_size or height).to(target_device)
    encoder = encoder.to(memory_format=torch.channels_last)
    mean, std = dataset.channel_stats()
    labelled, num_classes = dataset.eval_train, dataset.num_classes
    train, test = frozen_features(encoder, dataset, mean, std, image_size or height, target_device)
    if method == "knn":
        scores = knn_predict(train, labelled.labels, test, num_classes, knn_k, knn_temperature)
    else:
        scores = linear_probe(train, labelled.labels, test, dataset.test.labels, num_classes, seed=seed).test_scores
    metrics = classification_metrics(scores.float(), dataset.test.labels, num_classes)
    row = {"init": init, "method": method, **{k: metrics[k] for k in METRIC_NAMES if k in metrics}}
    table = "| " + " | ".join(row) + " |\n|" + " --- |" * len(row) + "\n| " + " | ".join(
        v if isinstance(v, str) else f"{100 * v:.2f}" if k != "qwk" else f"{v:.4f}" for k, v in row.items()) + " |"
    print(table)
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        with (Path(out) / f"eval-{method}.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            writer.writeheader()
            writer.writerow(row)
        classes = dataset.classes or tuple(str(i) for i in range(num_classes))
        per_class = "\n".join(f"| {name} | {100 * acc:.2f} |" for name, acc in zip(classes, metrics["per_class_accuracy"]))
        confusion = "\n".join("| " + " | ".join(map(str, r)) + " |" for r in metrics["confusion_matrix"])
        (Path(out) / f"eval-{method}.md").write_text(
            f"# {method} evaluation of {init} on {dataset.name}\n\n{table}\n\n## Per-class accuracy (%)\n\n"
            f"| class | accuracy |\n| --- | --- |\n{per_class}\n\n## Confusion matrix (rows: true, columns: predicted)"
            f"\n\n|{' |' * num_classes}\n|{' --- |' * num_classes}\n{confusion}\n")
    return metrics
