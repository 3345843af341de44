"""Pre-training settings: ``PretrainConfig``, one dataclass from which ``byol pretrain``'s flags,
the YAML keys of ``--config`` files, the help text and the validation all come
(``mechanism.py``); and how a run's settings are put together (``requested``, ``resumed``).

Precedence, lowest first: what the recipe derives from the data (``recipes.py``; on
Fashion-MNIST on a CPU, the CPU preset), a named recipe (``--recipe NAME``: ``named/*.yaml``,
CIFAR and the paper's ImageNet ones), the ``--config`` YAML file, the flags.  A resumed run
takes its saved config.yaml, of which only ``RESUMABLE_OPTIONS`` may change.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..base.errors import UserError, setting
from ..models.methods import HEAD_NORMS, method_names
from ..optim.lars import OPTIMIZERS
from ..views.spec import AUGMENTATION_SETS
from .mechanism import is_finite, load_yaml, option, require
from .options import CompileOptions, DataOptions, DeviceOption, KnnOptions

RECIPES = Path(__file__).parent / "named"  # the named recipes: YAML files of settings


def recipe_names() -> list[str]:
    return ["auto"] + sorted(path.stem for path in RECIPES.glob("*.yaml"))


def recipe_values(name: str) -> dict:
    """The settings of a named recipe ({} for auto)."""
    return {} if name == "auto" else load_yaml(RECIPES / f"{name}.yaml")


@dataclass
class PretrainConfig(CompileOptions, KnnOptions, DeviceOption, DataOptions):
    """Everything that defines a pre-training run; ``byol pretrain --help`` lists it with advice."""

    unlabeled: tuple[str, ...] = option((), "more images for pre-training only (folders, CSVs, any format): e.g. a "
                                        "challenge's other tasks and its test images; their labels are ignored")
    mean: tuple[float, ...] | None = option(None, "per-channel mean for normalisation in [0, 1], e.g. 0.485,0.456,0.406; default: computed from the training images")
    std: tuple[float, ...] | None = option(None, "per-channel std for normalisation, e.g. 0.229,0.224,0.225; default: computed from the training images")
    stream: bool | None = option(None, "decode image files batch by batch from disk instead of all into memory; default: stream only when they would take over a quarter of the free RAM")
    out: str = option("runs/fashion-mnist", "run directory: config, metrics, checkpoints, encoder weights")
    overwrite: bool = option(False, "delete a non-empty run directory first instead of refusing")
    resume: bool = option(False, "continue the run in --out from checkpoints/last.pt with its saved config")
    init_from: str | None = option(None, "start a NEW run from these encoder weights (encoder.safetensors); not with --resume")
    stop_after: int | None = option(None, "stop after this many epochs of this invocation (for time-limited jobs); continue with --resume")
    checkpoint_every: str | None = option(None, "also checkpoint inside epochs, every N steps (e.g. 500) or minutes "
                                          "(e.g. 30m), for long epochs on preemptible machines; SIGTERM and Ctrl-C "
                                          "always checkpoint at the current step [default: at the end of each epoch]")
    # method
    method: str = option("byol", "byol (the paper) or simclr (the contrastive baseline: NT-Xent, same encoder, "
                         "views, optimiser and loop)", choices=tuple(method_names()))
    temperature: float = option(0.5, "simclr: NT-Xent temperature (SimCLR's best on CIFAR-10; 0.1 on ImageNet "
                                "with large batches)")
    predictor: bool = option(True, "byol: the predictor q; --no-predictor is the paper's ablation (it collapses)")
    target_momentum: float | None = option(None, "byol: a fixed tau instead of the cosine schedule; 0 makes the "
                                           "target the online network, 1 a frozen random network (ablations)")
    head_norm: str = option("batchnorm", "normalisation in the projector/predictor hidden layer: batchnorm (the "
                            "paper), layernorm or none (ablations)", choices=HEAD_NORMS)
    augmentations: str | None = option(None, "full (the paper's table); geometric (crops, both flips, any rotation: "
                                       "scans graded by the darkness or extent of what they show); fundus or "
                                       "microscopy (rotations, both flips, milder colour); crop-colour or crop (the "
                                       "paper's ablation); default: chosen on the labels' validation split for "
                                       "labelled sets of 400 to 20,000 images, else full (microscopy for N-band or "
                                       "16-bit images); look with byol views", choices=AUGMENTATION_SETS)
    # model
    recipe: str = option("auto", "named settings to start from: fashion-mnist-cpu, cifar, imagenet, imagenet-300 "
                         "(byol/recipes/*.yaml); auto derives every open setting from the data and the device; "
                         "--config and flags override either", choices=tuple(recipe_names()))
    arch: str | None = option(None, "encoder: narrow_resnet (1.2 M parameters, for CPUs), any torchvision model "
                              "(resnet18, efficientnet_b0, ...) or timm:NAME; default: narrow_resnet on a CPU, "
                              "resnet18 / resnet50 on a GPU")
    small_stem: bool | None = option(None, "3x3 stem without max-pool (stride 1; stride 2 in narrow_resnet); default: on for images <= 64 px")
    image_size: int | None = option(None, "side of the augmented views; default: the arrays' own side; for image "
                                    "files their shorter side, at most 64 px on a CPU and 224 on a GPU")
    hidden_dim: int | None = option(None, "hidden width of projector and predictor; default: 1024 on a CPU (30 % "
                                    "faster steps), the paper's 4096 on a GPU")
    projection_dim: int = option(256, "output width of projector and predictor (paper: 256)")
    # optimisation
    epochs: int | None = option(None, "pre-training epochs (paper: 1000 on ImageNet, 300 in ablations); default: "
                                "8 × √(60,000 / images) on a CPU, 100 × √(50,000 / images) on a GPU")
    batch_size: int | None = option(None, "global batch; the learning rate scales with it (paper: 4096, BYOL is "
                                    "robust down to 256); default: 256 on a CPU, 512 / 256 on a GPU, smaller for small sets")
    optimizer: str | None = option(None, "lars (the paper), sgd (momentum 0.9) or adamw; default: lars, adamw for ViTs",
                                   choices=OPTIMIZERS)
    base_lr: float | None = option(None, "learning rate for batch 256, scaled by batch/256 (paper ImageNet: 0.2; CIFAR "
                                   "recipes ~1.0 with LARS; AdamW ~1.5e-4); default: from the run's length")
    bias_norm_lr: float | None = option(None, "the same for biases and normalisation parameters, which LARS does not "
                                        "adapt (the paper: base-lr's 0.2); default: 0.2 where the CPU recipe raises "
                                        "base-lr to 4.0 for LARS's layers, else base-lr")
    predictor_lr: float | None = option(None, "the same for the predictor's weights; default: 10 × base-lr where the "
                                        "CPU recipe derives base-lr 4.0 for a run of at most 936 steps (fine-tuning "
                                        "from the encoder gained on the grading sets), else base-lr (the paper)")
    weight_decay: float | None = option(None, "weight decay on weights, not on biases or norm parameters (paper: "
                                        "1.5e-6; CIFAR recipes 1e-5; AdamW 0.05)")
    trust_coefficient: float = option(1e-3, "LARS's trust coefficient η (the paper: 1e-3; solo-learn's CIFAR recipe "
                                      "0.02 with lars-clip)")
    lars_clip: bool = option(False, "clip each layer's LARS learning rate at the global one (solo-learn, LARC)")
    warmup_epochs: float | None = option(None, "linear warm-up before the cosine decay (paper: 10 of 1000 epochs); "
                                         "default: 6 % of the run")
    base_target_momentum: float | None = option(None, "tau at step 0, cosine-scheduled to 1 (paper ImageNet 0.996; "
                                                "CIFAR recipes 0.99); default: from the run's length, 0.95 for the "
                                                "CPU preset's 1,872 steps")
    # augmentation
    blur: bool | None = option(None, "Gaussian blur in the views (p = 1.0 / 0.1, σ scaled to the view); default: on "
                               "from 64 px views (CIFAR-scale recipes drop it below)")
    crop_min_scale: float | None = option(None, "smallest crop area fraction of the random resized crop (paper: "
                                          "0.08); default: 0.08, 0.4 for short CPU runs on small images")
    # monitoring and evaluation
    knn_every: int | None = option(None, "k-NN accuracy on the labelled test split (or a validation split of the "
                                   "labels when there is none) every N epochs (0 = only at the end); default: four "
                                   "times in a run, only at the end above 200,000 images")
    choose_augmentations: bool | None = option(None, "choose the views (augmentation set and crop scale) by short "
                                               "proxy runs scored on a validation split of the labels; default: for "
                                               "sets of up to 20,000 images with 400 labels or more whose "
                                               "--augmentations and --crop-min-scale are not given (the table is "
                                               "saved as choice.csv)")
    time_budget: str | None = option(None, "wall-clock minutes for pre-training, views chosen included (e.g. 15m): "
                                     "the view size and the epochs are set from step times measured at the start "
                                     "[default: none; the recipe's epochs]")
    test_fraction: float = option(0.0, "labelled data without a test split: hold this stratified share out as a "
                                  "test split that pre-training never sees (the held-out set-up; byol compare scores "
                                  "on it); 0: every image pre-trains, as in a challenge whose test images are at hand, "
                                  "and progress is shown on a validation split of the labels")
    linear_probe: bool = option(True, "fit a logistic-regression probe on frozen features at the end")
    seed: int = option(0, "seed for initialisation, data order and augmentation")
    sync_bn: bool | None = option(None, "with several processes (torchrun): BatchNorm statistics over the global "
                                  "batch, as in the paper [default: on with more than one process]")
    log_every: int = option(20, "steps between progress updates (each reads the loss back from the device)")

    def check(self) -> None:
        super().check()
        unset = lambda value: value is None  # noqa: E731  (left to the recipe)
        require(unset(self.epochs) or self.epochs >= 1, "epochs", f"must be at least 1, got {self.epochs}")
        require(unset(self.batch_size) or self.batch_size >= 2, "batch_size",
                f"must be at least 2 (BatchNorm needs two images), got {self.batch_size}")
        require(unset(self.base_lr) or (self.base_lr > 0 and is_finite(self.base_lr)), "base_lr",
                f"must be a positive number, got {self.base_lr}")
        require(unset(self.bias_norm_lr) or (self.bias_norm_lr > 0 and is_finite(self.bias_norm_lr)), "bias_norm_lr",
                f"must be a positive number, got {self.bias_norm_lr}")
        require(unset(self.predictor_lr) or (self.predictor_lr > 0 and is_finite(self.predictor_lr)), "predictor_lr",
                f"must be a positive number, got {self.predictor_lr}")
        require(unset(self.weight_decay) or self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(self.trust_coefficient > 0, "trust_coefficient", f"must be positive, got {self.trust_coefficient}")
        require(unset(self.warmup_epochs) or self.warmup_epochs >= 0, "warmup_epochs",
                f"must be >= 0, got {self.warmup_epochs}")
        require(unset(self.base_target_momentum) or 0 <= self.base_target_momentum <= 1, "base_target_momentum",
                f"must be in [0, 1], got {self.base_target_momentum}")
        require(unset(self.crop_min_scale) or 0 < self.crop_min_scale <= 1, "crop_min_scale",
                f"must be in (0, 1], got {self.crop_min_scale}")
        require(unset(self.hidden_dim) or self.hidden_dim >= 1, "hidden_dim", f"must be at least 1, got {self.hidden_dim}")
        require(self.temperature > 0, "temperature", f"must be positive, got {self.temperature}")
        require(self.target_momentum is None or 0 <= self.target_momentum <= 1, "target_momentum",
                f"must be in [0, 1], got {self.target_momentum}")
        require(self.method == "byol" or (self.predictor and self.target_momentum is None), "method",
                f"{self.method}: {setting('target_momentum')} and turning off {setting('predictor')} are BYOL ablations, "
                f"and {self.method} has no target network and no predictor")
        require(unset(self.knn_every) or self.knn_every >= 0, "knn_every", f"must be >= 0, got {self.knn_every}")
        require(0 <= self.test_fraction < 1, "test_fraction", f"{self.test_fraction}: give a share in [0, 1), e.g. 0.2")
        require(self.stop_after is None or self.stop_after >= 1, "stop_after", f"must be at least 1, got {self.stop_after}")
        require(not (self.resume and self.init_from), "init_from", f"starts a new run, {setting('resume')} continues one: give only one")
        require(self.image_size is None or self.image_size >= 8, "image_size", f"must be at least 8, got {self.image_size}")
        require(self.log_every >= 1, "log_every", f"must be at least 1, got {self.log_every}")
        require(self.checkpoint_every is None or self.checkpoint_interval is not None, "checkpoint_every",
                f"{self.checkpoint_every}: give a number of steps (500) or of minutes (30m)")
        for name in ("mean", "std"):
            values = getattr(self, name)
            require(values is None or all(is_finite(v) and (v > 0 or name == "mean") for v in values), name,
                    f"needs finite values{' > 0' if name == 'std' else ''}, got {values}")
        require(self.time_budget is None or self.budget_seconds is not None, "time_budget",
                f"{self.time_budget}: give minutes, e.g. 15m or 90m")

    @property
    def budget_seconds(self) -> float | None:
        """``time_budget`` in seconds; None when not set or not understood."""
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(m|min|minutes?)?\s*", self.time_budget or "")
        return 60 * float(match.group(1)) if match and float(match.group(1)) > 0 else None

    @property
    def checkpoint_interval(self) -> tuple[str, float] | None:
        """``checkpoint_every`` as ("steps", N) or ("minutes", M); None when not set or not understood."""
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(m|min|minutes?)?\s*", self.checkpoint_every or "")
        if not match or float(match.group(1)) <= 0 or (match.group(2) is None and "." in match.group(1)):
            return None
        return ("minutes", float(match.group(1))) if match.group(2) else ("steps", int(match.group(1)))


# Options that may change when a run is resumed; everything else defines the run.  Those of one
# invocation are as asked each time; the others keep the run's own unless given again.
PER_INVOCATION = {"resume", "stop_after", "overwrite", "out"}
RESUMABLE_OPTIONS = PER_INVOCATION | {"device", "log_every", "sync_bn", "compile", "compile_mode", "checkpoint_every"}


def requested(config_file: str | Path | None, given: dict) -> tuple[PretrainConfig, set[str]]:
    """The run as the user asked for it — the named recipe beneath the ``--config`` file beneath
    ``given`` — with the settings still open (None) for the data to decide; and the names the
    user set."""
    config, names = PretrainConfig.resolve(config_file, given,
                                           beneath=lambda user: recipe_values(user.get("recipe", "auto")))
    require(not {"time_budget", "epochs"} <= names, "time_budget",
            f"sets the epochs from the time; give {setting('time_budget')} or {setting('epochs')}, not both")
    return config, names


def resumed(saved: dict, asked: PretrainConfig, given: set[str]) -> PretrainConfig:
    """The run in ``out`` as its config.yaml recorded it, with the ``RESUMABLE_OPTIONS`` the user
    gave now (those of one invocation always as asked now); any other setting given that
    differs is refused."""
    config = PretrainConfig.create(**saved)
    changed = sorted(name for name in given - RESUMABLE_OPTIONS if getattr(asked, name) != getattr(config, name))
    if changed:
        raise UserError(f"{setting('resume')} continues the run as configured; these settings differ from its "
                        f"config.yaml: {', '.join(changed)} (start a new run with {setting('out')}, or "
                        f"{setting('init_from')} its encoder)")
    return config.replace(**{name: getattr(asked, name) for name in RESUMABLE_OPTIONS & given | PER_INVOCATION})
