import csv

import numpy as np
import pytest
import torch
from PIL import Image

from byol import create_encoder
from byol.commands.cli import main
from byol.data import ImageSet, load_dataset
from byol.evaluation.frozen import linear_probe
from byol.evaluation.finetune import FinetuneSettings, Trainer, build_classifier, class_weights, epoch_order, finetune
from conftest import assert_one_line_error, graded_folder, run_cli, write_csv


def test_class_weights_and_the_balanced_sampler():
    labels = torch.tensor([0] * 90 + [1] * 10)
    assert class_weights(labels, 3).tolist() == pytest.approx([100 / 270, 100 / 30, 0.0])
    draws = torch.cat([epoch_order(labels, 3, "sampler", torch.Generator().manual_seed(s)) for s in range(50)])
    share_of_rare = (labels[draws] == 1).float().mean().item()
    assert share_of_rare == pytest.approx(0.5, abs=0.03)  # 10 % of the images, half of the draws
    plain = epoch_order(labels, 3, "none", torch.Generator().manual_seed(0))
    assert sorted(plain.tolist()) == list(range(100))  # a permutation: every image once


def test_balance_weights_the_probe_fine_tuning_starts_from_and_fine_tuning_trains_plain(monkeypatch):
    """``balance="loss"``: the head starts from the class-weighted probe; fine-tuning's own loss is
    plain cross-entropy — a head that can only move its biases ends at the training prior.
    (Class-weighted and logit-adjusted fine-tuning made random init predict the rare grade for
    most images: BENCHMARKS.md, "Fine-tuning with --balance loss".)"""
    labels = torch.tensor([0] * 90 + [1] * 10)
    monkeypatch.setattr("byol.evaluation.finetune.augment", lambda images, *args, **kwargs: images.float())
    for balance in ("loss", "none"):
        bias = torch.nn.Parameter(torch.zeros(2))
        model = lambda x: bias.expand(len(x), 2)  # noqa: E731
        model.train = lambda: None
        train = ImageSet(torch.zeros(100, 1, 4, 4, dtype=torch.uint8), labels)
        trainer = Trainer(model, torch.optim.SGD([bias], lr=1.0), train, 2, torch.zeros(1), torch.ones(1), 4,
                          torch.device("cpu"), FinetuneSettings(batch_size=100, balance=balance, clip_grad=0), 0)
        for epoch in range(300):
            trainer.epoch(epoch, 10**6, 1, 5.0)
        assert bias.softmax(0).tolist() == pytest.approx([0.9, 0.1], abs=1e-3)
    probed = {}
    monkeypatch.setattr("byol.evaluation.finetune.linear_probe",
                        lambda *args, balance, **kwargs: probed.setdefault(balance, linear_probe(*args, **kwargs)))
    rng = np.random.default_rng(0)
    train = ImageSet(torch.from_numpy(rng.integers(0, 255, (40, 1, 8, 8), dtype=np.uint8)), torch.arange(40) % 4 // 3)
    for balance in ("loss", "sampler", "none"):
        probed.clear()
        build_classifier(create_encoder("narrow_resnet", 1, None, 8), train, 2, torch.zeros(1), torch.ones(1), 8,
                         torch.device("cpu"), FinetuneSettings(balance=balance), "top1", 0)
        assert list(probed) == [balance != "none"]


def test_the_heads_standardisation_starts_as_the_probes_and_follows_the_batch_in_training():
    """Before any step the network is the linear probe: the same per-dimension standardisation and
    the same head.  In training each batch is standardised by its own statistics, so a feature
    that was all but constant in the frozen features and then moves (as a BYOL encoder's did
    under the training views) reaches the head on a unit scale — not magnified by one over its
    frozen spread, as a fixed standardisation would (here ten-thousand-fold)."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(64, 8, generator=generator) * torch.tensor([1.0] * 7 + [1e-4]) + 3.0

    class Fixed(torch.nn.Module):  # an "encoder" whose features are given: the last one all but constant
        num_features = 8

        def forward(self, x):
            return features[: len(x)] + 0 * x.flatten(1)[:, :1]

    train = ImageSet(torch.zeros(64, 1, 8, 8, dtype=torch.uint8), torch.arange(64) % 2)
    model, _, _ = build_classifier(Fixed(), train, 2, torch.zeros(1), torch.ones(1), 8, torch.device("cpu"),
                                   FinetuneSettings(), "top1", 0)
    probe = linear_probe(features, train.labels, features, train.labels, 2)
    model.eval()
    assert torch.allclose(model[2](model[1](features)), probe.test_scores, atol=1e-4)
    moved = features + torch.tensor([0.0] * 7 + [1.0]) * torch.randn(64, 1, generator=generator)
    fixed = (moved - features.mean(0)) / features.std(0)
    assert fixed[:, 7].abs().max() > 1000
    model.train()
    batch = model[1](moved)
    assert batch.std(0).sub(1).abs().max() < 0.02 and batch[:, 7].abs().max() < 5


def _split_tiny(tiny_idx):
    dataset = load_dataset(tiny_idx)
    train = dataset.train
    return train.subset(torch.arange(0, 240)), train.subset(torch.arange(240, 320)), dataset


def test_fine_tuned_head_is_standardised_by_the_un_augmented_training_images(tiny_idx):
    """Training leaves the head's statistics describing augmented batches; the network is scored
    with those of the un-augmented training images as its encoder now sees them — with and
    without a validation split (where the epoch kept is scored that way too)."""
    from byol.evaluation.frozen import extract_features, feature_scale

    train, val, dataset = _split_tiny(tiny_idx)
    train, val = (ImageSet(s.images, s.labels // 2) for s in (train, val))  # top or bottom half: learnable
    mean, std = dataset.channel_stats()
    for held_out in (None, val):
        torch.manual_seed(0)
        settings = FinetuneSettings(epochs=4, min_steps=0, batch_size=64, lr=0.2, head="new")
        result = finetune(create_encoder("narrow_resnet", 1, None, 16), train, held_out, 2, mean, std, 16,
                          torch.device("cpu"), settings, progress=False)
        assert held_out is None or result.best_epoch > 0  # a trained epoch is the one kept
        clean_mean, clean_std = feature_scale(extract_features(result.model[0], train, mean, std, 16).float())
        assert torch.allclose(result.model[1].running_mean, clean_mean, atol=1e-5)
        assert torch.allclose(result.model[1].running_var, clean_std.square(), rtol=1e-4, atol=1e-8)


def test_finetune_learns_and_keeps_the_best_epoch(tiny_idx):
    train, val, dataset = _split_tiny(tiny_idx)
    # Square in the top or the bottom half: a task that survives horizontal flips.
    train, val = (ImageSet(s.images, s.labels // 2) for s in (train, val))
    mean, std = dataset.channel_stats()
    encoder = create_encoder("narrow_resnet", 1, None, 16)
    result = finetune(encoder, train, val, 2, mean, std, 16, torch.device("cpu"),
                      FinetuneSettings(epochs=8, min_steps=0, batch_size=64, lr=0.2, head="new"), progress=False)
    assert result.val_score == max(h["top1"] for h in result.history)
    assert result.history[result.best_epoch]["top1"] == result.val_score and result.best_epoch > 0
    assert result.val_score > 0.9  # easy once the whole network trains


def test_early_stopping_waits_patience_epochs_without_improvement(tiny_idx):
    train, val, dataset = _split_tiny(tiny_idx)
    mean, std = dataset.channel_stats()
    encoder = create_encoder("narrow_resnet", 1, None, 16)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    # lr 0: weights never change (BatchNorm running statistics do, but not the scores once settled)
    result = finetune(encoder, train, val, 4, mean, std, 16, torch.device("cpu"),
                      FinetuneSettings(epochs=20, min_steps=0, patience=2, batch_size=64, lr=0.0), progress=False)
    assert len(result.history) - 1 < 20 and len(result.history) - 1 == result.best_epoch + 2
    assert torch.equal(result.model[0].conv1.weight, before["conv1.weight"])


def test_clipping_bounds_every_step_by_the_gradients_norm(tiny_idx):
    """With momentum 0.9 and Nesterov, a step moves the weights by at most lr × 10 × the clipped
    norm: clipped at 1e-6, the whole network barely moves; unclipped, it does."""
    train, _, dataset = _split_tiny(tiny_idx)
    mean, std = dataset.channel_stats()
    moved = {}
    for clip in (0.0, 1e-6):
        torch.manual_seed(0)
        encoder = create_encoder("narrow_resnet", 1, None, 16)
        before = torch.cat([p.detach().flatten().clone() for p in encoder.parameters()])
        settings = FinetuneSettings(epochs=1, min_steps=0, batch_size=60, lr=1.0, head="new", clip_grad=clip)
        result = finetune(encoder, train, None, 4, mean, std, 16, torch.device("cpu"), settings, progress=False)
        after = torch.cat([p.detach().flatten() for p in result.model[0].parameters()])
        moved[clip] = (after - before).norm().item()
    steps, peak = 4, 1.0 * 60 / 256  # 240 images in batches of 60; the rate never exceeds the peak
    assert moved[1e-6] <= steps * peak * 10 * 1e-6 * 1.001
    assert moved[0.0] > 1000 * moved[1e-6]


def test_geometric_fine_tuning_views_turn_images_upside_down_and_crop_flip_views_never_do(monkeypatch):
    """``--views`` reaches the training views: a bright top row stays on top under crop-flip (the
    paper's), and lands in the bottom half of some views under geometric (vertical flips and any
    rotation), with each view's turn drawn per image."""
    import byol.evaluation.finetune as finetune_module

    images = torch.zeros(64, 1, 16, 16, dtype=torch.uint8)
    images[:, :, :2] = 255  # the top two rows lit, nothing else
    train = ImageSet(images, torch.arange(64) % 2)
    seen, real_augment = [], finetune_module.augment
    monkeypatch.setattr(finetune_module, "augment", lambda *a, **k: seen.append(real_augment(*a, **k)) or seen[-1])
    bottom = {}
    for views in ("crop-flip", "geometric"):
        seen.clear()
        torch.manual_seed(0)
        settings = FinetuneSettings(epochs=2, min_steps=0, batch_size=32, crop_min_scale=1.0, head="new", views=views)
        finetune(create_encoder("narrow_resnet", 1, None, 16), train, None, 2, torch.tensor([0.1]),
                 torch.tensor([0.3]), 16, torch.device("cpu"), settings, progress=False)
        x = torch.cat(seen)[:, 0]
        bottom[views] = (x[:, 8:].mean((1, 2)) > x[:, :8].mean((1, 2))).float().mean().item()
        assert len(x) == 128
    assert bottom["crop-flip"] == 0.0
    assert 0.2 < bottom["geometric"] < 0.8  # per image: some views turned, some not


@pytest.mark.parametrize("balance", ["loss", "none"])
def test_the_head_is_refitted_as_the_probe_was_whatever_training_left_in_it(tiny_idx, monkeypatch, balance):
    """Fine-tuning ends by fitting the head again as the probe was fitted (same L2, class-weighted
    under --balance), on the features as they will be scored.  Here training leaves the encoder as
    it was and the head scrambled: the network that comes back is the probe again."""
    train, _, dataset = _split_tiny(tiny_idx)
    train = ImageSet(train.images, torch.where(train.labels == 3, 3, train.labels % 3))  # grade 3: a rare class
    mean, std = dataset.channel_stats()
    settings = FinetuneSettings(epochs=1, min_steps=0, batch_size=60, balance=balance)

    def scramble(self, *args):
        with torch.no_grad():
            self.model[2].weight.normal_(0, 5)
            self.model[2].bias.normal_(0, 5)
        return 1.0

    torch.manual_seed(0)
    start, _, _ = build_classifier(create_encoder("narrow_resnet", 1, None, 16), train, 4, mean, std, 16,
                                   torch.device("cpu"), settings, "top1", 0)
    monkeypatch.setattr(Trainer, "epoch", scramble)
    torch.manual_seed(0)
    result = finetune(create_encoder("narrow_resnet", 1, None, 16), train, None, 4, mean, std, 16,
                      torch.device("cpu"), settings, progress=False)
    assert "re-fitted" in result.note
    assert torch.allclose(result.model[2].weight, start[2].weight, atol=1e-3)
    shift = result.model[2].bias - start[2].bias  # the unpenalised bias is free up to one constant (softmax)
    assert torch.allclose(shift, shift.mean().expand(4), atol=1e-3)


@pytest.mark.slow
def test_finetune_command_end_to_end_and_repeatable_from_its_subset_file(tiny_idx, tmp_path):
    args = ["finetune", "--init", "random", "--data", str(tiny_idx), "--label-fraction", "0.25", "--epochs", "2",
            "--min-steps", "0", "--batch-size", "32", "--balance", "loss", "--device", "cpu"]
    result = run_cli(*args, "--out", str(tmp_path / "a"))
    assert result.returncode == 0, result.stderr
    assert "| random | finetune | 80 (25 %) | 1 |" in result.stdout
    with (tmp_path / "a" / "subset-0.25-seed0.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    roles = [r["role"] for r in rows]
    assert roles.count("fit") + roles.count("val") == 80 and roles.count("unused") == 240
    chosen = [int(r["label"]) for r in rows if r["role"] != "unused"]
    assert np.bincount(chosen).tolist() == [20, 20, 20, 20]  # stratified
    # the saved subset reproduces the run exactly (deterministic CPU)
    assert main([*args, "--subset", str(tmp_path / "a" / "subset-0.25-seed0.csv"), "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "finetune.csv").read_text() == (tmp_path / "b" / "finetune.csv").read_text()
    assert "Confusion matrix" in (tmp_path / "a" / "finetune.md").read_text()


def test_compare_scores_every_init_on_the_same_split(tiny_idx, tmp_path):
    torch.save(create_encoder("resnet18", 1, False, 16).state_dict(), tmp_path / "imagenet-style.pth")
    assert main(["compare", "--init", "random", "--init", "pixels", "--init", str(tmp_path / "imagenet-style.pth"),
                 "--data", str(tiny_idx), "--arch", "resnet18", "--protocols", "knn", "linear",
                 "--label-fraction", "0.5", "1",
                 "--out", str(tmp_path / "cmp"), "--device", "cpu"]) == 0
    with (tmp_path / "cmp" / "compare.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["init"][-3:], r["protocol"], r["label_fraction"]) for r in rows] == [
        (init, protocol, fraction) for init in ("dom", "els", "pth") for fraction in ("0.5", "1.0")
        for protocol in ("knn", "linear")]
    assert {r["labels"] for r in rows if r["label_fraction"] == "0.5"} == {"160"}
    pixel_knn = next(r for r in rows if r["init"] == "pixels" and r["protocol"] == "knn" and r["label_fraction"] == "1.0")
    assert float(pixel_knn["top1"]) > 0.95  # the corner squares are plain in the pixels


@pytest.mark.slow
def test_compare_checks_every_init_before_running_any(tiny_idx, tmp_path):
    result = run_cli("compare", "--init", "random", "--init", str(tmp_path / "missing.safetensors"),
                     "--data", str(tiny_idx), "--out", str(tmp_path / "cmp"))
    assert_one_line_error(result, "missing.safetensors", "no weights file")
    assert not (tmp_path / "cmp").exists()




@pytest.mark.slow
def test_ordinal_grades_from_a_csv_with_a_held_out_test_split(tmp_path):
    rows = graded_folder(tmp_path)
    write_csv(tmp_path / "grades.csv", rows)
    result = run_cli("eval", "linear", "--init", "random", "--data", str(tmp_path / "grades.csv"), "--ordinal",
                     "--image-size", "16", "--test-fraction", "0.25", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "holding out a stratified 25 %" in result.stderr and "seed 0: qwk" in result.stderr
    with (tmp_path / "out" / "eval-linear.csv").open() as handle:
        assert "(qwk " in next(csv.DictReader(handle))["detail"]  # the L2 was chosen on the validation QWK
    with (tmp_path / "out" / "subset-1-seed0.csv").open() as handle:
        saved = list(csv.DictReader(handle))
    assert sum(r["role"] == "test" for r in saved) == 6 and saved[0]["image"] == "images/000.png"


@pytest.mark.slow
def test_csv_label_errors_are_clear(tmp_path):
    rows = graded_folder(tmp_path)
    write_csv(tmp_path / "train.csv", rows)
    write_csv(tmp_path / "test.csv", [("images/000.png", 0), ("images/001.png", 7)])
    assert_one_line_error(run_cli("eval", "knn", "--init", "random", "--data", str(tmp_path / "train.csv"),
                                  "--test-data", str(tmp_path / "test.csv")), "labels [7] never occur")
    write_csv(tmp_path / "blank.csv", [("images/000.png", 0), ("images/001.png", " ")])
    assert_one_line_error(run_cli("eval", "knn", "--init", "random", "--data", str(tmp_path / "blank.csv")),
                          "row 3", "no label")


@pytest.mark.slow
def test_embed_writes_features_and_the_image_list(tmp_path):
    graded_folder(tmp_path / "data")
    assert main(["embed", "--init", "random", "--data", str(tmp_path / "data" / "images"), "--image-size", "16",
                 "--out", str(tmp_path / "features.npy")]) == 0
    features = np.load(tmp_path / "features.npy")
    encoder = create_encoder("narrow_resnet", 3, None, 16)
    assert features.shape == (24, encoder.num_features) and features.dtype == np.float32
    with (tmp_path / "features.csv").open() as handle:
        listed = list(csv.DictReader(handle))
    assert [r["image"] for r in listed] == [f"{i:03d}.png" for i in range(24)] and listed[0]["split"] == "train"
    assert_one_line_error(run_cli("embed", "--init", "random", "--out", str(tmp_path / "f.parquet")), ".npy")
