"""The run directory: what a pre-training run writes, and the one place that reads it back.

    config.yaml              every setting of the run
    metrics.csv              one row per epoch (TensorBoard events in tensorboard/ when installed)
    checkpoints/last.pt      everything needed to resume; previous.pt is the one before it
    encoder.safetensors      the online encoder, loadable with ``byol.load_encoder``
    results.json             final k-NN and linear-probe accuracy, versions, git commit
    pretrain-images.npy      the identities of every image pre-training saw (``ImageSet.identities``)
    held-out.csv             the labelled images held out from pre-training as a test split, if any

Every file is written to a temporary name, flushed to disk and renamed into place, and the
folder itself is flushed after the rename, so a run killed at any moment (or a power cut)
leaves each file either as it was or complete.  Training writes here (rank 0 only); resuming,
evaluation, reports and the weights resolver read here.  What goes *into* the encoder file is
the models' business: they hand ``save_encoder`` a function that writes it.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml

from .errors import UserError, first_line, setting, warn

METRIC_COLUMNS = ["epoch", "step", "loss", "lr", "target_momentum", "collapse_std", "images_per_s", "data_wait_s",
                  "elapsed_s", "knn_top1"]


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename is only durable once its folder is); a no-op where the
    system cannot open folders."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(temporary)`` then rename it to ``path``: readers see the old file or the new one.
    A failed write (a full disk, a file-size limit) leaves the old file and removes the temporary."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        write(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda temporary: temporary.write_text(text))


class RunDir:
    """The files of one run, under ``path``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.metrics = self.path / "metrics.csv"
        checkpoints = self.path / "checkpoints"
        self.last, self.previous, self.next = checkpoints / "last.pt", checkpoints / "previous.pt", checkpoints / "next.pt"
        self.encoder = self.path / "encoder.safetensors"
        self.results = self.path / "results.json"
        self.seen = self.path / "pretrain-images.npy"
        self.held_out = self.path / "held-out.csv"

    def is_run(self) -> bool:
        """Whether ``path`` holds a pre-training run (its settings and metrics)."""
        return self.config.is_file() and self.metrics.is_file()

    def check_new(self, overwrite: bool) -> None:
        """Refuse to clobber a run unless told to, and a place that cannot hold one; creates nothing."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{setting('out')} {self.path} is a file; give a folder for the run")
        if self.path.is_dir() and any(self.path.iterdir()) and not overwrite:
            raise UserError(f"run directory {self.path} is not empty; use {setting('resume')} to continue it, "
                            f"{setting('overwrite')} to replace it, or {setting('out')} for a new one")
        parent = next(p for p in (self.path, *self.path.parents) if p.exists())
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise UserError(f"{setting('out')} {self.path}: cannot create it ({parent} is not a writable folder); "
                            "choose another place")

    def has_checkpoint(self) -> bool:
        return any(path.is_file() for path in (self.next, self.last, self.previous))

    def check_resume(self) -> None:
        """A run to continue: checkpointed, or stopped before its first checkpoint (while its
        views were being chosen, say) with its settings saved — it then starts over from them."""
        if not (self.has_checkpoint() or self.config.is_file()):
            if self.path.is_dir() and any(self.path.iterdir()):  # stopped before its settings were saved
                raise UserError(f"{setting('resume')}: {self.path} holds no checkpoint and no config.yaml (it stopped "
                                f"before either was saved); start it again with {setting('overwrite')}")
            raise UserError(f"{setting('resume')}: no checkpoint at {self.last}; start a new run without it")

    def create(self, overwrite: bool) -> None:
        """The folder and its checkpoints folder; a place the system refuses (``/proc/...``, a
        read-only mount) is a one-line error, and nothing else is touched."""
        try:
            if overwrite and self.path.exists():
                shutil.rmtree(self.path)
            (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"{setting('out')} {self.path}: cannot create it ({first_line(error)}); choose another "
                            "place") from None

    def save_config(self, values: dict) -> None:
        write_text(self.config, yaml.safe_dump(values, sort_keys=False))

    def load_config(self) -> dict:
        try:
            values = yaml.safe_load(self.config.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise UserError(f"{self.config} cannot be read ({first_line(error)}); it records the run's settings: "
                            "restore it, or start a new run") from None
        if not isinstance(values, dict):
            raise UserError(f"{self.config} is not a mapping of setting: value; restore it, or start a new run")
        return values

    def save_checkpoint(self, state: dict) -> None:
        """The new state goes to next.pt (complete, or not there at all); then last.pt becomes
        previous.pt and next.pt last.pt (``rotate``).  A kill between those renames leaves
        next.pt, which a resumed run rotates into place before it reads: the newest complete
        state is never skipped."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        try:
            atomic_write(self.next, lambda temporary: temporary.write_bytes(buffer.getvalue()))
        except OSError as error:
            kept = "the previous checkpoint is intact" if self.last.is_file() else "no checkpoint was written yet"
            raise UserError(f"could not write a checkpoint in {self.last.parent} ({first_line(error)}); {kept}: "
                            "free disk space, then resume") from None
        self.rotate()

    def rotate(self) -> None:
        """next.pt (whole, or not there: it is written atomically) becomes last.pt, and last.pt
        previous.pt: the end of every ``save_checkpoint``, and before a resumed run reads — where
        it finishes the renames a kill interrupted (else a run resumed from next.pt after its
        final checkpoint ends with last.pt missing or stale)."""
        if not self.next.is_file():
            return
        if self.last.is_file():
            os.replace(self.last, self.previous)
        os.replace(self.next, self.last)
        fsync_folder(self.last.parent)

    def load_checkpoint(self, device: torch.device) -> dict:
        """The newest readable checkpoint (next.pt, left by a kill inside ``save_checkpoint``, then
        last.pt, then previous.pt); falling back past an unreadable one says so."""
        errors = []
        for path in (self.next, self.last, self.previous):
            if not path.is_file():
                continue
            try:
                state = torch.load(path, map_location=device, weights_only=False)
            except Exception as error:  # truncated, overwritten, not a checkpoint: try the older one
                errors.append(f"{path.name}: {first_line(error)}")
                continue
            if errors:
                warn(f"{errors[0]} cannot be read; resuming from {path.name} (epoch {state['epoch']})")
            return state
        raise UserError(f"no readable checkpoint in {self.last.parent} ({'; '.join(errors)}); start a new run")

    def save_encoder(self, write: Callable[[Path], None]) -> None:
        """encoder.safetensors, written by ``write(path)`` (``models.save_encoder``), atomically."""
        atomic_write(self.encoder, write)

    def save_results(self, results: dict) -> None:
        write_text(self.results, json.dumps(results, indent=2) + "\n")

    def read_results(self) -> dict | None:
        try:
            return json.loads(self.results.read_text())
        except (OSError, ValueError):
            return None

    def save_seen(self, identities: torch.Tensor) -> None:
        atomic_write(self.seen, lambda temporary: np.save(open(temporary, "wb"), identities.cpu().numpy()))

    def read_seen(self) -> torch.Tensor | None:
        try:
            return torch.from_numpy(np.load(self.seen))
        except (OSError, ValueError):
            return None

    def save_held_out(self, names: list[str], labels: list[int], identities: torch.Tensor) -> None:
        def write(temporary: Path) -> None:
            with temporary.open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["image", "label", "identity"])
                writer.writerows(zip(names, labels, identities.tolist()))
        atomic_write(self.held_out, write)

    def read_held_out(self) -> torch.Tensor | None:
        """The identities of the images this run held out from pre-training (None: it held none)."""
        try:
            with self.held_out.open(newline="") as handle:
                return torch.tensor([int(row["identity"]) for row in csv.DictReader(handle)], dtype=torch.long)
        except (OSError, KeyError, ValueError):
            return None

    def read_metrics(self) -> list[dict]:
        """The rows of metrics.csv, numbers as numbers ("" where a column has no value)."""
        try:
            with self.metrics.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
        except OSError:
            return []
        return [{k: (int(v) if k in ("epoch", "step") else float(v)) if v not in ("", None) else "" for k, v in row.items()}
                for row in rows]


