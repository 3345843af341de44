"""Pre-training settings: dataclass defaults, then an optional YAML file, then CLI flags.

The defaults are the CPU preset on Fashion-MNIST (what ``byol pretrain`` runs with
no arguments).  ``configs/*.yaml`` hold the paper's ImageNet and CIFAR recipes.
Each field's ``help`` is the CLI's help text.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from .augment import AUGMENTATION_SETS
from .methods import HEAD_NORMS, method_names


class UserError(Exception):
    """Something the user can fix: the message is one line saying what and how."""


def first_line(error: BaseException) -> str:
    """A library's exception text cut to its first line, to quote inside a one-line UserError."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def option(default, help: str, **metadata):
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class PretrainConfig:
    # where
    data: str | None = option(None, "dataset folder or file (idx, CIFAR, STL-10, image folder, image,label CSV, MedMNIST .npz); default: Fashion-MNIST from the Debian package dataset-fashion-mnist")
    dataset: str | None = option(None, "force the format of --data instead of recognising it: idx, cifar10, cifar100, stl10, npz, csv, folder")
    strict: bool = option(False, "stop on unreadable image files instead of skipping them with a warning")
    mean: str | None = option(None, "per-channel mean for normalisation, comma-separated in [0, 1] (e.g. 0.485,0.456,0.406); default: computed from the training images")
    std: str | None = option(None, "per-channel std for normalisation, comma-separated (e.g. 0.229,0.224,0.225); default: computed")
    stream: bool | None = option(None, "decode image files batch by batch from disk instead of all into memory; default: stream only when they would take over a quarter of the free RAM")
    out: str = option("runs/fashion-mnist", "run directory: config, metrics, checkpoints, encoder weights")
    overwrite: bool = option(False, "delete a non-empty run directory first instead of refusing")
    resume: bool = option(False, "continue the run in --out from checkpoints/last.pt with its saved config")
    init_from: str | None = option(None, "start a NEW run from these encoder weights (encoder.safetensors); not with --resume")
    stop_after: int | None = option(None, "stop after this many epochs of this invocation (for time-limited jobs); continue with --resume")
    # method
    method: str = option("byol", "byol (the paper) or simclr (the contrastive baseline: NT-Xent, same encoder, "
                         "views, optimiser and loop)")
    temperature: float = option(0.5, "simclr: NT-Xent temperature (SimCLR's best on CIFAR-10; 0.1 on ImageNet "
                                "with large batches)")
    predictor: bool = option(True, "byol: the predictor q; --no-predictor is the paper's ablation (it collapses)")
    target_momentum: float | None = option(None, "byol: a fixed tau instead of the cosine schedule; 0 makes the "
                                           "target the online network, 1 a frozen random network (ablations)")
    head_norm: str = option("batchnorm", "normalisation in the projector/predictor hidden layer: batchnorm (the "
                            "paper), layernorm or none (ablations)")
    augmentations: str = option("full", "full (the paper's table), crop-colour (crop, flip, colour jitter, "
                                "grayscale) or crop (crop and flip only): the augmentation ablation")
    # model
    arch: str = option("narrow_resnet", "encoder: narrow_resnet (CPU preset, 1.2 M parameters), resnet18, resnet34, resnet50")
    small_stem: bool | None = option(None, "3x3 stem without max-pool (stride 1; stride 2 in narrow_resnet); default: on for images <= 64 px")
    image_size: int | None = option(None, "side of the augmented views; default: the dataset's own side")
    hidden_dim: int = option(1024, "hidden width of projector and predictor (paper: 4096; 1024 saves 30 % of a CPU step)")
    projection_dim: int = option(256, "output width of projector and predictor (paper: 256)")
    # optimisation
    epochs: int = option(8, "pre-training epochs (paper: 1000 on ImageNet, 300 in ablations)")
    batch_size: int = option(256, "global batch; the learning rate scales with it (paper: 4096, BYOL is robust down to 256)")
    optimizer: str = option("lars", "lars (the paper), sgd (momentum 0.9) or adamw")
    base_lr: float = option(4.0, "learning rate for batch 256, scaled by batch/256 (paper ImageNet: 0.2; CIFAR recipes ~1.0 with LARS; adamw ~1e-3)")
    weight_decay: float = option(1e-5, "weight decay on weights, not on biases or norm parameters (paper: 1.5e-6; CIFAR recipes 1e-5)")
    warmup_epochs: float = option(0.5, "linear warm-up before the cosine decay (paper: 10 of 1000 epochs)")
    base_target_momentum: float = option(0.95, "tau at step 0, cosine-scheduled to 1 (paper ImageNet 0.996; CIFAR recipes 0.99; runs of a few epochs learn faster with 0.95)")
    # augmentation
    blur: bool = option(False, "Gaussian blur in the views (p = 1.0 / 0.1); CIFAR-scale recipes drop it below 64 px")
    crop_min_scale: float = option(0.4, "smallest crop area fraction of the random resized crop (paper: 0.08; the CPU preset uses 0.4: few epochs, 28 px images)")
    # monitoring and evaluation
    knn_every: int = option(2, "k-NN accuracy on the labelled test split every N epochs (0 = only at the end)")
    knn_k: int = option(200, "neighbours in the k-NN vote")
    knn_temperature: float = option(0.1, "temperature of the k-NN vote weights exp(sim / T)")
    linear_probe: bool = option(True, "fit a logistic-regression probe on frozen features at the end")
    seed: int = option(0, "seed for initialisation, data order and augmentation")
    compile: bool = option(False, "torch.compile the forward passes (a minute of compiling first; check the gain "
                           "with byol bench --compile on your machine)")
    sync_bn: bool | None = option(None, "with several processes (torchrun): BatchNorm statistics over the global "
                                  "batch, as in the paper [default: on with more than one process]")
    device: str = option("auto", "cuda, cpu, or auto (cuda when available)")
    log_every: int = option(20, "steps between progress updates (each reads the loss back from the device)")


