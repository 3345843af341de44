import csv
import json

import numpy as np
import pytest
import torch
import torchvision
import yaml

from byol import PretrainConfig, load_encoder, pretrain
from byol.base.errors import UserError
from conftest import labelled_csv, save, small_class_folder, tiny_settings, write_csv


def test_run_directory_has_everything_it_promises(tiny_idx, tmp_path):
    run = tmp_path / "run"
    result = pretrain(**tiny_settings(tiny_idx, run))
    for name in ("config.yaml", "metrics.csv", "checkpoints/last.pt", "checkpoints/previous.pt",
                 "encoder.safetensors", "results.json"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [r["epoch"] for r in result.metrics] == [1, 2]
    assert [float(r["loss"]) for r in rows] == [r["loss"] for r in result.metrics]
    assert all(r["knn_top1"] for r in rows) and float(rows[-1]["target_momentum"]) > 0.99
    assert yaml.safe_load((run / "config.yaml").read_text())["batch_size"] == 32
    saved = json.loads((run / "results.json").read_text())
    assert saved == result.results and 0 <= saved["linear_top1"] <= 1 and result.run_dir == run
    encoder = load_encoder(run / "encoder.safetensors")
    x = torch.randn(2, 1, 16, 16)
    assert torch.allclose(encoder.eval()(x), result.encoder.eval()(x), atol=1e-5) and encoder(x).shape == (2, 256)
    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert checkpoint["epoch"] == 2 and checkpoint["step"] == 2 * (320 // 32)


@pytest.mark.slow
def test_stopped_and_resumed_run_reaches_the_same_weights(tiny_idx, tmp_path):
    torch.use_deterministic_algorithms(True)
    try:
        pretrain(**tiny_settings(tiny_idx, tmp_path / "straight", epochs=3, linear_probe=False))
        stopped = pretrain(**tiny_settings(tiny_idx, tmp_path / "stopped", epochs=3, stop_after=1, linear_probe=False))
        assert stopped.encoder is None and stopped.results == {}
        middle = torch.load(tmp_path / "stopped" / "checkpoints" / "last.pt", weights_only=False)
        assert middle["epoch"] == 1
        pretrain(out=str(tmp_path / "stopped"), resume=True)
    finally:
        torch.use_deterministic_algorithms(False)
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=False)
    resumed = torch.load(tmp_path / "stopped" / "checkpoints" / "last.pt", weights_only=False)
    assert resumed["step"] == straight["step"]
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    assert set(resumed) == {"model", "optimizer", "epoch", "step", "row", "meter", "config"}  # nothing rank-specific
    rows = list(csv.DictReader((tmp_path / "stopped" / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]


def test_resume_refuses_changed_settings(tiny_idx, tmp_path):
    pretrain(**tiny_settings(tiny_idx, tmp_path / "run", epochs=2, stop_after=1, linear_probe=False))
    with pytest.raises(UserError, match="epochs"):
        pretrain(out=str(tmp_path / "run"), resume=True, epochs=5)


def test_a_run_saved_before_bias_norm_lr_existed_resumes_with_its_biases_at_base_lr(tiny_idx, tmp_path):
    """Runs saved before ``bias_norm_lr`` stepped biases and BatchNorm at ``base_lr``; resumed, they
    still do, and say so: their saved ``base_lr`` is a setting of the run, not the rules' preset
    rate, so the paper's 0.2 a new run gets beneath it is not derived."""
    run = tmp_path / "run"
    pretrain(**tiny_settings(tiny_idx, run, epochs=2, stop_after=1, linear_probe=False))
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["base_lr"], saved["bias_norm_lr"]) == (4.0, 0.2)  # a new run's rates differ
    del saved["bias_norm_lr"]  # as a run saved before the option existed
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    for path in (run / "checkpoints").glob("*.pt"):
        checkpoint = torch.load(path, weights_only=False)
        for group in checkpoint["optimizer"]["param_groups"]:
            group.pop("scale", None)
        checkpoint["config"].pop("bias_norm_lr")
        torch.save(checkpoint, path)
    result = pretrain(out=str(run), resume=True)
    assert result.config.bias_norm_lr == result.config.base_lr == 4.0
    groups = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["optimizer"]["param_groups"]
    assert groups[1]["lr"] == groups[0]["lr"] > 0


def test_a_run_saved_before_predictor_lr_existed_resumes_with_its_predictor_at_base_lr(tiny_idx, tmp_path):
    """Such a run kept the predictor's weights in the first optimizer group, at ``base_lr``; resumed,
    it still does — the 10 × a new run derives would need a third group its checkpoint lacks."""
    run = tmp_path / "run"
    pretrain(**tiny_settings(tiny_idx, run, epochs=2, stop_after=1, linear_probe=False))
    assert yaml.safe_load((run / "config.yaml").read_text())["predictor_lr"] == 40.0  # a new run's
    run.rename(tmp_path / "new")
    pretrain(**tiny_settings(tiny_idx, run, epochs=2, stop_after=1, linear_probe=False, predictor_lr=4.0))
    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["predictor_lr"]  # as a run saved before the option existed: two groups, the predictor at 4.0
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    for path in (run / "checkpoints").glob("*.pt"):
        checkpoint = torch.load(path, weights_only=False)
        assert len(checkpoint["optimizer"]["param_groups"]) == 2
        checkpoint["config"].pop("predictor_lr")
        torch.save(checkpoint, path)
    result = pretrain(out=str(run), resume=True)
    assert result.config.predictor_lr == result.config.base_lr == 4.0
    assert len(torch.load(run / "checkpoints" / "last.pt", weights_only=False)["optimizer"]["param_groups"]) == 2


def test_refuses_to_overwrite_a_run(tiny_idx, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="not empty"):
        pretrain(**tiny_settings(tiny_idx, run))
    assert (run / "precious.txt").read_text() == "keep me"


def test_init_from_loads_the_encoder_into_a_new_run(tiny_idx, tmp_path):
    pretrain(**tiny_settings(tiny_idx, tmp_path / "first", epochs=1, linear_probe=False))
    weights = tmp_path / "first" / "encoder.safetensors"
    from byol.training.step import build_model

    config = PretrainConfig.create(**tiny_settings(tiny_idx, tmp_path / "second", init_from=str(weights),
                                                  arch="narrow_resnet"))
    model = build_model(config, 1, 16)
    reference = load_encoder(weights)
    for name, value in reference.state_dict().items():
        assert torch.equal(model.online_encoder.state_dict()[name], value)
        assert torch.equal(model.target_encoder.state_dict()[name], value)
    with pytest.raises(UserError, match="match arch"):
        build_model(config.replace(arch="resnet18"), 1, 16)


def test_streamed_run_trains_exactly_like_in_memory(tmp_path):
    root = small_class_folder(tmp_path / "folder", n_per_class=12, side=16)
    results = []
    for stream in (False, True):
        results.append(pretrain(root, out=str(tmp_path / f"run-{stream}"), stream=stream, epochs=1, batch_size=12,
                                hidden_dim=16, projection_dim=8, knn_k=5, linear_probe=False, image_size=16).results)
    runs = [torch.load(tmp_path / f"run-{s}" / "checkpoints" / "last.pt", weights_only=False) for s in (False, True)]
    for name, value in runs[0]["model"].items():
        assert torch.equal(value, runs[1]["model"][name]), name
    assert results[0]["knn_top1"] == results[1]["knn_top1"]


def test_given_mean_and_std_are_used_and_checked(tiny_idx):
    from byol.data import load_dataset

    dataset = load_dataset(tiny_idx)
    mean, std = dataset.normalisation((0.25,), (0.5,))
    assert mean.tolist() == [0.25] and std.tolist() == [0.5]
    assert torch.allclose(dataset.normalisation()[0], dataset.channel_stats()[0])
    with pytest.raises(UserError, match="need 1 value"):
        dataset.normalisation(mean=(0.5, 0.5, 0.5))
    with pytest.raises(UserError, match="std"):
        PretrainConfig(std=(0.5, 0.0))
    with pytest.raises(UserError, match="expects a list of float"):
        PretrainConfig(std="wide")


def test_collapse_is_logged_every_epoch_and_warned_about(tiny_idx, tmp_path, capsys, monkeypatch):
    pretrain(**tiny_settings(tiny_idx, tmp_path / "healthy", epochs=2, linear_probe=False))
    rows = list(csv.DictReader((tmp_path / "healthy" / "metrics.csv").open()))
    assert all(0.2 * 16 ** -0.5 < float(r["collapse_std"]) < 1 for r in rows) and len(rows) == 2
    assert "collapsing" not in capsys.readouterr().err
    import byol.training.loop

    monkeypatch.setattr(byol.training.loop, "projection_spread", lambda model, views: 0.0)  # as a collapsed encoder gives
    pretrain(**tiny_settings(tiny_idx, tmp_path / "collapsed", epochs=3, warmup_epochs=1.5, linear_probe=False))
    err = capsys.readouterr().err  # in the warm-up a low spread is the untrained network's, not a collapse
    assert "epoch 1: the representation" not in err and "epoch 2: the representation is collapsing" in err
    assert "epoch 3: the representation is collapsing" in err
    pretrain(**tiny_settings(tiny_idx, tmp_path / "short-warm-up", epochs=2, warmup_epochs=0.5, linear_probe=False))
    err = capsys.readouterr().err  # a warm-up shorter than an epoch: still not at the first epoch
    assert "epoch 1: the representation" not in err and "epoch 2: the representation is collapsing" in err


def test_images_from_python_pretrain_and_resume_only_from_python(tmp_path):
    images = torch.randint(0, 256, (64, 12, 12, 3), dtype=torch.uint8)  # channels last, as numpy users hold them
    labels = torch.arange(64) % 2
    run = pretrain((images, labels), out=str(tmp_path / "run"), epochs=2, stop_after=1, batch_size=16,
                   hidden_dim=16, projection_dim=8, knn_k=5)
    assert run.config.data == "python:arrays" and run.encoder is None
    with pytest.raises(UserError, match="resume it from Python"):
        pretrain(out=str(tmp_path / "run"), resume=True)
    finished = pretrain((images, labels), out=str(tmp_path / "run"), resume=True)
    assert finished.encoder(torch.zeros(2, 3, 12, 12)).shape == (2, 256)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tiff", "dicom"])
def test_four_band_tiffs_and_dicom_folders_pretrain_and_embed(tmp_path, kind):
    import numpy as np

    from byol import embed
    from conftest import write_dicom

    rng = np.random.default_rng(0)
    folder = tmp_path / kind
    folder.mkdir()
    for i in range(32):
        if kind == "tiff":
            import tifffile

            tifffile.imwrite(folder / f"{i}.tif", rng.integers(0, 65535, (16, 16, 4), dtype=np.uint16))
        else:
            write_dicom(folder / f"{i}.dcm", rng.integers(0, 4095, (16, 16)), intercept=-1024.0, window=(40.0, 400.0))
    run = pretrain(folder, out=str(tmp_path / "run"), epochs=1, batch_size=16, hidden_dim=16, projection_dim=8)
    channels = 4 if kind == "tiff" else 1
    assert run.encoder.encoder_config["in_channels"] == channels and len(run.config.mean) == channels
    features, rows = embed(run, folder)
    assert features.shape == (32, run.encoder.num_features) and rows[0][1].endswith((".tif", ".dcm"))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["efficientnet_b0", "timm:convnext_atto", "timm:vit_tiny_patch16_224"])
def test_torchvision_and_timm_backbones_pretrain(tiny_idx, tmp_path, arch):
    image_size = 16 if "vit" in arch else 32
    run = pretrain(**tiny_settings(tiny_idx, tmp_path / "run", epochs=1, arch=arch, image_size=image_size,
                                   linear_probe=False))
    assert run.encoder.encoder_config["name"] == arch and 0 <= run.results["knn_top1"] <= 1
    assert load_encoder(tmp_path / "run" / "encoder.safetensors").num_features == run.encoder.num_features


def test_any_module_from_python_is_pretrained_and_resumed_only_with_it(tiny_idx, tmp_path):
    body = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                               torch.nn.Conv2d(16, 32, 3, stride=2), torch.nn.BatchNorm2d(32), torch.nn.ReLU())
    run = pretrain(tiny_idx, encoder=body, out=str(tmp_path / "run"), epochs=2, stop_after=1, batch_size=32,
                   hidden_dim=16, projection_dim=8, knn_k=5)
    assert run.config.arch == "custom"
    with pytest.raises(UserError, match="encoder given from Python"):
        pretrain(out=str(tmp_path / "run"), resume=True)
    finished = pretrain(tiny_idx, encoder=body, out=str(tmp_path / "run"), resume=True)
    assert finished.encoder.num_features == 32 and "knn_top1" in finished.results