class MetricsLog:
    """metrics.csv (always) and TensorBoard events (when installed), written as training goes.
    Rows after ``keep_epochs`` (the checkpoint a resume starts from) are dropped: every epoch
    ends with exactly one row, however often the run was interrupted."""

    def __init__(self, run: RunDir, keep_epochs: int = 0):
        self.path = run.metrics
        self.rows = [row for row in run.read_metrics() if row["epoch"] <= keep_epochs]
        self._write()
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tensorboard = SummaryWriter(str(run.path / "tensorboard"))
        except ImportError:
            self.tensorboard = None

    def _write(self) -> None:
        def write(temporary: Path) -> None:
            with temporary.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, METRIC_COLUMNS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(self.rows)
        atomic_write(self.path, write)

    def scalars(self, step: int, **values: float) -> None:
        if self.tensorboard:
            for name, value in values.items():
                self.tensorboard.add_scalar(name, value, step)

    def epoch(self, row: dict) -> None:
        self.rows.append({column: row.get(column, "") for column in METRIC_COLUMNS})
        self._write()
        self.scalars(row["step"], **{f"epoch/{k}": v for k, v in row.items() if isinstance(v, float)})

    def close(self) -> None:
        if self.tensorboard:
            self.tensorboard.close()


def git_commit() -> str | None:
    """The commit of the byol source tree, recorded beside the results (None outside git)."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None