FIELDS = {f.name: f for f in dataclasses.fields(PretrainConfig)}
# Options that may change when a run is resumed; everything else defines the run.
RESUMABLE_OPTIONS = {"resume", "stop_after", "device", "log_every", "overwrite", "out", "sync_bn", "compile"}


def _coerce(name: str, value):
    """Check a YAML or flag value against the field's type; one-line error otherwise."""
    if name not in FIELDS:
        raise UserError(f"unknown setting '{name}'; see 'byol pretrain --help' for the list")
    default = FIELDS[name].default
    kind = type(default) if default is not None else None
    annotation = str(FIELDS[name].type)
    if value is None:
        if "None" in annotation:
            return None
        raise UserError(f"setting '{name}' cannot be empty")
    try:
        if kind is bool or "bool" in annotation:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if "int" in annotation and "float" not in annotation:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if "float" in annotation:
            return float(value)
        if isinstance(value, (list, tuple)):  # YAML lists, for --mean / --std
            return ",".join(str(v) for v in value)
        return str(value)
    except (TypeError, ValueError):
        raise UserError(f"setting '{name}' expects {annotation}, got {value!r}") from None


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserError(f"config file {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise UserError(f"config file {path} must be a mapping of setting: value")
    return values


def resolve_config(yaml_path: str | Path | None = None, overrides: dict | None = None) -> PretrainConfig:
    """Defaults, then the YAML file, then ``overrides`` (the flags given on the command line)."""
    values = {}
    if yaml_path is not None:
        values.update(load_yaml(yaml_path))
    values.update(overrides or {})
    config = PretrainConfig(**{name: _coerce(name, value) for name, value in values.items()})
    validate(config)
    return config


def validate(config: PretrainConfig) -> None:
    checks = [
        (config.epochs >= 1, f"--epochs must be at least 1, got {config.epochs}"),
        (config.batch_size >= 2, f"--batch-size must be at least 2 (BatchNorm needs two images), got {config.batch_size}"),
        (config.base_lr > 0, f"--base-lr must be positive, got {config.base_lr}"),
        (config.weight_decay >= 0, f"--weight-decay must be >= 0, got {config.weight_decay}"),
        (config.warmup_epochs >= 0, f"--warmup-epochs must be >= 0, got {config.warmup_epochs}"),
        (0 <= config.base_target_momentum <= 1, f"--base-target-momentum must be in [0, 1], got {config.base_target_momentum}"),
        (0 < config.crop_min_scale <= 1, f"--crop-min-scale must be in (0, 1], got {config.crop_min_scale}"),
        (config.optimizer in ("lars", "sgd", "adamw"), f"--optimizer must be lars, sgd or adamw, got '{config.optimizer}'"),
        (config.method in method_names(), f"--method must be one of {', '.join(method_names())}, got '{config.method}'"),
        (config.temperature > 0, f"--temperature must be positive, got {config.temperature}"),
        (config.target_momentum is None or 0 <= config.target_momentum <= 1,
         f"--target-momentum must be in [0, 1], got {config.target_momentum}"),
        (config.method == "byol" or (config.predictor and config.target_momentum is None),
         f"--no-predictor and --target-momentum are BYOL ablations; --method {config.method} has no predictor "
         "and no target network"),
        (config.head_norm in HEAD_NORMS, f"--head-norm must be one of {', '.join(HEAD_NORMS)}, got '{config.head_norm}'"),
        (config.augmentations in AUGMENTATION_SETS,
         f"--augmentations must be one of {', '.join(AUGMENTATION_SETS)}, got '{config.augmentations}'"),
        (config.device in ("auto", "cpu", "cuda") or config.device.startswith("cuda:"), f"--device must be auto, cpu or cuda, got '{config.device}'"),
        (config.knn_every >= 0 and config.knn_k >= 1, "--knn-every must be >= 0 and --knn-k >= 1"),
        (config.stop_after is None or config.stop_after >= 1, f"--stop-after must be at least 1, got {config.stop_after}"),
        (not (config.resume and config.init_from), "--resume continues a run, --init-from starts a new one: give only one"),
        (config.image_size is None or config.image_size >= 8, f"--image-size must be at least 8, got {config.image_size}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def save_config(config: PretrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))


def resolve_device(name: str) -> torch.device:
    """The --device setting as a torch device: auto means CUDA when PyTorch sees a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but PyTorch sees no CUDA GPU; use --device cpu")
    return torch.device(name)