@pytest.mark.parametrize("channels", [1, 3])
def test_init_from_takes_a_torchvision_state_dict_for_gray_and_rgb_data(tiny_idx, tmp_path, channels):
    from byol.models.backbones import adapt_first_conv
    from byol.training.step import build_model

    reference = torchvision.models.resnet18()  # as ImageNet weights a user downloaded would be
    torch.save(reference.state_dict(), tmp_path / "resnet18-imagenet.pth")
    config = PretrainConfig.create(**tiny_settings(tiny_idx, tmp_path / "run", arch="resnet18",
                                                  init_from=str(tmp_path / "resnet18-imagenet.pth")))
    model = build_model(config, channels, 96)  # above 64 px: the stock stem, which the weights fit
    for encoder in (model.online_encoder, model.target_encoder):
        assert torch.equal(encoder.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
        assert torch.equal(encoder.conv1.weight, adapt_first_conv(reference.conv1.weight, channels))
        assert "fc.weight" not in encoder.state_dict()


def test_a_labels_only_csv_shows_progress_on_a_validation_split_and_ends_with_a_number(tmp_path, capsys):
    result = pretrain(**tiny_settings(labelled_csv(tmp_path), tmp_path / "run", epochs=2, knn_every=1, knn_k=5,
                                      image_size=16))
    assert all(isinstance(row["knn_top1"], float) for row in result.metrics)  # the monitor ran every epoch
    assert result.results["scored_on"].startswith("a validation split of 24 labelled images")
    assert -1 <= result.results["linear_qwk"] <= 1
    out = capsys.readouterr().out
    assert "on the validation split" in out and "a validation split of 24 labelled images" in out
    # beside the network it started from, on the same images, with the paired difference
    r = result.results
    assert r["gain_balanced_accuracy"] == pytest.approx(r["linear_balanced_accuracy"] -
                                                        r["start_linear_balanced_accuracy"], abs=1e-9)
    assert r["gain_low"] <= r["gain_balanced_accuracy"] <= r["gain_high"]
    assert "the random network it started from, the same probe" in out and "pre-trained − start" in out


def test_proxies_of_a_labels_only_csv_with_unlabeled_images_say_validation_and_show_the_start(tmp_path, capsys):
    """The DRAC layout: labels without a test split, plus a folder of unlabeled images.  Adding the
    unlabeled images once dropped the validation split's name, so every proxy said "test split"."""
    rng = np.random.default_rng(1)
    for i in range(20):
        save(tmp_path / "unlabeled" / f"u{i:02d}.png", rng.integers(0, 255, (24, 24), dtype=np.uint8), "L")
    run = pretrain(**tiny_settings(labelled_csv(tmp_path), tmp_path / "run", epochs=4, knn_every=0, image_size=16,
                                   unlabeled=[str(tmp_path / "unlabeled")], choose_augmentations=True))
    assert len(run.config.unlabeled) == 1 and run.results["scored_on"].startswith("a validation split")
    for proxy in (tmp_path / "run" / "choice").iterdir():
        scored_on = json.loads((proxy / "results.json").read_text())["scored_on"]
        assert scored_on.startswith("a validation split of 24 labelled images"), scored_on
    assert "| no pre-training: the start, for reference | 16 | 0 |" in capsys.readouterr().out


def test_the_start_a_run_is_scored_beside_is_the_network_it_started_from(tmp_path):
    from byol.training.loop import starting_encoder

    run = pretrain(**tiny_settings(labelled_csv(tmp_path), tmp_path / "run", epochs=1, image_size=16,
                                   base_lr=1e-12))  # the weights cannot move: what it saves is its start
    start = starting_encoder(run.config, 1, 16).state_dict()
    trained = run.encoder.state_dict()
    weights = [name for name, value in start.items() if value.ndim == 4]
    assert weights and all(torch.allclose(start[name], trained[name], atol=1e-6) for name in weights)
    moved = pretrain(**tiny_settings(labelled_csv(tmp_path), tmp_path / "moved", epochs=1, image_size=16)).encoder
    assert not all(torch.allclose(start[name], moved.state_dict()[name], atol=1e-6) for name in weights)
    assert "start_linear_top1" not in pretrain(**tiny_settings(labelled_csv(tmp_path), tmp_path / "held", epochs=1,
                                                               image_size=16, test_fraction=0.2)).results


def test_a_run_below_its_start_is_warned_about(capsys):
    from byol.training.loop import print_results

    results = {"seconds": 60, "scored_on": "a validation split", "knn_top1": 0.5, "knn_k": 5, "linear_top1": 0.5,
               "linear_balanced_accuracy": 0.4, "linear_qwk": 0.1, "linear_weight_decay": 1e-3,
               "linear_selection": "5-fold cross-validation", "start_linear_top1": 0.6,
               "start_linear_balanced_accuracy": 0.6, "start_linear_qwk": 0.4, "gain_balanced_accuracy": -0.2,
               "gain_low": -0.3, "gain_high": -0.1}
    print_results(results, PretrainConfig())
    assert "below the random network it started from" in capsys.readouterr().err
    print_results({**results, "gain_high": 0.05}, PretrainConfig())
    assert "warning" not in capsys.readouterr().err


def test_the_chance_bound_is_exceeded_by_guessing_about_one_time_in_forty():
    from byol.training.choose import chance_bound

    labels = torch.tensor([0] * 66 + [1] * 43 + [2] * 14)  # a validation split of a DRAC-like set
    chance, bound = chance_bound(labels)
    assert chance == pytest.approx(1 / 3) and bound == pytest.approx(1 / 3 + 2 * 0.0522, abs=1e-3)
    assert chance_bound(torch.tensor([0, 0, 2, 2]))[0] == 0.5  # the classes present, not the largest label
    guesses = torch.randint(0, 3, (20_000, len(labels)), generator=torch.Generator().manual_seed(0))
    recalls = torch.stack([(guesses[:, labels == c] == c).float().mean(1) for c in range(3)], 1)
    exceeded = (recalls.mean(1) > bound).float().mean().item()
    assert 0.01 < exceeded < 0.04, exceeded  # one-sided two standard errors: about 2.3 %


def test_the_chooser_says_when_no_candidate_beat_chance(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "noise.npz", train_images=rng.integers(0, 255, (150, 16, 16), dtype=np.uint8),
             train_labels=np.arange(150) % 3)  # nothing in the images tells the grades apart
    pretrain(**tiny_settings(tmp_path / "noise.npz", tmp_path / "run", epochs=4, knn_every=0, batch_size=32,
                             choose_augmentations=True))
    assert "no candidate beat chance on the validation split" in capsys.readouterr().err


def test_the_chooser_never_sees_the_test_labels(tmp_path, capsys):
    """The same training images and labels, the test split's labels true then shuffled: the same
    proxy scores and the same choice.  (Made to score the proxies on the test split, it fails.)"""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (600, 16, 16), dtype=np.uint8)
    labels = np.arange(600) % 3
    for grade in range(3):
        images[labels == grade, : 5 * grade] //= 3
    tables = []
    for name, test_labels in (("true", labels[500:]), ("shuffled", rng.permutation(labels[500:]))):
        np.savez(tmp_path / f"{name}.npz", train_images=images[:500], train_labels=labels[:500],
                 test_images=images[500:], test_labels=test_labels)
        result = pretrain(**tiny_settings(tmp_path / f"{name}.npz", tmp_path / name, epochs=4, knn_every=0,
                                          batch_size=64, choose_augmentations=True))
        with (tmp_path / name / "choice.csv").open() as handle:
            tables.append([{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)])
        assert (result.config.augmentations, result.config.crop_min_scale) in {
            (row["augmentations"], float(row["crop_min_scale"])) for row in tables[-1] if row["chosen"] == "True"}
        for proxy in (tmp_path / name / "choice").iterdir():  # and each proxy says what it was scored on
            scored_on = json.loads((proxy / "results.json").read_text())["scored_on"]
            assert scored_on.startswith("a validation split of 99 labelled images"), scored_on  # stratified 20 %
    assert len(tables[0]) == 3 and tables[0] == tables[1]
    captured = capsys.readouterr()
    assert "no candidate beat chance" not in captured.err  # the grades show: the proxies see them
    assert captured.out.count("| no pre-training: the start, for reference | 16 | 0 |") == 2  # a row per table


