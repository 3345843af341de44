import subprocess
import sys

import pytest

from byol import data
from byol.cli import main


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "byol", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_tiny_cli_run_end_to_end(tiny_idx, tmp_path):
    run = tmp_path / "cli-run"
    result = run_cli("pretrain", "--data", str(tiny_idx), "--out", str(run), "--epochs", "1", "--batch-size", "32",
                     "--hidden-dim", "32", "--knn-k", "10")
    assert result.returncode == 0, result.stderr
    assert "linear-probe top-1" in result.stdout and "k-NN top-1" in result.stdout
    for name in ("config.yaml", "metrics.csv", "checkpoints/last.pt", "encoder.safetensors", "results.json"):
        assert (run / name).is_file(), name


@pytest.mark.parametrize("args, fragments", [
    (["pretrain", "--epochs", "ten"], ["epochs", "int"]),
    (["pretrain", "--batch-size", "1"], ["batch-size"]),
    (["pretrain", "--optimizer", "rmsprop"], ["optimizer"]),
    (["pretrain", "--no-such-flag"], ["unrecognized", "--no-such-flag"]),
    (["pretrain", "--data", "/nonexistent/folder"], ["/nonexistent/folder"]),
    (["pretrain", "--config", "/nonexistent.yaml"], ["config file"]),
    (["pretrain", "--resume", "--init-from", "x.safetensors"], ["--resume", "--init-from"]),
    (["launch"], ["invalid choice"]),
])
def test_bad_arguments_give_one_line_and_exit_2(args, fragments, tmp_path):
    assert_one_line_error(run_cli(*args, cwd=tmp_path), *fragments)
    assert not (tmp_path / "runs").exists()  # nothing written for a run that never started


def test_bad_yaml_and_unknown_setting(tmp_path):
    (tmp_path / "bad.yaml").write_text("epochs: [1,\n")
    assert_one_line_error(run_cli("pretrain", "--config", str(tmp_path / "bad.yaml")), "not valid YAML")
    (tmp_path / "typo.yaml").write_text("epoch: 3\n")
    assert_one_line_error(run_cli("pretrain", "--config", str(tmp_path / "typo.yaml")), "unknown setting 'epoch'")


def test_missing_default_dataset_says_how_to_get_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "missing")
    assert main(["pretrain", "--out", str(tmp_path / "run")]) == 2
    message = capsys.readouterr().err.strip()
    assert "apt-get install dataset-fashion-mnist" in message and "--data" in message and "\n" not in message


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    assert_one_line_error(run_cli("pretrain", "--out", str(tmp_path / "empty"), "--resume"), "no checkpoint")


def test_shipped_configs_resolve():
    from pathlib import Path

    from byol import resolve_config

    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        config = resolve_config(path)
        assert config.arch in ("resnet18", "resnet50") and config.optimizer == "lars", path
