import pytest

from byol import data
from byol.commands.cli import main
from conftest import assert_one_line_error, run_cli


@pytest.mark.slow
def test_tiny_cli_run_end_to_end(tiny_idx, tmp_path):
    run = tmp_path / "cli-run"
    result = run_cli("pretrain", "--data", str(tiny_idx), "--out", str(run), "--epochs", "1", "--batch-size", "32",
                     "--hidden-dim", "32", "--knn-k", "10")
    assert result.returncode == 0, result.stderr
    assert "linear-probe top-1" in result.stdout and "k-NN top-1" in result.stdout
    for name in ("config.yaml", "metrics.csv", "checkpoints/last.pt", "encoder.safetensors", "results.json"):
        assert (run / name).is_file(), name


@pytest.mark.slow
@pytest.mark.parametrize("args, fragments", [
    (["pretrain", "--epochs", "ten"], ["epochs", "int"]),
    (["pretrain", "--batch-size", "1"], ["batch-size"]),
    (["pretrain", "--optimizer", "rmsprop"], ["optimizer"]),
    (["pretrain", "--no-such-flag"], ["unrecognized", "--no-such-flag"]),
    (["pretrain", "--data", "/nonexistent/folder"], ["/nonexistent/folder"]),
    (["pretrain", "--config", "/nonexistent.yaml"], ["config file"]),
    (["pretrain", "--resume", "--init-from", "x.safetensors"], ["--resume", "--init-from"]),
    (["compare", "--protocols", "svm", "--init", "random"], ["--protocols", "svm"]),
    (["launch"], ["invalid choice"]),
])
def test_bad_arguments_give_one_line_and_exit_2(args, fragments, tmp_path):
    assert_one_line_error(run_cli(*args, cwd=tmp_path), *fragments)
    assert not (tmp_path / "runs").exists()  # nothing written for a run that never started


@pytest.mark.slow
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


@pytest.mark.slow
def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    assert_one_line_error(run_cli("pretrain", "--out", str(tmp_path / "empty"), "--resume"), "no checkpoint")
    # killed before its config.yaml was saved: a new run without --resume would refuse the folder, so say --overwrite
    (tmp_path / "begun" / "checkpoints").mkdir(parents=True)
    assert_one_line_error(run_cli("pretrain", "--out", str(tmp_path / "begun"), "--resume"),
                          "holds no checkpoint and no config.yaml (it stopped before either was saved); start it "
                          "again with --overwrite")


def test_eval_commands_score_a_run_and_random_init(tiny_idx, tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", "--data", str(tiny_idx), "--out", str(run), "--epochs", "1", "--batch-size", "32",
                 "--hidden-dim", "32", "--knn-k", "10", "--no-linear-probe"]) == 0
    for init in (f"byol:{run}", str(run / "encoder.safetensors"), "random"):
        out = tmp_path / f"eval-{init[-6:]}"
        assert main(["eval", "knn", "--init", init, "--data", str(tiny_idx), "--out", str(out), "--knn-k", "10"]) == 0
        text = (out / "eval-knn.md").read_text()
        assert "Confusion matrix" in text and "balanced_accuracy" in (out / "eval-knn.csv").read_text()
    assert main(["eval", "linear", "--init", "random", "--data", str(tiny_idx), "--out", str(tmp_path / "lin")]) == 0
    assert "macro_f1" in (tmp_path / "lin" / "eval-linear.csv").read_text()


def test_eval_loads_a_torchvision_state_dict_for_gray_images(tmp_path):
    import torch
    import torchvision

    from byol.base.errors import UserError
    from byol.models.weights import load_weights

    reference = torchvision.models.resnet18().state_dict()
    torch.save(reference, tmp_path / "resnet18.pth")  # as a user's own downloaded weights file would be
    encoder = load_weights(str(tmp_path / "resnet18.pth"), "resnet18", in_channels=1, image_size=224)
    assert torch.equal(encoder.conv1.weight, reference["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(encoder.layer4[1].conv2.weight, reference["layer4.1.conv2.weight"])
    with pytest.raises(UserError, match="does not fit arch resnet50"):
        load_weights(str(tmp_path / "resnet18.pth"), "resnet50", in_channels=3, image_size=224)


@pytest.mark.slow
def test_eval_errors_are_one_line(tiny_idx, tmp_path):
    assert_one_line_error(run_cli("eval", "knn", "--init", str(tmp_path / "nothing"), "--data", str(tiny_idx)),
                          "no weights file")
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    assert_one_line_error(run_cli("eval", "linear", "--init", str(tmp_path / "junk.pth"), "--data", str(tiny_idx)),
                          "not a weights file")
    assert_one_line_error(run_cli("eval", "svm", "--init", "random"), "invalid choice")


@pytest.mark.parametrize("command", ["pretrain", "eval", "finetune", "compare", "bench", "embed", "report"])
def test_every_command_prints_its_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--help" in capsys.readouterr().out
