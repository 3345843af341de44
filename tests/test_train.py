import csv
import json

import pytest
import torch
import yaml

from byol import load_encoder, pretrain, resolve_config
from byol.config import UserError


def tiny_config(data, out, **overrides):
    values = dict(data=str(data), out=str(out), epochs=2, batch_size=32, hidden_dim=32, projection_dim=16,
                  knn_every=1, knn_k=20, log_every=5, warmup_epochs=0.5)
    values.update(overrides)
    return resolve_config(overrides=values)


def test_run_directory_has_everything_it_promises(tiny_idx, tmp_path):
    run = tmp_path / "run"
    results = pretrain(tiny_config(tiny_idx, run))
    for name in ("config.yaml", "metrics.csv", "checkpoints/last.pt", "encoder.safetensors", "results.json"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(r["knn_top1"] for r in rows) and float(rows[-1]["target_momentum"]) > 0.99
    assert yaml.safe_load((run / "config.yaml").read_text())["batch_size"] == 32
    saved = json.loads((run / "results.json").read_text())
    assert saved["knn_top1"] == results["knn_top1"] and 0 <= saved["linear_top1"] <= 1
    encoder = load_encoder(run / "encoder.safetensors")
    assert encoder(torch.zeros(2, 1, 16, 16)).shape == (2, 256)
    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert checkpoint["epoch"] == 2 and checkpoint["step"] == 2 * (320 // 32)


def test_stopped_and_resumed_run_reaches_the_same_weights(tiny_idx, tmp_path):
    torch.use_deterministic_algorithms(True)
    try:
        pretrain(tiny_config(tiny_idx, tmp_path / "straight", epochs=3, linear_probe=False))
        assert pretrain(tiny_config(tiny_idx, tmp_path / "stopped", epochs=3, stop_after=1, linear_probe=False)) == {}
        middle = torch.load(tmp_path / "stopped" / "checkpoints" / "last.pt", weights_only=False)
        assert middle["epoch"] == 1
        pretrain(resolve_config(overrides={"out": str(tmp_path / "stopped"), "resume": True}),
                 given_options={"out", "resume"})
    finally:
        torch.use_deterministic_algorithms(False)
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=False)
    resumed = torch.load(tmp_path / "stopped" / "checkpoints" / "last.pt", weights_only=False)
    assert resumed["step"] == straight["step"]
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    assert set(resumed) == {"model", "optimizer", "epoch", "step", "config"}  # nothing rank-specific
    rows = list(csv.DictReader((tmp_path / "stopped" / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]


def test_resume_refuses_changed_settings(tiny_idx, tmp_path):
    pretrain(tiny_config(tiny_idx, tmp_path / "run", epochs=2, stop_after=1, linear_probe=False))
    config = resolve_config(overrides={"out": str(tmp_path / "run"), "resume": True, "epochs": 5})
    with pytest.raises(UserError, match="epochs"):
        pretrain(config, given_options={"out", "resume", "epochs"})


def test_refuses_to_overwrite_a_run(tiny_idx, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="not empty"):
        pretrain(tiny_config(tiny_idx, run))
    assert (run / "precious.txt").read_text() == "keep me"


def test_init_from_loads_the_encoder_into_a_new_run(tiny_idx, tmp_path):
    pretrain(tiny_config(tiny_idx, tmp_path / "first", epochs=1, linear_probe=False))
    weights = tmp_path / "first" / "encoder.safetensors"
    from byol.train import build_model

    model = build_model(tiny_config(tiny_idx, tmp_path / "second", init_from=str(weights)), 1, 16)
    reference = load_encoder(weights)
    for name, value in reference.state_dict().items():
        assert torch.equal(model.online_encoder.state_dict()[name], value)
        assert torch.equal(model.target_encoder.state_dict()[name], value)
    with pytest.raises(UserError, match="match --arch"):
        build_model(tiny_config(tiny_idx, tmp_path / "third", init_from=str(weights), arch="resnet18"), 1, 16)


def test_streamed_run_trains_exactly_like_in_memory(tmp_path):
    from test_data import small_class_folder

    root = small_class_folder(tmp_path / "folder", n_per_class=12, side=16)
    results = []
    for stream in (False, True):
        config = resolve_config(overrides=dict(data=str(root), out=str(tmp_path / f"run-{stream}"), stream=stream,
                                               epochs=1, batch_size=12, hidden_dim=16, projection_dim=8, knn_k=5,
                                               linear_probe=False, image_size=16))
        results.append(pretrain(config))
    runs = [torch.load(tmp_path / f"run-{s}" / "checkpoints" / "last.pt", weights_only=False) for s in (False, True)]
    for name, value in runs[0]["model"].items():
        assert torch.equal(value, runs[1]["model"][name]), name
    assert results[0]["knn_top1"] == results[1]["knn_top1"]


def test_given_mean_and_std_are_used_and_checked(tiny_idx, tmp_path):
    from byol.data import load_dataset
    from byol.train import normalisation

    dataset = load_dataset(tiny_idx)
    mean, std = normalisation(tiny_config(tiny_idx, tmp_path / "a", mean="0.25", std="0.5"), dataset, 1)
    assert mean.tolist() == [0.25] and std.tolist() == [0.5]
    computed = normalisation(tiny_config(tiny_idx, tmp_path / "b"), dataset, 1)
    assert torch.allclose(computed[0], dataset.channel_stats()[0])
    with pytest.raises(UserError, match="need 1 value"):
        normalisation(tiny_config(tiny_idx, tmp_path / "c", mean="0.5,0.5,0.5"), dataset, 1)
    with pytest.raises(UserError, match="comma-separated"):
        normalisation(tiny_config(tiny_idx, tmp_path / "d", std="wide"), dataset, 1)


def test_collapse_is_logged_every_epoch_and_warned_about(tiny_idx, tmp_path, capsys, monkeypatch):
    pretrain(tiny_config(tiny_idx, tmp_path / "healthy", epochs=2, linear_probe=False))
    rows = list(csv.DictReader((tmp_path / "healthy" / "metrics.csv").open()))
    assert all(0.2 * 16 ** -0.5 < float(r["collapse_std"]) < 1 for r in rows) and len(rows) == 2
    assert "collapsing" not in capsys.readouterr().err
    import byol.train

    monkeypatch.setattr(byol.train, "projection_spread", lambda model, views: 0.0)  # as a collapsed encoder gives
    pretrain(tiny_config(tiny_idx, tmp_path / "collapsed", epochs=1, linear_probe=False))
    assert "the representation is collapsing" in capsys.readouterr().err
