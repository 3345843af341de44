"""The speed suite on one GPU, under one deadline: what a lease of a few minutes can measure, the
most wanted figures first, each stage's result saved the moment it ends.

    python benchmarks/gpu_suite.py --out results [--minutes 8] [--smoke]

Stages, in priority order (``stages``): the training step eager and compiled at batch 512; byol
against byol-pytorch and lightly at 512; where the eager step's time goes (the profiler);
the GPU-only tests (seconds); Fashion-MNIST ResNet-18 with the faster step, its k-NN curve kept
whatever epoch the deadline stops it at; the step as CUDA graphs; the augmentation engines; the
streaming ResNet-50 pipeline.  Each stage runs as its own process with at most the time left
(and its own cap); one that fails or runs out of time is recorded as such and the next starts.
``summary.json`` — valid after every stage — holds each stage's status, seconds and figures;
``summary.md`` is the same as a table for BENCHMARKS.md.  ``--smoke`` runs every stage at toy
size (on a CPU too): a check of the suite, not a measurement.  ``benchmarks/gpu.sh`` is the one
command to run on the GPU machine.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Stage:
    name: str
    command: list[str] | Callable[[dict], list[str]]  # or made from the summary so far, when the stage starts
    cap: float                                  # seconds this stage may take at most
    figures: Callable[[str, Path], dict] | None = None  # (its output, the out folder) -> its figures
    env: dict = field(default_factory=dict)


def run_stages(stages: list[Stage], out: Path, seconds: float, least: float = 5.0, clock=time.monotonic) -> dict:
    """Run ``stages`` in order within ``seconds`` in all; after each, write summary.json and
    summary.md.  A stage gets min(its cap, the time left), and none starts with less than
    ``least`` seconds left; at its limit it is sent SIGTERM (a pre-training run checkpoints and
    keeps its curve), then SIGKILL 20 s later."""
    out.mkdir(parents=True, exist_ok=True)
    deadline, summary = clock() + seconds, {"stages": []}
    for stage in stages:
        left = deadline - clock()
        command = stage.command(summary) if callable(stage.command) else stage.command
        entry = {"name": stage.name, "command": " ".join(command)}
        if left < least:
            entry.update(status="skipped: no time left", seconds=0.0)
        else:
            entry.update(_run(stage, command, out, min(stage.cap, left)))
        summary["stages"].append(entry)
        _write(summary, out)
    return summary


def _run(stage: Stage, command: list[str], out: Path, limit: float) -> dict:
    log = out / f"{stage.name}.txt"
    started = time.monotonic()
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env={**os.environ, **stage.env}, start_new_session=True)
        try:
            code = process.wait(timeout=limit)
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            status = f"stopped at its limit ({limit:.0f} s)"
    text = log.read_text(errors="replace")
    entry = {"status": status, "seconds": round(time.monotonic() - started, 1)}
    if stage.figures:
        try:
            entry["figures"] = stage.figures(text, out)
        except Exception as error:  # a stage cut short leaves what it wrote; say what could not be read
            entry["figures"] = {"unreadable": f"{type(error).__name__}: {error}"}
    return entry


def _write(summary: dict, out: Path) -> None:
    for name, text in (("summary.json", json.dumps(summary, indent=2) + "\n"), ("summary.md", markdown(summary))):
        temporary = out / f".{name}.tmp"
        temporary.write_text(text)
        os.replace(temporary, out / name)


def markdown(summary: dict) -> str:
    lines = ["| stage | status | seconds | figures |", "| --- | --- | --- | --- |"]
    for entry in summary["stages"]:
        figures = "; ".join(f"{k}: {shown(v)}" for k, v in entry.get("figures", {}).items())
        lines.append(f"| {entry['name']} | {entry['status']} | {entry['seconds']:.0f} | {figures} |")
    return "\n".join(lines) + "\n"


def bench_figures(text: str, out: Path) -> dict:
    found = {key: re.search(pattern, text) for key, pattern in (
        ("images_per_s", r"images/s \(whole steps, median\)\s+([\d,]+)"),
        ("step_ms", r"\n\s+step\s+([\d.]+) ms"),
        ("augmentation", r"augmentation \(2 views\)\s+(.+)"),
        ("flop_utilisation", r"FLOP utilisation\s+(.+)"),
    )}
    return {key: match.group(1).strip() for key, match in found.items() if match}


def table_figures(text: str, out: Path) -> dict:
    """The Markdown table a benchmark printed: each row as {column: cell}."""
    lines = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.splitlines()
             if line.startswith("| ") and "---" not in line]
    header = [name if lines[0].count(name) == 1 else f"{name} {i}" for i, name in enumerate(lines[0])] if lines else []
    return {"rows": [dict(zip(header, row)) for row in lines[1:]]} if lines else {}


def tests_figures(text: str, out: Path) -> dict:
    """pytest's last line: how many passed, failed, were skipped."""
    found = re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", text)
    return {kind: int(count) for count, kind in found}


def streaming_figures(text: str, out: Path) -> dict:
    """streaming.py's summary line: images/s and the share of the epoch spent waiting for data."""
    match = re.search(r"streaming: ([\d,.]+) images/s, waiting for data ([\d.]+) %", text)
    return {"images_per_s": match.group(1), "data_wait_percent": float(match.group(2))} if match else {}


