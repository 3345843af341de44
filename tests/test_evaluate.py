import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, f1_score

from byol.evaluation.frozen import knn_accuracy, linear_probe
from byol.evaluation.metrics import classification_metrics, quadratic_weighted_kappa
from byol.evaluation.splits import label_split, role_seed, stratified_split
from conftest import write_csv, write_idx


def test_quadratic_weighted_kappa_matches_scikit_learn():
    rng = np.random.default_rng(0)
    for num_classes in (2, 3, 5):
        labels = rng.integers(0, num_classes, 200)
        predicted = np.clip(labels + rng.integers(-1, 2, 200), 0, num_classes - 1)
        ours = quadratic_weighted_kappa(torch.tensor(predicted), torch.tensor(labels), num_classes)
        assert ours == pytest.approx(cohen_kappa_score(labels, predicted, weights="quadratic"), abs=1e-12)
    perfect = torch.tensor([0, 1, 2, 2])
    assert quadratic_weighted_kappa(perfect, perfect, 3) == pytest.approx(1.0)


def test_classification_metrics_match_scikit_learn():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, 300)
    scores = torch.tensor(rng.normal(size=(300, 6)))
    scores[torch.arange(150), torch.tensor(labels[:150])] += 3  # half of them right, confidently
    metrics = classification_metrics(scores, torch.tensor(labels), 6)
    predicted = scores.argmax(1).numpy()
    assert metrics["top1"] == pytest.approx((predicted == labels).mean())
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert metrics["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert np.array(metrics["confusion_matrix"]).sum() == 300 and 0 <= metrics["top1"] <= metrics["top5"] <= 1


def test_linear_probe_separates_separable_features():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=generator) * 5
    labels = torch.arange(400) % 4
    features = centres[labels] + torch.randn(400, 16, generator=generator)
    result = linear_probe(features[:300], labels[:300], features[300:], labels[300:], 4)
    assert result.accuracy == pytest.approx(1.0)
    assert knn_accuracy(features[:300], labels[:300], features[300:], labels[300:], 4, k=20) == pytest.approx(1.0)


def test_stratified_split_is_stratified_reproducible_and_disjoint():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    rest, held = stratified_split(labels, 0.1, seed=3)
    assert torch.equal(held, stratified_split(labels, 0.1, seed=3)[1])
    assert not torch.equal(held, stratified_split(labels, 0.1, seed=4)[1])
    assert set(rest.tolist()).isdisjoint(held.tolist()) and len(rest) + len(held) == 100
    assert torch.bincount(labels[held]).tolist() == [5, 3, 2]


