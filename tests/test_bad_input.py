"""Every command, given bad input, says what is wrong and how to fix it in one line on stderr,
exits with status 2, prints no traceback, and writes nothing into the run or data folders."""
import argparse
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from byol.commands.cli import build_parser, main
from conftest import graded_folder, save, write_csv, write_idx


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Path:
    """Data in every shape a case needs, and one finished tiny run."""
    root = tmp_path_factory.mktemp("bad-input")
    rng = np.random.default_rng(0)
    idx = root / "idx"
    idx.mkdir()
    for prefix, n in (("train", 64), ("t10k", 16)):
        write_idx(idx / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 12, 12)))
        write_idx(idx / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 2)
    (root / "empty").mkdir()
    (root / "broken").mkdir()
    (root / "broken" / "a.png").write_bytes(b"")
    (root / "broken" / "b.jpg").write_text("not an image")
    rows = graded_folder(root / "graded")
    write_csv(root / "graded" / "grades.csv", rows)
    write_csv(root / "graded" / "escape.csv", [("../idx/secret.png", 0)])
    write_csv(root / "graded" / "missing.csv", rows[:2] + [("images/nope.png", 1)])
    write_csv(root / "graded" / "strange.csv", rows, header=("picture", "score"))
    write_csv(root / "graded" / "unknown-grade.csv", [("images/000.png", 0), ("images/001.png", 9)])
    for grade in ("none", "mild", "severe"):
        for i in range(4):
            save(root / "named" / grade / f"{i}.png", rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    save(root / "unlabeled" / "x.png", np.zeros((12, 12, 3), np.uint8))
    save(root / "unlabeled" / "y.png", np.zeros((12, 12, 3), np.uint8))
    np.savez(root / "no-train.npz", test_images=np.zeros((2, 8, 8), np.uint8))
    (root / "typo.yaml").write_text("epoch: 3\n")
    (root / "list.yaml").write_text("epochs: [1, 2]\n")
    (root / "method.yaml").write_text("method: moco\n")
    (root / "seconds.yaml").write_text("seconds: soon\n")
    (root / "broken.yaml").write_text("epochs: [1,\n")
    (root / "junk.pth").write_bytes(b"not a state dict")
    (root / "junk.safetensors").write_bytes(b"not safetensors either")
    (root / "a-file").write_text("a file, not a folder")
    (root / "bad-subset.csv").write_text("what,ever\n1,2\n")
    run = root / "run"
    assert main(["pretrain", "--data", str(idx), "--out", str(run), "--epochs", "2", "--batch-size", "16",
                 "--hidden-dim", "16", "--knn-k", "5", "--device", "cpu"]) == 0
    damaged = root / "damaged"
    assert main(["pretrain", "--data", str(idx), "--out", str(damaged), "--epochs", "2", "--stop-after", "1",
                 "--batch-size", "16", "--hidden-dim", "16", "--knn-k", "5", "--device", "cpu"]) == 0
    for name in ("last.pt", "previous.pt"):
        (damaged / "checkpoints" / name).write_bytes(b"overwritten")
    return root


TINY = ["--epochs", "1", "--batch-size", "16", "--hidden-dim", "16", "--device", "cpu"]

# (command line with {p} for the prepared folder, fragments the one error line must hold)
CASES = {
    # pretrain: data
    "no such data": (["pretrain", "--data", "{p}/nothing", *TINY], ["{p}/nothing", "no such file or folder"]),
    "empty folder": (["pretrain", "--data", "{p}/empty", *TINY], ["no image files found"]),
    "only unreadable files": (["pretrain", "--data", "{p}/broken", *TINY], ["no readable images", "a.png"]),
    "CSV escaping its folder": (["pretrain", "--data", "{p}/graded/escape.csv", *TINY], ["points outside", "keep the images"]),
    "CSV without an image column": (["pretrain", "--data", "{p}/graded/strange.csv", *TINY],
                                    ["no image column", "picture, score", "--image-column"]),
    "CSV naming a missing file": (["pretrain", "--data", "{p}/graded/missing.csv", *TINY], ["nope.png", "--images"]),
    "CSV column that is not there": (["pretrain", "--data", "{p}/graded/grades.csv", "--label-column", "grade", *TINY],
                                     ["no column 'grade'", "--label-column", "image, label"]),
    "images folder that is not there": (["pretrain", "--data", "{p}/graded/grades.csv", "--images", "{p}/nope", *TINY],
                                        ["--images", "no such folder"]),
    "npz without train images": (["pretrain", "--data", "{p}/no-train.npz", *TINY], ["no 'train_images'"]),
    "unknown format": (["pretrain", "--data", "{p}/idx", "--dataset", "imagenet", *TINY], ["--dataset", "one of"]),
    "unlabeled source missing": (["pretrain", "--data", "{p}/idx", "--unlabeled", "{p}/nothing", *TINY],
                                 ["{p}/nothing", "no such file"]),
    "mean of the wrong length": (["pretrain", "--data", "{p}/idx", "--mean", "0.5,0.5,0.5", *TINY], ["--mean", "need 1 value"]),
    "batch larger than the data": (["pretrain", "--data", "{p}/idx", "--batch-size", "1000", "--epochs", "1",
                                    "--device", "cpu"], ["--batch-size 1000", "larger than the dataset"]),
    # pretrain: settings
    "YAML typo": (["pretrain", "--config", "{p}/typo.yaml"], ["unknown setting 'epoch'", "--help"]),
    "YAML list for a number": (["pretrain", "--config", "{p}/list.yaml"], ["epochs in {p}/list.yaml expects int", "[1, 2]"]),
    "YAML list for a number, overridden by a flag": (["pretrain", "--config", "{p}/list.yaml", "--epochs", "3"],
                                                     ["epochs in {p}/list.yaml expects int", "[1, 2]"]),
    "YAML choice unknown, overridden by a flag": (["pretrain", "--config", "{p}/method.yaml", "--method", "byol"],
                                                  ["method in {p}/method.yaml must be one of", "moco"]),
    "YAML typo for another command": (["compare", "--init", "random", "--config", "{p}/typo.yaml"],
                                      ["unknown setting 'epoch' in {p}/typo.yaml"]),
    "YAML bad value for bench": (["bench", "--config", "{p}/seconds.yaml"], ["seconds in {p}/seconds.yaml expects float"]),
    "YAML that does not parse": (["pretrain", "--config", "{p}/broken.yaml"], ["not valid YAML"]),
    "missing YAML": (["pretrain", "--config", "{p}/nothing.yaml"], ["config file", "not found"]),
    "batch 0": (["pretrain", "--batch-size", "0"], ["--batch-size must be at least 2"]),
    "epochs 0": (["pretrain", "--epochs", "0"], ["--epochs must be at least 1"]),
    "epochs not a number": (["pretrain", "--epochs", "ten"], ["--epochs expects int", "ten"]),
    "image size 3": (["pretrain", "--image-size", "3"], ["--image-size must be at least 8"]),
    "learning rate NaN": (["pretrain", "--base-lr", "nan"], ["--base-lr must be a positive number"]),
    "predictor rate negative": (["pretrain", "--predictor-lr", "-1"], ["--predictor-lr must be a positive number"]),
    "unknown optimizer": (["pretrain", "--optimizer", "rmsprop"], ["--optimizer must be one of", "lars"]),
    "unknown method": (["pretrain", "--method", "moco"], ["--method must be one of", "byol, simclr"]),
    "unknown compile mode": (["pretrain", "--compile", "--compile-mode", "fast"],
                             ["--compile-mode must be one of", "reduce-overhead"]),
    "compile mode without compile": (["bench", "--compile-mode", "reduce-overhead"],
                                     ["--compile-mode", "add --compile"]),
    "BYOL ablation on SimCLR": (["pretrain", "--method", "simclr", "--target-momentum", "0.5"], ["--target-momentum"]),
    "checkpoint interval gibberish": (["pretrain", "--checkpoint-every", "soon"], ["--checkpoint-every", "30m"]),
    "time budget gibberish": (["pretrain", "--time-budget", "soon"], ["--time-budget", "15m"]),
    "time budget and epochs": (["pretrain", "--time-budget", "5m", "--epochs", "3"], ["--time-budget", "not both"]),
    "a held-out split of data that has a test split": (["pretrain", "--data", "{p}/idx", "--test-fraction", "0.2",
                                                        *TINY], ["--test-fraction", "test split of its own"]),
    "DICOM window of one number": (["pretrain", "--window", "40"], ["--window", "CENTRE,WIDTH"]),
    "unknown flag": (["pretrain", "--no-such-flag"], ["unrecognized arguments", "--no-such-flag"]),
    "unknown architecture": (["pretrain", "--data", "{p}/idx", "--arch", "resnet999", *TINY[:-4], "--device", "cpu"],
                             ["--arch", "resnet999"]),
    "no GPU": (["pretrain", "--device", "cuda"], ["--device", "no CUDA GPU", "cpu"]),
    # pretrain: run directories
    "resume with no run": (["pretrain", "--out", "{p}/no-run", "--resume"], ["no checkpoint", "without it"]),
    "resume changing a setting": (["pretrain", "--out", "{p}/run", "--resume", "--epochs", "5"],
                                  ["differ from its config.yaml: epochs", "--out"]),
    "resume with damaged checkpoints": (["pretrain", "--out", "{p}/damaged", "--resume"], ["no readable checkpoint"]),
    "run directory not empty": (["pretrain", "--data", "{p}/idx", "--out", "{p}/run", *TINY],
                                ["not empty", "--resume", "--overwrite"]),
    "run directory under a file": (["pretrain", "--data", "{p}/idx", "--out", "{p}/a-file/run", *TINY],
                                   ["cannot create it", "choose another place"]),
    "run directory the system refuses": (["pretrain", "--data", "{p}/idx", "--out", "/proc/nope", *TINY],
                                         ["--out /proc/nope: cannot create it", "choose another place"]),
    "init-from missing": (["pretrain", "--data", "{p}/idx", "--init-from", "{p}/nothing.safetensors", *TINY],
                          ["--init-from", "no weights file"]),
    "init-from not weights": (["pretrain", "--data", "{p}/idx", "--init-from", "{p}/junk.safetensors", *TINY],
                              ["--init-from", "not a weights file"]),
    "resume and init-from": (["pretrain", "--resume", "--init-from", "x.safetensors"], ["--init-from", "--resume"]),
    # eval / finetune / compare
    "eval without weights": (["eval", "knn", "--init", "{p}/nothing", "--data", "{p}/idx"], ["no weights file"]),
    "eval of junk weights": (["eval", "linear", "--init", "{p}/junk.pth", "--data", "{p}/idx"], ["not a weights file"]),
    "eval protocol unknown": (["eval", "svm", "--init", "random"], ["invalid choice", "svm"]),
    "label fraction 2": (["eval", "knn", "--init", "random", "--data", "{p}/idx", "--label-fraction", "2"],
                         ["--label-fraction", "(0, 1]"]),
    "eval on unlabeled images": (["eval", "knn", "--init", "random", "--data", "{p}/unlabeled"], ["has no labels"]),
    "unknown selection metric": (["eval", "linear", "--init", "random", "--metric", "auc"], ["--metric must be one of"]),
    "subset file from elsewhere": (["eval", "knn", "--init", "random", "--data", "{p}/idx", "--subset", "{p}/bad-subset.csv"],
                                   ["--subset", "not a subset file"]),
    "test labels never trained on": (["eval", "knn", "--init", "random", "--data", "{p}/graded/grades.csv",
                                      "--test-data", "{p}/graded/unknown-grade.csv"], ["labels [9] never occur"]),
    "fine-tuning for 0 epochs": (["finetune", "--init", "random", "--epochs", "0"], ["--epochs must be at least 1"]),
    "kappa on grade names without their order": (["compare", "--init", "random", "--data", "{p}/named", "--ordinal"],
                                                  ["--ordinal", "mild, none, severe", "--grades"]),
    "grades that are not the classes": (["compare", "--init", "random", "--data", "{p}/named", "--ordinal",
                                         "--grades", "none,mild,bad"], ["--grades", "must name every class once"]),
    "balance with k-NN alone": (["compare", "--init", "random", "--protocols", "knn", "--balance", "loss"],
                                ["--balance", "k-NN"]),
    "unknown balancing": (["finetune", "--init", "random", "--balance", "weird"], ["--balance must be one of"]),
    "compare with one missing encoder": (["compare", "--init", "random", "--init", "{p}/nothing.safetensors",
                                          "--data", "{p}/idx", "--out", "{p}/cmp"], ["no weights file"]),
    "compare with an unknown protocol": (["compare", "--init", "random", "--protocols", "svm"], ["--protocols", "svm"]),
    "compare without encoders": (["compare", "--data", "{p}/idx"], ["--init", "at least one"]),
    # embed, report, bench
    "embed to a non-npy file": (["embed", "--init", "random", "--out", "{p}/f.parquet"], ["--out", ".npy"]),
    "embed without an output": (["embed", "--init", "random"], ["required", "--out"]),
    "embed missing data": (["embed", "--init", "random", "--data", "{p}/nothing", "--out", "{p}/f.npy"], ["no such file"]),
    "report on a folder that is no run": (["report", "{p}/empty"], ["is not a byol run directory"]),
    "report with negative maps": (["report", "{p}/run", "--map-images", "-1"], ["--map-images must be >= 0"]),
    "bench with no time": (["bench", "--seconds", "0", "--device", "cpu"], ["--seconds must be positive"]),
    "bench on no GPU": (["bench", "--device", "cuda"], ["no CUDA GPU"]),
    # views, export
    "views of missing data": (["views", "--data", "{p}/nothing", "--out", "{p}/v.png"], ["{p}/nothing", "no such file"]),
    "views with no rows": (["views", "--data", "{p}/idx", "--rows", "0", "--out", "{p}/v.png"], ["--rows must be at least 1"]),
    "views to a non-PNG file": (["views", "--data", "{p}/idx", "--out", "{p}/v.txt"], ["--out", ".png"]),
    "export in an unknown format": (["export", "{p}/run", "--format", "keras", "--out", "{p}/e.h5"],
                                    ["--format must be one of", "onnx"]),
    "export a format the net cannot take": (["export", "{p}/run", "--format", "torchvision", "--out", "{p}/e.pth"],
                                            ["not a torchvision model", "torchscript or onnx"]),
    "export of a folder that is no run": (["export", "{p}/empty", "--format", "onnx", "--out", "{p}/e.onnx"],
                                          ["no encoder file", "run directory"]),
    "export without an output": (["export", "{p}/run", "--format", "onnx"], ["--out is required"]),
}


def snapshot(root: Path) -> dict:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_clear_line_exit_2_and_writes_nothing(name, place, capsys, monkeypatch, tmp_path):
    args, fragments = CASES[name]
    args = [a.replace("{p}", str(place)) for a in args]
    monkeypatch.chdir(tmp_path)  # the default run directory would appear here
    before = snapshot(place)
    capsys.readouterr()
    try:
        status = main(args)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment.replace("{p}", str(place)) in lines[0], lines[0]
    assert snapshot(place) == before  # nothing written into the data or run folders
    assert list(tmp_path.iterdir()) == []


def test_the_sweep_covers_every_command_with_forty_cases():
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert {args[0] for args, _ in CASES.values()} == set(subparsers.choices)  # a new command needs its cases
    assert len(CASES) >= 40
