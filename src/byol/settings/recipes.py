"""The recipe: pre-training settings derived from the data, and the named recipes.

Every setting left open by the named recipe, the ``--config`` file and the flags is resolved
here from what is known before training — how many images, their size, channels and bit depth,
the architecture and the device — printed once as ``setting = value (why)`` and saved in
config.yaml.  The named recipes are YAML files in ``named/`` (``--recipe NAME``): the
Fashion-MNIST CPU preset, CIFAR, and the paper's ImageNet recipes of 1000 and 300 epochs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..data import DataSplits
from ..models.backbones import family
from .pretrain import PretrainConfig

# Continuing from weights (--init-from): on a validation split of the OCTA-like development set
# it kept the generic weights' linear score best, within noise of the from-scratch settings
# (BENCHMARKS.md, "Starting from weights"); gentler cannot erase what better weights know.
CONTINUED = {"lr_share": 0.1, "why_lr": "continuing from weights: a gentler rate keeps what they know",
             "warmup_share": 1 / 50, "why_warmup": "continuing from weights: a short warm-up",
             "tau": 0.99, "why_tau": "continuing from weights: a slow target, near 1"}
# Short runs: the Fashion-MNIST CPU preset, chosen on a validation split (BENCHMARKS.md).
PRESET_IMAGES, PRESET_EPOCHS, PRESET_STEPS, PRESET_TAU, PRESET_SIZE = 60_000, 8, 1872, 0.95, 28
# Its rate: 4.0 per 256 images for the layers LARS adapts.  Biases and BatchNorm, which LARS
# does not adapt (BYOL §3.3), keep the paper's 0.2: at 4.0 they moved most in short runs on the
# grading sets while the convolutions barely did (BENCHMARKS.md, "Biases and BatchNorm at the
# paper's rate").
PRESET_LR, PAPER_LR = 4.0, 0.2
PRESET_BIAS_NORM_WHY = ("the paper's 0.2 for biases and BatchNorm, which LARS does not adapt: the preset's 4.0 "
                        "would step them 20× as fast (chosen on validation splits of the grading sets)")
# The predictor's weights at 10 × the preset's rate in runs of half the preset's steps or fewer:
# on the grading sets' development sets (280 steps), fine-tuning from the encoder gained 0.26 QWK
# on the dim fundus-like one, where it had trailed random init's by 0.34, and 0.07 on the
# OCTA-like one, the frozen probes within noise (BENCHMARKS.md, "The predictor at ten times the
# rate").  SimSiam keeps the predictor's rate from decaying and DirectPred sets the predictor
# from the features' statistics (Chen & He 2021; Tian et al. 2021): both keep it in step with the
# encoder.  The preset's own 1872 steps keep the paper's single rate, as the preset was chosen.
PREDICTOR_SHARE = 10.0
PREDICTOR_WHY = "10 × base-lr for the predictor in a run of {} steps (chosen on validation splits of grading sets)"
# On a CPU no run sees more pixels than the preset (14–32 min on 2 cores), and a small set gets at
# most this many epochs: 611 images at 64 px take 7 minutes on 2 cores (79 epochs about 14),
# leaving time to evaluate in a quarter of an hour or so.
CPU_MAX_EPOCHS = 40


@dataclass(frozen=True)
class DataFacts:
    """What the recipe knows of the data and the machine before training."""

    images: int     # images pre-training sees
    size: int       # the (median) image's shorter side, px
    channels: int
    bits: int
    files: bool     # image files (decoded to a chosen size), or arrays (used at their own size)
    device: str     # "cpu" or "cuda"


def data_facts(dataset: DataSplits, device: str) -> DataFacts:
    return DataFacts(len(dataset.train), dataset.native_size(), dataset.train.channels, dataset.train.bits,
                     dataset.train.files is not None, device)


def default_image_size(facts: DataFacts) -> int:
    """Arrays at their own size; image files at their shorter side, at most 64 px on a CPU and
    224 on a GPU."""
    return min(facts.size, 64 if facts.device == "cpu" else 224) if facts.files else facts.size


def default_arch(facts: DataFacts, image_size: int | None = None) -> tuple[str, str]:
    """(architecture, why): a narrow ResNet on a CPU; on a GPU ResNet-50 above 64 px, as the paper,
    else ResNet-18 with the small stem, as CIFAR recipes."""
    if facts.device == "cpu":
        return "narrow_resnet", "a CPU: ResNet-18's layout at half width, one block per stage, 1.2 M parameters"
    if (image_size or facts.size) > 64:
        return "resnet50", "a GPU: ResNet-50 for images above 64 px, as the paper"
    return "resnet18", "a GPU: ResNet-18 with the small stem for small images, as CIFAR recipes"


# A time budget (--time-budget) on image files: the view sizes it may spend its time on, and
# the fewest epochs worth a larger view.  Measured at equal wall-clock on validation splits of
# the development sets (BENCHMARKS.md, "Resolution or epochs"): the OCTA-like scans did best at
# 64 px with the most epochs, the fundus-like images were at chance there and best at 128–224 px;
# 20 epochs is the compromise that fell to chance on neither.  Choosing the size on the labels,
# as the views are chosen, would serve both.
BUDGET_SIZES = (64, 96, 128, 224)
BUDGET_MIN_EPOCHS = 20


def budget_sizes(facts: DataFacts) -> list[int]:
    """The view sizes a time budget chooses among: image files up to their own size (at least the
    smallest); arrays at their own size."""
    if not facts.files:
        return [facts.size]
    return [s for s in BUDGET_SIZES if s <= facts.size] or [min(facts.size, BUDGET_SIZES[0])]


def budget_size(epochs_at: dict[int, int], facts: DataFacts) -> tuple[int, str]:
    """(view size, why): the largest size the budget affords ``BUDGET_MIN_EPOCHS`` at, else the
    smallest (``epochs_at``: the epochs each size fits)."""
    affordable = [size for size, epochs in epochs_at.items() if epochs >= BUDGET_MIN_EPOCHS]
    if affordable:
        return max(affordable), f"the largest view with at least {BUDGET_MIN_EPOCHS} epochs in the budget"
    return min(epochs_at), f"no view affords {BUDGET_MIN_EPOCHS} epochs: the smallest, for the most epochs"


def _power_of_two_at_least(value: float) -> int:
    return 2 ** max(0, math.ceil(math.log2(max(1.0, value))))


class Rules:
    """The settings ``config`` leaves open, filled in the order the rules depend on each other;
    each (setting, value, why) is kept to print.  A setting already given is never changed."""

    def __init__(self, config: PretrainConfig):
        self.values, self.found = config.to_dict(), []

    def __call__(self, name: str, value, why: str) -> None:
        if self.values.get(name) is None:
            self.values[name] = value
            self.found.append((name, value, why))

    def __getitem__(self, name: str):
        return self.values[name]

    def derived(self, name: str) -> bool:
        """Whether a rule, not the user, set ``name``."""
        return any(found == name for found, _, _ in self.found)


def derive(config: PretrainConfig, facts: DataFacts) -> list[tuple[str, object, str]]:
    """(setting, value, why) for every setting ``config`` leaves open (None)."""
    rule = Rules(config)
    _shape(rule, facts)
    _length(rule, facts)
    _optimisation(rule, facts, continued=config.init_from is not None)
    _views(rule, facts)
    rule("knn_every", 0 if facts.images > 200_000 else max(1, rule["epochs"] // 4),
         "only at the end on large sets" if facts.images > 200_000 else "four times in the run")
    return rule.found


def _shape(rule: Rules, facts: DataFacts) -> None:
    """The encoder, the views' size and the batch."""
    cpu = facts.device == "cpu"
    rule("arch", *default_arch(facts, rule["image_size"]))
    rule("image_size", default_image_size(facts), f"the images' shorter side ({facts.size} px), at most "
         f"{64 if cpu else 224} px on a {'CPU' if cpu else 'GPU'}" if facts.files else "the arrays' own size")
    if cpu:
        rule("batch_size", min(256, _power_of_two_at_least(facts.images / 10)),
             "256, or for small sets the power of two nearest above a tenth of the images (about 10 steps an epoch)")
    else:
        rule("batch_size", min(512 if rule["image_size"] <= 64 else 256, _power_of_two_at_least(facts.images / 10)),
             "512 at up to 64 px, 256 above (fits a 40 GB GPU with ResNet-50), at most a tenth of the images")
    rule("hidden_dim", 1024 if cpu else 4096, "1024 on a CPU (30 % faster steps), the paper's 4096 on a GPU")