def test_random_init_baseline_is_reproducible_from_the_seed(tmp_path):
    from byol import evaluate

    rng = np.random.default_rng(0)  # noise images, random labels: the vote depends on the encoder's weights
    for prefix, n in (("train", 200), ("t10k", 100)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 12, 12)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 5, n))
    runs = [evaluate("random", data=str(tmp_path), protocols=["knn"], knn_k=10, seeds=[seed],
                     out=str(tmp_path / "out")).rows[0]["confusion_matrix"] for seed in (1, 1, 2)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_label_subsets_are_stratified_reproducible_and_disjoint_from_validation():
    labels = torch.tensor([0] * 500 + [1] * 300 + [2] * 200)
    fit, val = label_split(labels, 0.1, val_fraction=0.2, seed=7)
    assert set(fit.tolist()).isdisjoint(val.tolist())
    assert torch.bincount(labels[torch.cat([fit, val])]).tolist() == [50, 30, 20]  # 10 % of every class
    assert torch.bincount(labels[val]).tolist() == [10, 6, 4]
    again = label_split(labels, 0.1, val_fraction=0.2, seed=7)
    assert torch.equal(fit, again[0]) and torch.equal(val, again[1])
    other = label_split(labels, 0.1, val_fraction=0.2, seed=8)
    assert not torch.equal(fit, other[0])
    # 1 % of a 100-image class is one image: each class still gets one to fit and one to validate on
    fit, val = label_split(labels, 0.001, val_fraction=0.1, seed=0)
    assert torch.bincount(labels[fit]).tolist() == [1, 1, 1] and torch.bincount(labels[val]).tolist() == [1, 1, 1]
    # all labels: the validation split is a stratified split from the seed's own validation generator
    fit, val = label_split(labels, 1.0, val_fraction=0.1, seed=3)
    rest, held = stratified_split(labels, 0.1, seed=role_seed(3, "validation"))
    assert torch.equal(fit, rest) and torch.equal(val, held)


def test_each_role_of_a_seed_draws_from_its_own_generator():
    """Seed s's test split and seed s + 1's label subset once came from the same generator."""
    roles = ("test", "subset", "validation", "initialisation", "fine-tuning")
    seeds = {role_seed(seed, role) for seed in range(10) for role in roles}
    assert len(seeds) == 50 and role_seed(3, "test") == role_seed(3, "test")


def test_probe_selects_its_l2_by_the_chosen_metric_on_the_given_validation_split():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 3
    features = torch.randn(400, 6, generator=generator) + 2.0 * F.one_hot(labels, 6).float()
    val_index = torch.arange(250, 400)  # at least MIN_VALIDATION images: the split is used as given
    result = linear_probe(features, labels, features[:30], labels[:30], 3, val_index=val_index, metric="qwk")
    assert result.val_score == pytest.approx(quadratic_weighted_kappa(
        fit_and_predict(features, labels, val_index, result.weight_decay), labels[val_index], 3))


def fit_and_predict(features, labels, val_index, weight_decay):
    from byol.evaluation.frozen import fit_logistic_regression, standardise

    features = standardise(features.float())[0]
    fit = torch.arange(len(labels))[~torch.isin(torch.arange(len(labels)), val_index)]
    classifier = fit_logistic_regression(features[fit], labels[fit], 3, weight_decay)
    return classifier(features[val_index]).argmax(dim=1)


def test_knn_k_fits_the_bank_and_a_small_bank_does_not_vote_the_majority():
    from byol.evaluation.frozen import knn_k_for, knn_predict

    assert knn_k_for(torch.arange(60_000) % 10) == 200  # the monitor's standard k on large banks
    grades = torch.tensor([0] * 262 + [1] * 170 + [2] * 56)  # 488 labels, DRAC's proportions
    assert knn_k_for(grades) == 22  # √488
    bank = torch.tensor([0] * 26 + [1] * 17 + [2] * 6)  # 10 % of those labels: 49 images
    assert knn_k_for(bank) == 6  # √49 = 7, but the rarest grade has 6
    generator = torch.Generator().manual_seed(0)
    # grades that separate, on a shared offset (features after a ReLU all point one way)
    centres = torch.randn(3, 32, generator=generator) * 0.6 + 3
    features = centres[bank] + torch.randn(49, 32, generator=generator)
    truth = torch.tensor([0, 1, 2] * 10)
    queries = centres[truth] + torch.randn(30, 32, generator=generator)
    majority = knn_predict(features, bank, queries, 3, k=200).argmax(1)
    assert (majority == 0).float().mean() > 0.8  # k = 200 in a 49-image bank: mostly the majority grade
    fitted = knn_predict(features, bank, queries, 3, k=knn_k_for(bank)).argmax(1)
    assert (fitted == truth).float().mean() >= 0.85 > (majority == truth).float().mean() + 0.3


def test_cross_validated_selection_never_looks_at_test_labels():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    features = torch.randn(60, 8, generator=generator) + F.one_hot(labels, 8).float()
    test = torch.randn(30, 8, generator=generator)
    results = [linear_probe(features, labels, test, test_labels, 3, val_index=torch.arange(50, 60), seed=1)
               for test_labels in (torch.zeros(30, dtype=torch.long), torch.arange(30) % 3)]
    assert results[0].weight_decay == results[1].weight_decay and results[0].val_score == results[1].val_score
    assert torch.equal(results[0].test_scores, results[1].test_scores)
    assert results[0].selection == "5-fold cross-validation on 60 labels"


def graded_arrays(n=120, seed=0):
    """Images whose grade shows (grade 1: a bright top, grade 2: a bright bottom), on noise."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 12, 12, 3), dtype=np.uint8)
    labels = np.arange(n) % 3
    images[labels == 1, :6] = 255
    images[labels == 2, 6:] = 255
    return images, labels


def test_compare_repeats_every_cell_per_seed_with_paired_verdicts(tmp_path):
    from byol import evaluate

    images, labels = graded_arrays()
    comparison = evaluate(["random", "pixels"], data=(images, labels), protocols=["knn", "linear"], seeds=[0, 1, 2],
                          label_fraction=[1.0], out=str(tmp_path))
    assert len(comparison.rows) == 2 * 2 * 3 and {row["seed"] for row in comparison.rows} == {0, 1, 2}
    summary = comparison.summary()
    assert len(summary) == 4 and all(cell["seeds"] == 3 and len(cell["top1"]) == 3 for cell in summary)
    markdown = (tmp_path / "compare.md").read_text()
    assert "±" in markdown and "Verdict rule" in markdown and "| linear | 100 % | random | pixels |" in markdown
    assert "95 % interval" in markdown and "drawn anew for each seed" in markdown
    verdicts = comparison.verdicts()
    assert len(verdicts) == 2 and all(v["low"] <= v["difference"] <= v["high"] for v in verdicts)
    assert all("cross-validation" in row["detail"] for row in comparison.rows if row["protocol"] == "linear")
    assert (tmp_path / "subset-1-seed2.csv").is_file()


def without_tensors(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("predicted", "test_labels", "test_ids")}


def test_a_stopped_comparison_keeps_what_it_scored_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    """Ctrl-C before each (encoder, seed) in turn: run again, the comparison scores only what
    was not finished, and its rows are the uninterrupted run's; other settings score afresh."""
    from byol import evaluate
    from byol.evaluation import compare

    images, labels = graded_arrays()
    settings = dict(data=(images, labels), protocols=["knn"], seeds=[0, 1], label_fraction=[1.0])
    straight = evaluate(["random", "pixels"], out=str(tmp_path / "straight"), **settings).rows
    original, calls, stop_at = compare.evaluate_encoder, [], [0]

    def scored(name, encoder, data, config, device, split, cache):
        calls.append((name, split.seed))
        if len(calls) == stop_at[0]:
            raise KeyboardInterrupt
        return original(name, encoder, data, config, device, split, cache)

    def stopped_then_again(out, stop, **changes):
        calls.clear()
        stop_at[0] = stop
        with pytest.raises(KeyboardInterrupt):
            evaluate(["random", "pixels"], out=out, **settings)
        calls.clear()
        stop_at[0] = 0
        return evaluate(["random", "pixels"], out=out, **{**settings, **changes}).rows

    monkeypatch.setattr(compare, "evaluate_encoder", scored)
    for stop in range(1, 5):  # before each of 2 encoders x 2 seeds
        rows = stopped_then_again(str(tmp_path / f"stopped-{stop}"), stop)
        assert len(calls) == 4 - (stop - 1), (stop, calls)  # the finished ones were kept
        for row, expected in zip(rows, straight, strict=True):
            assert without_tensors(row) == without_tensors(expected)
            assert torch.equal(row["predicted"], expected["predicted"])
    stopped_then_again(str(tmp_path / "changed"), 3, knn_k=3)
    assert len(calls) == 4  # another setting: nothing of the stopped run is used


def test_more_seeds_later_score_only_the_new_ones_and_pool_as_one_comparison(tmp_path, monkeypatch, capsys):
    """Seeds 0 1, then 0 1 2 into the same folder: only seed 2 is scored, and the rows and
    verdicts are those of one comparison of seeds 0 1 2; a seed's rows do not depend on the
    other seeds (seed 1 alone scores as seed 1 among 0 1)."""
    from byol import evaluate
    from byol.evaluation import compare

    images, labels = graded_arrays()
    settings = dict(data=(images, labels), protocols=["knn", "linear", "finetune"], label_fraction=[1.0, 0.5],
                    epochs=1, min_steps=4)
    fresh = evaluate(["random", "pixels"], out=str(tmp_path / "fresh"), seeds=[0, 1, 2], **settings)
    alone = evaluate(["random", "pixels"], out=str(tmp_path / "alone"), seeds=[1], **settings).rows
    assert [without_tensors(row) for row in alone] == \
        [without_tensors(row) for row in fresh.rows if row["seed"] == 1]
    evaluate(["random", "pixels"], out=str(tmp_path / "grown"), seeds=[0, 1], **settings)
    assert "scores only the new seeds, and the verdicts pool them all" in capsys.readouterr().out
    original, calls = compare.evaluate_encoder, []

    def scored(name, encoder, data, config, device, split, cache):
        calls.append((name, split.seed))
        return original(name, encoder, data, config, device, split, cache)

    monkeypatch.setattr(compare, "evaluate_encoder", scored)
    grown = evaluate(["random", "pixels"], out=str(tmp_path / "grown"), seeds=[0, 1, 2], **settings)
    assert calls == [("random", 2), ("pixels", 2)]
    for row, expected in zip(grown.rows, fresh.rows, strict=True):
        assert without_tensors(row) == without_tensors(expected)
        assert torch.equal(row["predicted"], expected["predicted"])
    assert grown.verdicts() == fresh.verdicts()
    assert (tmp_path / "grown" / "compare.md").read_text() == (tmp_path / "fresh" / "compare.md").read_text()
    shutil.copytree(tmp_path / "grown", tmp_path / "upgraded")
    calls.clear()
    evaluate(["random", "pixels"], out=str(tmp_path / "grown"), seeds=[0, 1, 2], **{**settings, "knn_k": 3})
    assert len(calls) == 6  # another setting: every seed scored afresh
    calls.clear()
    monkeypatch.setattr(compare, "scoring_code", lambda: "another version of byol or torch")
    evaluate(["random", "pixels"], out=str(tmp_path / "upgraded"), seeds=[0, 1, 2], **settings)
    assert len(calls) == 6  # parts another version kept are scored again, not pooled
    assert any(row["protocol"] == "finetune" for row in fresh.rows)


def test_the_scoring_code_key_changes_with_any_source_file(tmp_path):
    import byol
    from byol.evaluation.compare import scoring_code

    package = Path(byol.__file__).parent
    copy = shutil.copytree(package, tmp_path / "byol", ignore=shutil.ignore_patterns("__pycache__"))
    assert scoring_code(copy) == scoring_code()
    module = copy / "evaluation" / "frozen.py"
    module.write_text(module.read_text() + "\n# another version\n")
    assert scoring_code.__wrapped__(copy) != scoring_code()


def test_a_comparison_that_cannot_keep_its_parts_still_ends(tmp_path, monkeypatch, capsys):
    from byol import evaluate
    from byol.evaluation import compare

    def full_disk(path, write):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(compare, "atomic_write", full_disk)
    images, labels = graded_arrays()
    comparison = evaluate(["random", "pixels"], data=(images, labels), protocols=["knn"], seeds=[0],
                          label_fraction=[1.0], out=str(tmp_path))
    assert len(comparison.rows) == 2 and (tmp_path / "compare.md").is_file()
    printed = capsys.readouterr()
    assert "could not keep random, seed 0" in printed.err
    assert "scores only the new seeds" not in printed.out  # nothing was kept, so nothing is promised


def test_no_choice_of_any_protocol_depends_on_the_test_labels(tmp_path):
    """The same training images and labels; the test images' labels true, then shuffled: every
    choice (the probe's L2 and its score, k, the fine-tuning epoch) and every prediction must be
    the same; only the scores may differ.  (Made to peek — the probe's L2 picked on the test
    labels — this test fails.)"""
    from byol import evaluate

    images, labels = graded_arrays(240)
    for name, test_labels in (("true", labels[200:]), ("shuffled", np.random.default_rng(1).permutation(labels[200:]))):
        np.savez(tmp_path / f"{name}.npz", train_images=images[:200], train_labels=labels[:200],
                 test_images=images[200:], test_labels=test_labels)
    runs = [evaluate(["random", "pixels"], data=str(tmp_path / f"{name}.npz"), protocols=["knn", "linear", "finetune"],
                     seeds=[0, 1], label_fraction=[1.0, 0.5], epochs=2, min_steps=4, out=str(tmp_path / name)).rows
            for name in ("true", "shuffled")]
    assert [r["detail"] for r in runs[0]] == [r["detail"] for r in runs[1]]
    assert all(torch.equal(a["predicted"], b["predicted"]) for a, b in zip(*runs))
    assert [r["top1"] for r in runs[0]] != [r["top1"] for r in runs[1]]  # the test labels did change the scores


def test_random_init_is_drawn_anew_for_each_seed_and_the_same_seed_draws_the_same():
    from byol.data import ImageSet
    from byol.evaluation.compare import EvalConfig, Encoders
    from byol.evaluation.labelled import LabelledData

    data = LabelledData("x", ImageSet(torch.zeros(4, 1, 16, 16, dtype=torch.uint8), torch.arange(4) % 2), None,
                        ("0", "1"), torch.zeros(1), torch.ones(1), 16, 0.2)
    config = EvalConfig(init=("random",), seeds=(0, 1, 2), arch="narrow_resnet")
    loader = Encoders(["random"], config, data)
    weights = [loader.for_seed(0, seed).conv1.weight.detach().clone() for seed in (0, 1, 2, 1)]
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    assert torch.equal(weights[1], weights[3])  # the same seed: the same encoder
    assert loader.key(0, 1) != loader.key(0, 2)


def test_compare_says_the_size_it_scores_at_and_warns_when_encoders_were_trained_at_others(tmp_path, capsys):
    from byol import evaluate
    from byol.models.backbones import create_encoder, save_encoder

    for size in (12, 16):
        save_encoder(create_encoder("narrow_resnet", 3, image_size=size), tmp_path / f"at{size}.safetensors")
    images, labels = graded_arrays(60)
    first, second = str(tmp_path / "at12.safetensors"), str(tmp_path / "at16.safetensors")
    evaluate([first, second], data=(images, labels), protocols=["knn"], out=str(tmp_path / "a"))
    warning = capsys.readouterr().err
    assert f"trained at different sizes ({first} 12 px, {second} 16 px); all are scored at 12 px" in warning
    assert "image_size" in warning.split("all are scored at")[1]
    assert "images scored at 12 px (the size the encoder was trained at)" in (tmp_path / "a" / "compare.md").read_text()
    evaluate([first, second], data=(images, labels), protocols=["knn"], image_size=16, out=str(tmp_path / "b"))
    assert "different sizes" not in capsys.readouterr().err
    assert "images scored at 16 px (as given)" in (tmp_path / "b" / "compare.md").read_text()
    evaluate([first, first], data=(images, labels), protocols=["knn"], out=str(tmp_path / "c"))
    assert "different sizes" not in capsys.readouterr().err


def save_image(path):
    from conftest import save

    save(path, np.random.default_rng(len(str(path))).integers(0, 256, (8, 8, 3), dtype=np.uint8))


def test_grades_in_their_true_order(tmp_path):
    """Folders 0 … 10 in numeric order; grade names need --grades, which sets their order."""
    from byol import UserError
    from byol.data import load_dataset
    from byol.evaluation.labelled import grade_order

    for grade in range(11):
        save_image(tmp_path / "numbered" / str(grade) / "a.png")
        save_image(tmp_path / "numbered" / str(grade) / "b.png")
    numbered = load_dataset(tmp_path / "numbered")
    assert numbered.classes == tuple(str(g) for g in range(11))  # 10 after 9, not after 1
    assert grade_order(numbered, None, True) == (numbered.classes, None)
    for name in ("none", "mild", "moderate", "severe"):
        save_image(tmp_path / "named" / name / "a.png")
    named = load_dataset(tmp_path / "named")
    with pytest.raises(UserError, match=r"needs the grades in order.*names \(mild, moderate, none, severe\).*grades"):
        grade_order(named, None, True)
    order, remap = grade_order(named, ("none", "mild", "moderate", "severe"), True)
    assert order == ("none", "mild", "moderate", "severe")
    assert [order[remap[named.classes.index(n)]] for n in named.classes] == list(named.classes)
    with pytest.raises(UserError, match="must name every class once"):
        grade_order(named, ("none", "mild", "severe"), True)


@pytest.mark.slow
def test_compare_says_how_many_test_images_pre_training_saw_and_uses_a_held_out_split(tmp_path):
    """Pre-trained on every labelled image (transductive), the BYOL encoder saw the test images of
    every seed; held out with test_fraction, none — and the comparison scores on that split."""
    from byol import evaluate, pretrain
    from conftest import graded_folder

    rows = graded_folder(tmp_path, n=60)
    write_csv(tmp_path / "grades.csv", rows)
    tiny = dict(epochs=1, batch_size=16, hidden_dim=16, projection_dim=8, image_size=16, linear_probe=False,
                knn_every=0, device="cpu")
    pretrain(str(tmp_path / "grades.csv"), out=str(tmp_path / "all"), **tiny)
    seen = evaluate(["byol:" + str(tmp_path / "all"), "random"], data=str(tmp_path / "grades.csv"),
                    protocols=["knn"], seeds=[0, 1], out=str(tmp_path / "cmp-all"))
    assert f"byol:{tmp_path / 'all'} pre-trained on 12 of the 12 test images" in "\n".join(seen.notes)
    held = pretrain(str(tmp_path / "grades.csv"), out=str(tmp_path / "held"), test_fraction=0.2, **tiny)
    assert held.results["scored_on"] == "the test split held out from pre-training, 12 images"
    comparison = evaluate(["byol:" + str(tmp_path / "held"), "random"], data=str(tmp_path / "grades.csv"),
                          protocols=["knn"], seeds=[0, 1], out=str(tmp_path / "cmp-held"))
    notes = "\n".join(comparison.notes)
    assert f"the 12 that byol:{tmp_path / 'held'} held out" in notes and "pre-trained on 0 of the 12 test images" in notes
    with (tmp_path / "held" / "held-out.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 12


def test_fine_tuning_ends_at_or_above_the_probe_on_a_task_both_can_learn(tiny_idx):
    from byol import create_encoder
    from byol.data import load_dataset
    from byol.evaluation.finetune import FinetuneSettings, finetune, predict
    from byol.evaluation.frozen import extract_features

    from byol.data import ImageSet

    dataset = load_dataset(tiny_idx)
    # the square in the top or the bottom half: a task that survives the horizontal flips of fine-tuning
    train, test = (ImageSet(s.images, s.labels // 2) for s in (dataset.train.subset(torch.arange(0, 160)), dataset.test))
    mean, std = dataset.channel_stats()
    encoder = create_encoder("narrow_resnet", 1, None, 16)
    features = [extract_features(encoder, part, mean, std, 16) for part in (train, test)]
    probe = linear_probe(features[0], train.labels, features[1], test.labels, 2)
    result = finetune(encoder, train, None, 2, mean, std, 16, torch.device("cpu"),
                      FinetuneSettings(epochs=10, min_steps=0, batch_size=32), progress=False)
    tuned = (predict(result.model, test, mean, std, 16, torch.device("cpu")).argmax(1) == test.labels).float().mean()
    assert tuned >= probe.accuracy and "head from the probe" in result.note
