"""What the evaluation commands write: the results table (printed, ``STEM.csv``, ``STEM.md``
with the paired verdicts, per-class accuracy and confusion matrices) and the subset files that
record which images each label fraction used (``subset-F-seedS.csv``), so a run can be repeated
exactly."""
from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from ..base.errors import UserError, first_line, setting
from ..data import ImageSet
from .intervals import RULE, Difference, paired_difference
from .metrics import METRIC_NAMES

SCALAR_COLUMNS = ("init", "protocol", "label_fraction", "labels", "seed", *METRIC_NAMES, "detail")


def _format(key: str, value) -> str:
    if isinstance(value, str):
        return value
    if key == "qwk":
        return f"{value:.4f}"
    if key == "label_fraction":
        return f"{100 * value:g} %"
    return str(value) if isinstance(value, int) else f"{100 * value:.2f}"


def _spread(key: str, values: list[float]) -> str:
    mean = statistics.mean(values)
    if len(values) == 1:
        return _format(key, mean)
    spread = statistics.stdev(values)
    return f"{mean:.4f} ± {spread:.4f}" if key == "qwk" else f"{100 * mean:.2f} ± {100 * spread:.2f}"


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


@dataclass
class Comparison:
    """What ``byol.evaluate`` returns: one row per encoder × protocol × fraction × seed (each with
    its test predictions), and the summaries over seeds with a paired verdict for every pair of
    encoders, in the order they were given (A is given before B)."""

    rows: list[dict]
    metric: str                      # the selection metric, on which the verdicts are drawn
    num_classes: int = 0
    notes: tuple[str, ...] = ()      # the classes' order, the test split, what pre-training saw

    def cells(self) -> dict[tuple, list[dict]]:
        """The rows of each (protocol, label fraction, encoder), in order of appearance."""
        cells: dict[tuple, list[dict]] = {}
        for row in self.rows:
            cells.setdefault((row["protocol"], row["label_fraction"], row["init"]), []).append(row)
        return cells

    def summary(self) -> list[dict]:
        """Per cell: the scores of every seed, their mean and spread."""
        return [{"init": init, "protocol": protocol, "label_fraction": fraction, "labels": rows[0]["labels"],
                 "seeds": len(rows), **{k: [row[k] for row in rows] for k in METRIC_NAMES if k in rows[0]}}
                for (protocol, fraction, init), rows in self.cells().items()]

    def verdicts(self) -> list[dict]:
        """Every pair of encoders, per protocol and label fraction: A − B on the selection metric with
        its 95 % interval over test images and seeds (``intervals.paired_difference``)."""
        found = []
        for (protocol, fraction), cells in self._by_setting().items():
            for i, (a, rows_a) in enumerate(cells):
                for b, rows_b in cells[i + 1:]:
                    difference = self.paired(rows_a, rows_b)
                    found.append({"protocol": protocol, "label_fraction": fraction, "a": a, "b": b,
                                  "difference": difference.estimate, "low": difference.low, "high": difference.high,
                                  "verdict": difference.verdict})
        return found

    def against_probe(self) -> list[dict]:
        """Each encoder's fine-tuning against its own frozen probe (the linear rows), per label
        fraction: fine-tune − linear with the verdicts' interval, the seeds whose fine-tuning scored
        below their probe, and those whose fine-tuning predicted a single class."""
        cells, found = self.cells(), []
        for (protocol, fraction, init), tuned in cells.items():
            probe = cells.get(("linear", fraction, init))
            if protocol != "finetune" or probe is None:
                continue
            difference, by_seed = self.paired(tuned, probe), {row["seed"]: row[self.metric] for row in probe}
            paired = [row for row in tuned if row["seed"] in by_seed]
            found.append({"init": init, "label_fraction": fraction, "difference": difference.estimate,
                          "low": difference.low, "high": difference.high, "verdict": difference.verdict,
                          "seeds": len(paired), "below": sum(row[self.metric] < by_seed[row["seed"]] for row in paired),
                          "one_class": sum(len(torch.unique(row["predicted"])) == 1 for row in paired)})
        return found

    def paired(self, rows_a: list[dict], rows_b: list[dict]) -> Difference:
        """A − B over the seeds both cells have (``intervals.paired_difference``)."""
        first, second = {row["seed"]: row for row in rows_a}, {row["seed"]: row for row in rows_b}
        seeds = sorted(first.keys() & second.keys())
        return paired_difference([first[s]["predicted"] for s in seeds], [second[s]["predicted"] for s in seeds],
                                 [first[s]["test_labels"] for s in seeds], [first[s]["test_ids"] for s in seeds],
                                 self.num_classes, self.metric)

    def _by_setting(self) -> dict[tuple, list[tuple[str, list[dict]]]]:
        grouped: dict[tuple, list] = {}
        for (protocol, fraction, init), rows in self.cells().items():
            grouped.setdefault((protocol, fraction), []).append((init, rows))
        return grouped

    def markdown(self) -> str:
        metrics = [k for k in METRIC_NAMES if any(k in row for row in self.rows)]
        summary = markdown_table(["init", "protocol", "labels", "seeds", *metrics],
                                 [[c["init"], c["protocol"], f"{c['labels']} ({_format('label_fraction', c['label_fraction'])})",
                                   str(c["seeds"]), *(_spread(k, c[k]) for k in metrics)] for c in self.summary()])
        notes = "".join(f"\n\n{note}" for note in self.notes)
        verdicts, (scale, digits) = self.verdicts(), (1, 4) if self.metric == "qwk" else (100, 2)
        if not verdicts:  # one encoder: no pair, but its fine-tuning is still read beside its probe
            return summary + notes + self._probe_markdown(scale, digits)
        table = markdown_table(["protocol", "labels", "A", "B", f"A − B ({self.metric})", "95 % interval", "verdict"],
                               [[v["protocol"], _format("label_fraction", v["label_fraction"]), v["a"], v["b"],
                                 f"{scale * v['difference']:+.{digits}f}",
                                 f"[{scale * v['low']:+.{digits}f}, {scale * v['high']:+.{digits}f}]", v["verdict"]]
                                for v in verdicts])
        return f"{summary}{notes}\n\n{table}\n\nVerdict rule: {RULE}{self._probe_markdown(scale, digits)}"

    def _probe_markdown(self, scale: int, digits: int) -> str:
        """The fine-tuning rows read beside their own probe: a table, and a line where one is worse."""
        checks = self.against_probe()
        if not checks:
            return ""
        table = markdown_table(["init", "labels", f"fine-tune − linear ({self.metric})", "95 % interval", "verdict",
                                "seeds below the probe", "seeds predicting one class"],
                               [[c["init"], _format("label_fraction", c["label_fraction"]),
                                 f"{scale * c['difference']:+.{digits}f}",
                                 f"[{scale * c['low']:+.{digits}f}, {scale * c['high']:+.{digits}f}]", c["verdict"],
                                 f"{c['below']} of {c['seeds']}", str(c["one_class"])] for c in checks])
        worse = sorted({f"{c['init']} ({_format('label_fraction', c['label_fraction'])})" for c in checks
                        if c["verdict"] == "worse" or c["one_class"]})
        warning = (f"\n\nFine-tuning did worse than its own frozen probe, or predicted one class, for "
                   f"{', '.join(worse)}: that encoder's linear row is the better measure of it." if worse else "")
        heading = "Fine-tuning against the same encoder's frozen probe (the linear rows, the same interval):"
        return f"\n\n{heading}\n\n{table}{warning}"


