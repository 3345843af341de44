"""Classification metrics from class scores: accuracy, top-5, balanced accuracy, macro-F1,
quadratic weighted kappa (the ordinal-grading metric of DRAC 2022), per-class accuracy and the
confusion matrix.  Each metric is defined once, on confusion matrices, for one set of
predictions or a stack of them at once (the bootstrap's resamples, ``intervals.py``)."""
from __future__ import annotations

import torch

METRIC_NAMES = ("top1", "top5", "balanced_accuracy", "macro_f1", "qwk")
RESAMPLABLE = ("top1", "balanced_accuracy", "macro_f1", "qwk")  # computable from a confusion matrix


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts; rows are true classes, columns predictions."""
    return confusion_matrices(predicted[None], labels[None], num_classes)[0].long()


def confusion_matrices(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(R, K, K) counts of R sets of predictions (R, N) against their labels (R, N), in float64."""
    rows = torch.arange(len(predicted), device=predicted.device)[:, None] * num_classes ** 2
    index = (rows + labels.long() * num_classes + predicted.long()).reshape(-1)
    counts = torch.bincount(index, minlength=len(predicted) * num_classes ** 2)
    return counts.reshape(len(predicted), num_classes, num_classes).double()


def from_confusion(matrices: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every metric of ``RESAMPLABLE`` for each of R confusion matrices (R, K, K): (R,) tensors.

    balanced accuracy and macro-F1 average over the classes present in that matrix; QWK is
    Cohen's kappa with weights (i − j)² / (K − 1)², 1 − Σ w·O / Σ w·E with E the outer
    product of O's marginals (1 where E carries no weight: every label and prediction alike)."""
    support, predicted_count = matrices.sum(2), matrices.sum(1)
    correct, total = torch.diagonal(matrices, dim1=1, dim2=2), matrices.sum((1, 2))
    present = support > 0
    recall = correct / support.clamp_min(1)
    precision = correct / predicted_count.clamp_min(1)
    f1 = torch.where(present, 2 * precision * recall / (precision + recall).clamp_min(1e-12), 0.0)
    k = matrices.shape[-1]
    grades = torch.arange(k, dtype=torch.float64, device=matrices.device)
    weights = (grades[:, None] - grades[None, :]) ** 2 / max(k - 1, 1) ** 2
    expected = support[:, :, None] * predicted_count[:, None, :] / total.clamp_min(1)[:, None, None]
    denominator = (weights * expected).sum((1, 2))
    kappa = torch.where(denominator > 0, 1 - (weights * matrices).sum((1, 2)) / denominator.clamp_min(1e-300), 1.0)
    return {"top1": correct.sum(1) / total.clamp_min(1),
            "balanced_accuracy": (recall * present).sum(1) / present.sum(1).clamp_min(1),
            "macro_f1": f1.sum(1) / present.sum(1).clamp_min(1),
            "qwk": kappa}


def quadratic_weighted_kappa(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Cohen's kappa with quadratic weights (the DRAC 2022 grading metric)."""
    return from_confusion(confusion_matrices(predicted.cpu()[None], labels.cpu()[None], num_classes))["qwk"].item()


def classification_metrics(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Top-1 (and top-5 with ≥ 5 classes), balanced accuracy, macro-F1, quadratic weighted
    kappa, per-class accuracy and the confusion matrix, from class scores (N, K)."""
    scores, labels = scores.cpu(), labels.cpu()
    predicted = scores.argmax(dim=1)
    matrix = confusion_matrices(predicted[None], labels[None], num_classes)
    results = {name: value.item() for name, value in from_confusion(matrix).items()}
    support = matrix[0].sum(1)
    results["per_class_accuracy"] = torch.where(support > 0, matrix[0].diagonal() / support.clamp_min(1),
                                                torch.nan).tolist()
    results["confusion_matrix"] = matrix[0].long().tolist()
    if num_classes >= 5:
        results["top5"] = (scores.topk(5, dim=1).indices == labels[:, None]).any(dim=1).double().mean().item()
    return results
