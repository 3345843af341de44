"""What the evaluation commands write: the results table (printed, ``STEM.csv``, ``STEM.md``
with per-class accuracy and confusion matrices) and the subset files that record which
images each label fraction used (``subset-F-seedS.csv``), so a run can be repeated exactly."""
from __future__ import annotations

import csv
from pathlib import Path

import torch

from .data import ImageSet
from .errors import UserError, first_line, setting
from .metrics import METRIC_NAMES

SCALAR_COLUMNS = ("init", "protocol", "label_fraction", "labels", *METRIC_NAMES, "detail")


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
    columns = [c for c in SCALAR_COLUMNS if any(c in row for row in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_format(c, row[c]) if c in row else "" for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def print_table(rows: list[dict]) -> None:
    print(results_table(rows))


def write_results(rows: list[dict], out: Path, stem: str, name: str, classes: tuple[str, ...], header: str) -> None:
    """``STEM.csv`` (one row per encoder × protocol × label fraction) and ``STEM.md`` (the
    table, then per-class accuracy and the confusion matrix of each row)."""
    scalar = [c for c in SCALAR_COLUMNS if any(c in row for row in rows)]
    with (out / f"{stem}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=scalar, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    sections = [f"# {stem} on {name}\n", header + "\n", results_table(rows)]
    k = len(classes)
    for row in rows:
        title = f"{row['init']} · {row['protocol']} · {100 * row['label_fraction']:g} % labels"
        per_class = "\n".join(f"| {c} | {100 * acc:.2f} |" for c, acc in zip(classes, row["per_class_accuracy"]))
        confusion = "\n".join(f"| **{c}** | " + " | ".join(map(str, r)) + " |"
                              for c, r in zip(classes, row["confusion_matrix"]))
        sections.append(f"\n## {title}\n\n| class | accuracy (%) |\n| --- | --- |\n{per_class}\n\n"
                        f"Confusion matrix (rows: true, columns: predicted)\n\n| | {' | '.join(classes)} |\n"
                        f"|{' --- |' * (k + 1)}\n{confusion}")
    (out / f"{stem}.md").write_text("\n".join(sections) + "\n")


def write_subset(path: Path, train: ImageSet, roles: list[str], fit: torch.Tensor, val: torch.Tensor) -> None:
    """Every training image's role (fit / val / test / unused)."""
    roles = ["unused" if role == "" else role for role in roles]
    for indices, role in ((fit, "fit"), (val, "val")):
        for i in indices.tolist():
            roles[i] = role
    names = train.names or [str(i) for i in range(len(train))]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "image", "label", "role"])
        writer.writerows(zip(range(len(names)), names, train.labels.tolist(), roles))


def read_subset(path: Path, labels: list[int], roles: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, val) indices from a subset file written for these ``labels`` and test ``roles``."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        saved_labels = [int(row["label"]) for row in rows]
        saved_roles = [row["role"] for row in rows]
    except (OSError, KeyError, ValueError, csv.Error, UnicodeDecodeError) as error:
        raise UserError(f"{setting('subset')} {path}: not a subset file written by byol ({first_line(error)})") from None
    if saved_labels != labels or any((r == "test") != (d == "test") for r, d in zip(saved_roles, roles)):
        raise UserError(f"{setting('subset')} {path} was written for other data ({len(rows)} images; these are "
                        f"{len(labels)}) or another seed / test fraction; drop it or use the same data")
    return (torch.tensor([i for i, r in enumerate(saved_roles) if r == "fit"], dtype=torch.long),
            torch.tensor([i for i, r in enumerate(saved_roles) if r == "val"], dtype=torch.long))
