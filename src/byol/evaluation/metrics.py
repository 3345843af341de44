"""Classification metrics from class scores: accuracy, top-5, balanced accuracy, macro-F1,
quadratic weighted kappa (the ordinal-grading metric of DRAC 2022), per-class accuracy
and the confusion matrix."""
from __future__ import annotations

import torch

METRIC_NAMES = ("top1", "top5", "balanced_accuracy", "macro_f1", "qwk")


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
