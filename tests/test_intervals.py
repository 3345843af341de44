"""The paired verdict: a difference with a 95 % interval over test images and seeds (see
``byol/evaluation/intervals.py``) — right where it must be exact, and covering a planted
difference about 95 times in 100 where it must be honest."""
import math

import pytest
import torch

from byol.evaluation.intervals import paired_difference, t_quantile


def test_t_quantiles_are_the_tables():
    for freedom, table in ((1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (math.inf, 1.9600)):
        assert t_quantile(0.975, freedom) == pytest.approx(table, abs=1e-4)


def test_identical_predictions_are_the_same_with_a_zero_width_interval():
    labels = [torch.randint(3, (50,), generator=torch.Generator().manual_seed(s)) for s in range(3)]
    predicted = [torch.randint(3, (50,), generator=torch.Generator().manual_seed(10 + s)) for s in range(3)]
    ids = [torch.arange(50)] * 3
    for metric in ("top1", "qwk", "balanced_accuracy", "macro_f1"):
        same = paired_difference(predicted, [p.clone() for p in predicted], labels, ids, 3, metric)
        assert (same.estimate, same.low, same.high, same.verdict) == (0.0, 0.0, 0.0, "same")


def test_a_spread_of_zero_over_seeds_still_counts_the_test_images():
    """k-NN with every label is deterministic: three seeds, the same predictions — the seeds'
    spread is 0, and the interval is the test images' alone, not a point."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(3, (60,), generator=generator)
    a = torch.where(torch.rand(60, generator=generator) < 0.7, labels, (labels + 1) % 3)
    b = torch.where(torch.rand(60, generator=generator) < 0.65, labels, (labels + 1) % 3)
    difference = paired_difference([a] * 3, [b] * 3, [labels] * 3, [torch.arange(60)] * 3, 3, "top1")
    observed = (a == labels).float().mean() - (b == labels).float().mean()
    assert difference.estimate == pytest.approx(observed.item())
    assert difference.high - difference.low > 0.1  # 60 test images cannot pin a difference to a point
    assert difference.low < difference.estimate < difference.high


def test_a_clear_difference_is_better_its_mirror_worse_and_one_seed_gives_no_verdict():
    generator = torch.Generator().manual_seed(1)
    labels = [torch.randint(3, (300,), generator=generator) for _ in range(3)]
    good = [torch.where(torch.rand(300, generator=generator) < 0.9, y, (y + 1) % 3) for y in labels]
    poor = [torch.where(torch.rand(300, generator=generator) < 0.5, y, (y + 1) % 3) for y in labels]
    ids = [torch.arange(300) + 1000 * s for s in range(3)]  # a test split drawn anew per seed
    assert paired_difference(good, poor, labels, ids, 3, "qwk").verdict == "better"
    worse = paired_difference(poor, good, labels, ids, 3, "top1")
    assert worse.verdict == "worse" and worse.high < 0
    lone = paired_difference(good[:1], poor[:1], labels[:1], ids[:1], 3, "top1")
    assert lone.verdict == "one seed: no verdict" and lone.low > 0  # its interval: the test images alone


def simulate(shared: bool, repeats: int, planted_skill: float, seed: int) -> float:
    """How often the interval holds the true difference of top-1, over ``repeats`` comparisons.

    A population of images, each with a difficulty; grades 0/1/2 in DRAC's proportions.  Two
    encoders whose chance of being right on an image is sigmoid(skill + seed effect − difficulty);
    each comparison draws its test images (once, or anew for each of 3 seeds) and the encoders'
    seed effects, then asks for the interval.  The truth is the expected difference over
    images and seeds, from a million draws."""
    generator = torch.Generator().manual_seed(seed)
    skill_a, skill_b, seed_spread, n_test, seeds = 1.0 + planted_skill, 1.0, 0.8, 120, 3

    def correct(skill, effect, difficulty):
        return torch.rand(difficulty.shape, generator=generator) < torch.sigmoid(skill + effect - difficulty)

    def draw_images(n):
        return torch.randn(n, generator=generator) * 1.5, torch.multinomial(
            torch.tensor([328.0, 213.0, 70.0]), n, replacement=True, generator=generator)

    big = torch.randn(1_000_000, generator=generator) * 1.5
    effects = torch.randn(2, 1_000_000, generator=generator) * seed_spread
    truth = (torch.sigmoid(skill_a + effects[0] - big) - torch.sigmoid(skill_b + effects[1] - big)).mean().item()
    covered = 0
    for _ in range(repeats):
        fixed = draw_images(n_test)
        a, b, labels, ids = [], [], [], []
        for s in range(seeds):
            difficulty, grade = fixed if shared else draw_images(n_test)
            wrong = (grade + 1 + torch.randint(2, grade.shape, generator=generator)) % 3
            effect_a, effect_b = (torch.randn(2, generator=generator) * seed_spread).tolist()
            a.append(torch.where(correct(skill_a, effect_a, difficulty), grade, wrong))
            b.append(torch.where(correct(skill_b, effect_b, difficulty), grade, wrong))
            labels.append(grade)
            ids.append(torch.arange(n_test) + (0 if shared else 10_000 * (s + 1)))
        result = paired_difference(a, b, labels, ids, 3, "top1", resamples=400)
        covered += result.low <= truth <= result.high
    return covered / repeats


@pytest.mark.parametrize("shared", [True, False], ids=["one test set for every seed", "a test split per seed"])
def test_the_interval_covers_a_planted_difference_about_95_times_in_100(shared):
    coverage = simulate(shared, repeats=300, planted_skill=0.4, seed=0 if shared else 1)
    assert 0.90 <= coverage <= 0.995, coverage  # 95 %: 200 repeats put 1.5 points of noise on it


def test_fine_tuning_is_read_beside_its_own_probe_and_a_fall_to_one_class_is_named():
    """Each encoder's fine-tune row against its own linear row, seed by seed on the same test
    images: a fine-tuning that predicts one grade is counted and named — called worse where its
    probe was good, and named even where its probe was at chance; one that equals its probe is
    the same; an encoder without a linear row gets no check."""
    from byol.evaluation.tables import Comparison

    generator, rows = torch.Generator().manual_seed(2), []
    for seed in range(3):
        labels = torch.randint(3, (120,), generator=generator)
        good = torch.where(torch.rand(120, generator=generator) < 0.85, labels, (labels + 1) % 3)
        guess, one_grade = torch.randint(3, (120,), generator=generator), torch.zeros(120, dtype=torch.long)
        for init, protocol, predicted in (("collapsed", "linear", good), ("collapsed", "finetune", one_grade),
                                          ("steady", "linear", good), ("steady", "finetune", good.clone()),
                                          ("chance", "linear", guess), ("chance", "finetune", one_grade),
                                          ("alone", "finetune", good)):
            rows.append({"init": init, "protocol": protocol, "label_fraction": 1.0, "labels": 480, "seed": seed,
                         "predicted": predicted, "test_labels": labels, "test_ids": torch.arange(120),
                         "top1": (predicted == labels).float().mean().item()})
    comparison = Comparison(rows, "top1", 3)
    checks = {c["init"]: c for c in comparison.against_probe()}
    assert set(checks) == {"collapsed", "steady", "chance"}
    collapsed, steady = checks["collapsed"], checks["steady"]
    assert (collapsed["verdict"], collapsed["below"], collapsed["one_class"], collapsed["seeds"]) == ("worse", 3, 3, 3)
    assert collapsed["high"] < 0 < 0.5 < -collapsed["difference"]
    assert (steady["verdict"], steady["below"], steady["one_class"], steady["difference"]) == ("same", 0, 0, 0.0)
    markdown = comparison.markdown()
    assert "| collapsed | 100 % | " in markdown and "3 of 3" in markdown
    assert checks["chance"]["verdict"] == "within noise" and checks["chance"]["one_class"] == 3
    assert "predicted one class, for chance (100 %), collapsed (100 %)" in markdown and "steady (100 %)" not in markdown
    alone = Comparison([row for row in rows if row["init"] == "collapsed"], "top1", 3).markdown()
    assert "3 of 3" in alone and "predicted one class, for collapsed (100 %)" in alone  # one encoder: no pair