def test_a_closer_view_is_the_next_size_the_images_allow_where_the_recipe_set_the_size():
    from byol.settings.recipes import DataFacts
    from byol.training.choose import closer_size

    files, asked = DataFacts(611, 512, 3, 8, True, "cpu"), PretrainConfig(data="x.csv")
    assert closer_size(asked, asked.replace(image_size=64), files) == 96
    assert closer_size(asked, asked.replace(image_size=96), files) == 128
    assert closer_size(asked.replace(image_size=64), asked.replace(image_size=64), files) is None  # given: kept
    assert closer_size(asked.replace(time_budget="8m"), asked.replace(image_size=64), files) is None  # the budget's
    assert closer_size(asked, asked.replace(image_size=64), DataFacts(611, 80, 3, 8, True, "cpu")) is None  # no pixels
    assert closer_size(asked, asked.replace(image_size=28), DataFacts(9_000, 28, 1, 8, False, "cpu")) is None  # arrays
    assert closer_size(asked, asked.replace(image_size=224), DataFacts(611, 1024, 3, 8, True, "cuda")) is None


@pytest.mark.slow
@pytest.mark.parametrize("seen_at", [96, None])
def test_where_no_candidate_beats_chance_the_views_are_tried_closer(tmp_path, capsys, monkeypatch, seen_at):
    """Planted: no proxy beats chance at the recipe's 64 px, and one does at 96 (or none does).
    The candidates are tried again at 96 px; the run trains at 96 px with the views chosen there
    (the standard stem, settings and normalisation derived for 96), or stays at 64 px with the
    warning naming both sizes; choice.csv holds both tables."""
    import byol.training.choose as choose_module

    monkeypatch.setattr(choose_module, "beat_chance", lambda best, labels: best["image_size"] == seen_at)
    run = pretrain(**tiny_settings(labelled_csv(tmp_path, side=96), tmp_path / "run", epochs=4, knn_every=0,
                                   choose_augmentations=True))
    with (tmp_path / "run" / "choice.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [int(row["image_size"]) for row in table] == [64] * 3 + [96] * 3
    chosen = [row for row in table if row["chosen"] == "True"]
    assert len(chosen) == 1 and int(chosen[0]["image_size"]) == run.config.image_size == (seen_at or 64)
    assert (run.config.augmentations, run.config.crop_min_scale) == \
        (chosen[0]["augmentations"], float(chosen[0]["crop_min_scale"]))
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["image_size"] == run.config.image_size and len(run.metrics) == 4
    assert load_encoder(tmp_path / "run" / "encoder.safetensors").encoder_config["small_stem"] == (seen_at is None)
    err = capsys.readouterr().err
    assert "no candidate beat chance at 64 px: trying them at 96 px" in err
    assert ("64-px or 96-px views" in err) == (seen_at is None)


@pytest.mark.slow
def test_a_time_budget_holds_within_a_fifth(tiny_idx, tmp_path):
    """The budget sets the epochs from step times measured at the start; the whole of byol
    pretrain (set-up, training, the monitor and the final evaluation) ends within 20 % of it."""
    import time

    budget = 0.5  # minutes
    started = time.perf_counter()
    result = pretrain(**{**tiny_settings(tiny_idx, tmp_path / "run", time_budget=budget), "epochs": None,
                         "knn_every": None, "warmup_epochs": None})
    seconds = time.perf_counter() - started
    assert result.config.epochs > 2  # the budget, not the tiny settings' 2 epochs, set the length
    assert 0.8 * 60 * budget <= seconds <= 1.2 * 60 * budget, seconds


def test_a_run_slower_than_measured_ends_by_the_budgets_deadline(tiny_idx, tmp_path, monkeypatch):
    """Steps measured 100× too fast (a machine that gets busy after the start): the plan asks for
    far too many epochs, and the deadline ends training in time for the final evaluation, with
    the epochs it did saved as the run's length."""
    import time

    from byol.training import budget as budget_module

    monkeypatch.setattr(budget_module, "step_and_feature_seconds", lambda *args: (1e-3, 1e-6, 0.0))
    started = time.perf_counter()
    result = pretrain(**{**tiny_settings(tiny_idx, tmp_path / "run", time_budget="0.5m"), "epochs": None,
                         "knn_every": None, "warmup_epochs": None})
    seconds = time.perf_counter() - started
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert 1 <= result.config.epochs == saved["epochs"] == len(result.metrics) < 100
    assert result.results["linear_top1"] > 0 and seconds <= 1.2 * 30, seconds


def test_a_run_whose_views_took_longer_to_choose_is_shortened_to_decay_within_its_budget(capsys):
    """The budget's arithmetic after choosing: what is left until the deadline (the budget less the
    final evaluation's seconds), in whole epochs of the measured length, at most those planned;
    the settings bound to the length derived again for it; a run that did not choose keeps its
    plan, and the deadline cuts it if it must."""
    from byol.settings.recipes import DataFacts, resolve
    from byol.training.budget import BudgetPlan

    facts = DataFacts(1_000, 512, 1, 8, True, "cpu")
    asked = PretrainConfig(data="x.csv", time_budget="10m", image_size=64, epochs=40)
    planned = resolve(asked, facts)[0].replace(augmentations="geometric", crop_min_scale=0.3, mean=(0.4,), std=(0.2,))
    plan = BudgetPlan(asked, [], final_seconds=30.0, epoch_seconds=10.0)
    started = 1_000.0
    config, deadline = plan.length(planned, facts, started, now=started + 400.0, shorten=True)
    assert deadline == started + 600 - 30
    assert config.epochs == 17  # (570 - 400) / 10
    assert (config.augmentations, config.crop_min_scale, config.mean, config.image_size) == \
        ("geometric", 0.3, (0.4,), 64)  # what was chosen is kept
    assert config.warmup_epochs == round(17 / 16, 3) and config.knn_every == 17 // 4  # derived for 17 epochs
    assert "17 epochs instead of 40" in capsys.readouterr().err
    assert plan.length(planned, facts, started, now=started + 10.0, shorten=True)[0] is planned  # time enough
    assert plan.length(planned, facts, started, now=started + 400.0, shorten=False)[0] is planned
    assert plan.length(planned, facts, started, now=started + 569.0, shorten=True)[0].epochs == 1