def shown(value) -> str:
    """A figure as the Markdown summary shows it: table rows as "column cell, ..." joined by " / "."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return " / ".join(", ".join(f"{column} {cell}" for column, cell in row.items()) for row in value)
    return str(value)


def profile_figures(text: str, out: Path) -> dict:
    """profile_step.py's wall and busy times per step, and its table of kernels."""
    match = re.search(r"step ([\d.]+) ms wall; device busy ([\d.]+) ms \((\d+) % of the wall\); "
                      r"aten operators dispatched per step: (\d+)", text)
    found = dict(zip(("step_ms", "device_busy_ms", "busy_percent", "operators_per_step"), match.groups())) if match else {}
    return {**found, **table_figures(text, out)}


def pretrain_figures(run: Path):
    def figures(text: str, out: Path) -> dict:
        import csv

        if not (run / "metrics.csv").is_file():
            return {"epochs_done": 0}  # stopped before its first epoch ended
        with (run / "metrics.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        curve = [(int(r["epoch"]), round(float(r["elapsed_s"]) / 60, 2), r["knn_top1"]) for r in rows]
        results = json.loads((run / "results.json").read_text()) if (run / "results.json").is_file() else {}
        return {"epochs_done": len(rows), "knn_curve (epoch, minutes, top-1)": [c for c in curve if c[2]],
                "linear_top1": results.get("linear_top1"), "minutes": round(results.get("seconds", 0) / 60, 2)}
    return figures


def stages(out: Path, smoke: bool, fashion: str) -> list[Stage]:
    """The suite, most wanted first.  ``fashion``: Fashion-MNIST's folder or .npz."""
    byol = [PYTHON, "-m", "byol"]
    seconds, steps, images, stream_batch, batch = (("3", "2", "64", "32", "64") if smoke else
                                                   ("30", "20", "2000", "128", "512"))
    bench = [*byol, "bench", "--arch", "resnet18", "--image-size", "32", "--batch-size", batch, "--seconds", seconds]
    run = out / "fashion-mnist-resnet18"

    def fashion_mnist(summary: dict) -> list[str]:  # with the step the bench found faster
        speeds = {e["name"]: float(e.get("figures", {}).get("images_per_s", "0").replace(",", "") or 0)
                  for e in summary["stages"]}
        faster = ["--compile"] if speeds.get("bench-compiled", 0) > speeds.get("bench-eager", 0) else []
        return [*byol, "pretrain", "--data", fashion, "--arch", "resnet18", "--small-stem", "--hidden-dim", "4096",
                "--batch-size", batch, "--epochs", "1" if smoke else "40", "--knn-every", "1" if smoke else "5",
                "--no-choose-augmentations", *faster, "--out", str(run), "--overwrite"]  # the paper's views

    return [  # caps: what each needs on an H100; the deadline cuts the rest short, most wanted first
        Stage("bench-eager", bench, 60, bench_figures),
        # compiling the step cold took over 2 minutes on an H200 (2026-11-30: cut at 150 s while timing)
        Stage("bench-compiled", [*bench, "--compile"], 240, bench_figures),
        Stage("libraries", [PYTHON, "benchmarks/compare.py", "--image-size", "32", "--batch-size", batch,
                            "--steps", steps, "--warmup", "3"], 90, table_figures),
        Stage("profile-eager", [PYTHON, "benchmarks/profile_step.py", "--image-size", "32", "--batch-size", batch,
                                "--steps", "2" if smoke else "10"], 60, profile_figures),
        # before Fashion-MNIST, which takes all the time left (the first lease never reached them);
        # no plugins from the carried wheels: hydra-core's (lightly's dependency) fails to load at collection
        Stage("gpu-tests", [PYTHON, "-m", "pytest", "-q", "-m", "gpu", "tests"], 60, tests_figures,
              {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}),
        Stage("fashion-mnist-resnet18", fashion_mnist, 240, pretrain_figures(run)),
        Stage("bench-cuda-graphs", [*bench, "--compile", "--compile-mode", "reduce-overhead"], 150, bench_figures),
        Stage("augmentation-engines", [PYTHON, "benchmarks/augment_engines.py", "--batch-size", batch,
                                       "--image-size", "32", "96"], 90, table_figures),
        Stage("streaming-resnet50", [PYTHON, "benchmarks/streaming.py", "--images", images, "--arch", "resnet50",
                                     "--image-size", "64" if smoke else "224", "--batch-size", stream_batch,
                                     "--json", str(out / "streaming.json")], 120, streaming_figures),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="results")
    parser.add_argument("--minutes", type=float, default=8.0, help="the whole suite's deadline")
    parser.add_argument("--smoke", action="store_true", help="every stage at toy size: a check of the suite")
    parser.add_argument("--fashion-mnist", default=".data/fashion-mnist",
                        help="Fashion-MNIST's idx folder (carried to the GPU machine), or an .npz")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    fashion = args.fashion_mnist
    if args.smoke:  # the first 1,024 training and 512 test images
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from common import fashion_mnist_npz

        source = args.fashion_mnist if Path(args.fashion_mnist).is_dir() else None
        fashion = str(fashion_mnist_npz(out / "fashion-mnist-smoke.npz", 1024, 512, source=source))
    summary = run_stages(stages(out, args.smoke, fashion), out, 60 * args.minutes)
    print(markdown(summary))


if __name__ == "__main__":
    main()