def write_results(comparison: Comparison, out: Path, stem: str, name: str, classes: tuple[str, ...],
                  header: str) -> None:
    """``STEM.csv`` (one row per encoder × protocol × label fraction × seed) and ``STEM.md``
    (the summary and verdict tables, then each cell's per-class accuracy and confusion matrix,
    summed over seeds)."""
    rows = comparison.rows
    scalar = [c for c in SCALAR_COLUMNS if any(c in row for row in rows)]
    with (out / f"{stem}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=scalar, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    sections = [f"# {stem} on {name}\n", header + "\n", comparison.markdown()]
    k = len(classes)
    for (protocol, fraction, init), cell in comparison.cells().items():
        matrix = [[sum(row["confusion_matrix"][i][j] for row in cell) for j in range(k)] for i in range(k)]
        per_class = [matrix[i][i] / max(1, sum(matrix[i])) for i in range(k)]
        title = f"{init} · {protocol} · {100 * fraction:g} % labels · {len(cell)} seed(s)"
        accuracy = "\n".join(f"| {c} | {100 * a:.2f} |" for c, a in zip(classes, per_class))
        confusion = "\n".join(f"| **{c}** | " + " | ".join(map(str, r)) + " |" for c, r in zip(classes, matrix))
        sections.append(f"\n## {title}\n\n| class | accuracy (%) |\n| --- | --- |\n{accuracy}\n\n"
                        f"Confusion matrix summed over seeds (rows: true, columns: predicted)\n\n| | "
                        f"{' | '.join(classes)} |\n|{' --- |' * (k + 1)}\n{confusion}")
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