def _length(rule: Rules, facts: DataFacts) -> None:
    cpu = facts.device == "cpu"
    rule("epochs", _epochs(facts, rule["image_size"]), f"about {PRESET_EPOCHS} × √({PRESET_IMAGES:,} / "
         f"{facts.images:,} images) on a CPU, at most {CPU_MAX_EPOCHS} and no more pixels than the preset's "
         f"{PRESET_EPOCHS} epochs of {PRESET_IMAGES:,} {PRESET_SIZE}-px images" if cpu
         else f"about 100 × √(50,000 / {facts.images:,} images) on a GPU")


def _optimisation(rule: Rules, facts: DataFacts, continued: bool) -> None:
    """The optimizer, its rate and decay, warm-up and τ — from scratch, or continuing from weights
    (``CONTINUED``: a gentler rate, a short warm-up, a slower target)."""
    vit = family(rule["arch"]) == "vit"
    rule("optimizer", "adamw" if vit else "lars", "AdamW for a ViT (LARS does not train them well)" if vit
         else "LARS, as the paper")
    steps = rule["epochs"] * max(1, facts.images // rule["batch_size"])
    _rates(rule, facts, steps, continued)
    if rule["optimizer"] == "adamw":
        rule("weight_decay", 0.05, "AdamW's decoupled weight decay for ViTs")
    else:
        rule("weight_decay", 1e-5, "CIFAR recipes (the paper: 1.5e-6 at 1000 ImageNet epochs)")
    if continued:
        rule("warmup_epochs", round(rule["epochs"] * CONTINUED["warmup_share"], 3), CONTINUED["why_warmup"])
        rule("base_target_momentum", CONTINUED["tau"], CONTINUED["why_tau"])
    rule("warmup_epochs", round(rule["epochs"] / 16, 3), "a sixteenth of the run (the preset's 0.5 of 8 epochs)")
    tau = min(0.996, max(0.9, 1 - (1 - PRESET_TAU) * math.sqrt(PRESET_STEPS / max(steps, 1))))
    rule("base_target_momentum", round(tau, 4), f"the target's memory grows as √(steps): {steps} steps "
         f"(0.95 at the preset's {PRESET_STEPS}, 0.996 at the paper's 300k; range 0.9–0.996)")


def _rates(rule: Rules, facts: DataFacts, steps: int, continued: bool) -> None:
    """``base_lr`` by optimizer and run length; ``bias_norm_lr`` and ``predictor_lr`` the same, except beneath the
    CPU preset's LARS rate."""
    optimizer = rule["optimizer"]
    preset = optimizer == "lars" and facts.device == "cpu" and steps <= 10 * PRESET_STEPS
    if optimizer == "adamw":
        base, why = 1.5e-4, "AdamW per 256 images, as MoCo v3 and DINO train ViTs"
    elif optimizer == "sgd":
        base, why = 0.05, "SGD with momentum per 256 images, as SimSiam (LARS's rates would diverge)"
    elif preset:
        base, why = PRESET_LR, "short CPU runs learn faster with 4.0 (the CPU preset, chosen on a validation split)"
    else:
        base, why = (PAPER_LR, "the paper's 0.2 for large images and ResNet-50") if rule["image_size"] > 64 else \
            (1.0, "CIFAR recipes' 1.0 for small images")
    share = CONTINUED["lr_share"] if continued else 1.0
    if continued:
        base, why = base * share, f"{share:g} × {base:g}: {CONTINUED['why_lr']}"
    rule("base_lr", base, why)
    if preset and rule.derived("base_lr"):  # the preset's rate, not one the user gave (nor a resumed run's)
        rule("bias_norm_lr", PAPER_LR * share, PRESET_BIAS_NORM_WHY + (f" × {share:g}" if continued else ""))
        if steps <= PRESET_STEPS / 2:
            rule("predictor_lr", PREDICTOR_SHARE * base, PREDICTOR_WHY.format(steps))
    rule("bias_norm_lr", rule["base_lr"], "base_lr's")
    rule("predictor_lr", rule["base_lr"], "base_lr's")


def _views(rule: Rules, facts: DataFacts) -> None:
    size, cpu = rule["image_size"], facts.device == "cpu"
    rule("blur", size >= 64, "the paper's blur from 64 px views, its σ scaled to the view" if size >= 64
         else "no blur below 64 px, as CIFAR recipes")
    rule("crop_min_scale", 0.08 if size >= 64 or not cpu else 0.4,
         "the paper's 0.08" if size >= 64 or not cpu else "0.4 for short CPU runs on small images (the CPU preset)")
    plain = facts.channels in (1, 3) and facts.bits == 8
    rule("augmentations", "full" if plain else "microscopy", "the paper's table" if plain else
         f"{facts.channels} channels, {facts.bits}-bit: no colour ops beyond brightness and contrast; rotations")


def _epochs(facts: DataFacts, size: int) -> int:
    """More images, more images seen in all, but fewer passes over each: epochs ∝ 1/√images;
    on a CPU within the preset's cost in pixels seen and ``CPU_MAX_EPOCHS``."""
    if facts.device == "cpu":
        affordable = PRESET_EPOCHS * PRESET_IMAGES * PRESET_SIZE ** 2 / (facts.images * size ** 2)
        wanted = round(PRESET_EPOCHS * math.sqrt(PRESET_IMAGES / facts.images))
        return max(1, min(CPU_MAX_EPOCHS, wanted, math.floor(affordable + 1e-9)))
    return max(1, min(2000, round(100 * math.sqrt(50_000 / facts.images))))


def resolve(config: PretrainConfig, facts: DataFacts) -> tuple[PretrainConfig, list[str]]:
    """``config`` with every open setting derived; and the lines that say what and why."""
    found = derive(config, facts)
    resolved = config.replace(**{name: value for name, value, _ in found})
    width = max((len(name) for name, _, _ in found), default=0)
    return resolved, [f"  {name:<{width}} = {value}  ({why})" for name, value, why in found]
