"""The pre-training loop: data → two views → the method's loss → optimizer step → EMA → monitor.

``pretrain(config)`` is what ``byol pretrain`` calls.  The run directory it writes:

    config.yaml            the effective settings (defaults < YAML < flags)
    metrics.csv            one row per epoch: loss, lr, τ, images/s, data wait, k-NN accuracy
    tensorboard/           per-step scalars, when TensorBoard is installed
    checkpoints/last.pt    everything needed to resume, rewritten every epoch
    encoder.safetensors    the online encoder, loadable with ``byol.load_encoder``
    results.json           final k-NN and linear-probe accuracy, versions, git commit
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from .augment import augment, byol_views
from .backbones import ARCHITECTURES, create_encoder, load_encoder, save_encoder
from .config import RESUMABLE_OPTIONS, PretrainConfig, UserError, first_line, resolve_device, save_config
from .data import Dataset, ImageSet, load_dataset
from .distributed import Process, gather_rows, init_process, local_rows, shard, sync_batchnorm
from .evaluate import extract_features, knn_accuracy, linear_probe
from .methods import collapse_statistic, create_method, healthy_spread, is_collapsed
from .optim import create_optimizer, learning_rate, parameter_groups

METRIC_COLUMNS = ["epoch", "step", "loss", "lr", "target_momentum", "collapse_std", "images_per_s", "data_wait_s",
                  "elapsed_s", "knn_top1"]


def check_run_dir(config: PretrainConfig) -> Path:
    """Refuse to clobber an existing run unless told to; creates nothing."""
    run_dir = Path(config.out)
    if config.resume:
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            raise UserError(f"--resume: no checkpoint at {run_dir}/checkpoints/last.pt; start a new run without --resume")
    elif run_dir.exists() and any(run_dir.iterdir()) and not config.overwrite:
        raise UserError(f"run directory {run_dir} is not empty; use --resume to continue it, "
                        "--overwrite to replace it, or --out for a new one")
    return run_dir


def create_run_dir(run_dir: Path, overwrite: bool) -> None:
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)


def resume_config(config: PretrainConfig, given: set[str]) -> PretrainConfig:
    """The saved config of the run in ``config.out``, with the few options a resume may change."""
    saved = yaml.safe_load((Path(config.out) / "config.yaml").read_text())
    changed = sorted(name for name in given - RESUMABLE_OPTIONS if getattr(config, name) != saved.get(name))
    if changed:
        raise UserError(f"--resume continues the run as configured; these options differ from its config.yaml: "
                        f"{', '.join(changed)} (start a new run with --out, or --init-from its encoder)")
    saved.update({name: getattr(config, name) for name in RESUMABLE_OPTIONS})
    return PretrainConfig(**saved)


def build_model(config: PretrainConfig, in_channels: int, image_size: int) -> torch.nn.Module:
    """The encoder inside the heads and loss of ``config.method`` (``byol.methods``)."""
    if config.arch not in ARCHITECTURES:
        raise UserError(f"--arch '{config.arch}' is not known; choose one of: {', '.join(ARCHITECTURES)}")
    encoder = create_encoder(config.arch, in_channels, config.small_stem, image_size)
    if config.init_from:
        encoder = _init_encoder(config.init_from, encoder)
    return create_method(config.method, encoder, encoder.num_features, config)


def build_optimizer(model: torch.nn.Module, config: PretrainConfig, lr: float) -> torch.optim.Optimizer:
    """The optimizer over everything but the target (which has none), in the paper's two groups."""
    return create_optimizer(config.optimizer, parameter_groups(
        [(n, p) for n, p in model.named_parameters() if not n.startswith("target_")], config.weight_decay), lr)


def two_views(batch: torch.Tensor, views, image_size: int, mean: torch.Tensor, std: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Both augmented, normalised views of a uint8 batch, channels-last."""
    return tuple(augment(batch, recipe, image_size, mean, std, generator).contiguous(memory_format=torch.channels_last)
                 for recipe in views)


def optimizer_step(step_model, optimizer, view_1: torch.Tensor, view_2: torch.Tensor, autocast) -> torch.Tensor:
    """Loss of both views, backward, one optimizer step; returns the loss (not read back)."""
    with autocast:
        loss = step_model(view_1, view_2)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def _init_encoder(path: str, encoder: torch.nn.Module) -> torch.nn.Module:
    if not Path(path).is_file():
        raise UserError(f"--init-from {path}: file not found")
    try:
        loaded = load_encoder(path)
    except Exception as error:  # a foreign or damaged file: say which, not where it broke
        raise UserError(f"--init-from {path}: not a byol encoder file ({first_line(error)})") from None
    if loaded.encoder_config != encoder.encoder_config:
        raise UserError(f"--init-from {path} holds {loaded.encoder_config}, but this run builds "
                        f"{encoder.encoder_config}; match --arch/--small-stem/--image-size")
    return loaded


def normalisation(config: PretrainConfig, dataset: Dataset, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """--mean/--std when given (one value per channel), else computed from the training images."""
    def parse(name: str, given: str) -> torch.Tensor:
        try:
            numbers = [float(v) for v in str(given).split(",")]
        except ValueError:
            raise UserError(f"--{name} {given}: expected comma-separated numbers, e.g. 0.5,0.5,0.5") from None
        if len(numbers) != channels or (name == "std" and min(numbers) <= 0):
            raise UserError(f"--{name} {given}: need {channels} value(s){' > 0' if name == 'std' else ''}, "
                            f"one per channel of these {channels}-channel images")
        return torch.tensor(numbers)

    computed = dataset.channel_stats() if config.mean is None or config.std is None else None
    mean = parse("mean", config.mean) if config.mean is not None else computed[0]
    std = parse("std", config.std) if config.std is not None else computed[1]
    return mean, std


def fits_on_device(images: torch.Tensor, device: torch.device) -> bool:
    """CPU: always (the images are already in RAM).  CUDA: when they take at most a quarter
    of the free GPU memory, leaving the rest to the model and activations."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return images.numel() <= free // 4


def git_commit() -> str | None:
    """The commit of the byol source tree, recorded beside the results (None outside git)."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


class MetricsLog:
    """metrics.csv (always) and TensorBoard events (when installed), written as training goes."""

    def __init__(self, run_dir: Path, resume: bool):
        self.path = run_dir / "metrics.csv"
        if not resume or not self.path.exists():
            with self.path.open("w", newline="") as handle:
                csv.writer(handle).writerow(METRIC_COLUMNS)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            self.tensorboard = None

    def scalars(self, step: int, **values: float) -> None:
        if self.tensorboard:
            for name, value in values.items():
                self.tensorboard.add_scalar(name, value, step)

    def epoch(self, row: dict) -> None:
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([row.get(column, "") for column in METRIC_COLUMNS])
        self.scalars(row["step"], **{f"epoch/{k}": v for k, v in row.items() if isinstance(v, float)})

    def close(self) -> None:
        if self.tensorboard:
            self.tensorboard.close()


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer, epoch: int, step: int, config: PretrainConfig) -> None:
    """Written to a temporary file and renamed, so a crash mid-write never loses the last good one.
    Nothing in it depends on the rank or the number of processes: any of them can resume it."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step,
             "config": dataclasses.asdict(config)}
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


@torch.no_grad()
def projection_spread(model: torch.nn.Module, views: torch.Tensor) -> float:
    """``collapse_statistic`` of the online projections of a batch of views, in eval mode
    (no BatchNorm statistics change, no RNG is drawn)."""
    model.eval()
    spread = collapse_statistic(model.project(views))
    model.train()
    return spread


def augmentation_seed(seed: int, epoch: int, rank: int) -> int:
    """The augmentation RNG is re-seeded every epoch, per rank: a run resumed at an epoch
    boundary, with any number of processes, draws what an uninterrupted run draws."""
    return (seed * 1_000_003 + epoch) * 4_099 + rank


def sharded_features(encoder, images: ImageSet, mean, std, image_size: int, device: torch.device,
                     process: Process) -> torch.Tensor:
    """Frozen features of every image; with several processes each embeds 1/N and all gather."""
    if not process.distributed:
        return extract_features(encoder, images, mean, std, image_size, device=device)
    local = extract_features(encoder, images.subset(local_rows(len(images), process)), mean, std, image_size,
                             device=device)
    return gather_rows(local, len(images), process)


def final_evaluation(encoder, dataset: Dataset, mean, std, image_size: int, config: PretrainConfig,
                     device: torch.device, probe: bool = True, process: Process = Process()) -> dict:
    """k-NN (and, with ``probe``, linear-probe) test accuracy on frozen features; {} without
    labelled splits, and on ranks other than 0.  The k-NN monitor during training is this
    without the probe.  Features are computed by all ranks together, scored by rank 0."""
    if not dataset.can_evaluate():
        return {}
    labelled = dataset.eval_train
    train = sharded_features(encoder, labelled, mean, std, image_size, device, process)
    test = sharded_features(encoder, dataset.test, mean, std, image_size, device, process)
    if not process.is_main:
        return {}
    results = {"knn_top1": knn_accuracy(train, labelled.labels, test, dataset.test.labels, dataset.num_classes,
                                        config.knn_k, config.knn_temperature)}
    if probe:
        result = linear_probe(train, labelled.labels, test, dataset.test.labels, dataset.num_classes, seed=config.seed)
        results.update(linear_top1=result.accuracy, linear_weight_decay=result.weight_decay,
                       linear_val_top1=result.val_score)
    return results


def pretrain(config: PretrainConfig, given_options: set[str] = frozenset()) -> dict:
    """Pre-train as ``config`` says (BYOL, or ``config.method``); returns the final evaluation (also in results.json).

    ``given_options`` names the settings the user set explicitly; with ``resume`` they
    are checked against the run's saved config.  Under ``torchrun`` every process calls
    this; ``config.batch_size`` is the global batch and only rank 0 writes."""
    started, commit = time.perf_counter(), git_commit()  # the code that starts the run, not what is there at its end
    run_dir = check_run_dir(config)
    if config.resume:
        config = resume_config(config, set(given_options))
    process, device = init_process(resolve_device(config.device))
    try:
        return _pretrain(config, run_dir, process, device, started, commit)
    finally:
        if process.distributed:
            torch.distributed.destroy_process_group()


def _pretrain(config: PretrainConfig, run_dir: Path, process: Process, device: torch.device, started: float,
              commit: str | None) -> dict:
    if config.batch_size % process.world_size:
        raise UserError(f"--batch-size {config.batch_size} (the global batch) does not split evenly over "
                        f"{process.world_size} processes; use a multiple of {process.world_size}")
    dataset = load_dataset(config.data, config.dataset, config.image_size, config.strict, config.stream)
    train_set = dataset.train
    n_images, (in_channels, height, width) = len(train_set), train_set.image_shape
    mean, std = normalisation(config, dataset, in_channels)
    image_size = config.image_size or height
    steps_per_epoch = n_images // config.batch_size
    if steps_per_epoch == 0:
        raise UserError(f"--batch-size {config.batch_size} is larger than the dataset ({n_images} images)")
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    peak_lr = config.base_lr * config.batch_size / 256  # §3.3: lr = base × global batch / 256
    rank_batch = config.batch_size // process.world_size

    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = build_model(config, in_channels, image_size).to(device)
    if process.distributed and config.sync_bn is not False:
        model = sync_batchnorm(model, device)  # BN over the global batch, in encoder and heads, online and target
    # channels-last: faster convolutions on tensor cores, and +10 % images/s on a 2-core CPU
    # (benchmarks/cpu_step.py).
    model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config, peak_lr)
    start_epoch, step = 0, 0
    if config.resume:
        checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", map_location=device, weights_only=False)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_epoch, step = checkpoint["epoch"], checkpoint["step"]
    elif process.is_main:  # everything the user gave has been checked: only now touch the disk
        create_run_dir(run_dir, config.overwrite)
        save_config(config, run_dir / "config.yaml")
    # DDP averages the online network's gradients; the target has none and is updated by the
    # same EMA on every rank, so it stays identical without communication.
    step_model = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None) if process.distributed else model
    if config.compile:
        step_model = torch.compile(step_model)
    generator = torch.Generator(device=device)

    # In memory: the uint8 dataset moves to the device when it fits there, and batches are
    # gathered and augmented on it.  Streaming: workers decode, the device augments.
    if train_set.images is not None and fits_on_device(train_set.images, device):
        train_set = ImageSet(train_set.images.to(device))
    mean_d, std_d = mean.to(device), std.to(device)
    views = byol_views(config.blur, (config.crop_min_scale, 1.0), config.augmentations)
    log = MetricsLog(run_dir, config.resume) if process.is_main else None
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    end_epoch = config.epochs if config.stop_after is None else min(config.epochs, start_epoch + config.stop_after)
    if process.is_main:
        print(f"byol: {dataset.name}, {n_images} images {in_channels}x{height}x{width} -> {image_size} px "
              f"({'in memory' if train_set.images is not None else 'streamed from disk'}), "
              f"{config.method} {config.arch} on {device}" + (f" x {process.world_size} processes" if process.distributed else "") +
              f", {config.epochs} epochs x {steps_per_epoch} steps, batch {config.batch_size}, "
              f"peak lr {peak_lr:.3g}; run directory {run_dir}")

    tau = None  # τ of the last EMA update; stays None for a method without a target
    for epoch in range(start_epoch, end_epoch):
        model.train()
        # The data order of an epoch depends only on (seed, epoch): a resumed run sees the same
        # batches; each rank takes its slice of every global batch.
        order = torch.randperm(n_images, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
        order = shard(order, config.batch_size, process)
        generator.manual_seed(augmentation_seed(config.seed, epoch, process.rank))
        epoch_start, loss_sum, logged_loss = time.perf_counter(), torch.zeros((), device=device), float("nan")
        bar = tqdm(train_set.batches(order, rank_batch, device, drop_last=True), total=steps_per_epoch,
                   desc=f"epoch {epoch + 1}/{config.epochs}", unit="step", dynamic_ncols=True, mininterval=1.0,
                   disable=not process.is_main)
        window_start, window_steps, window_wait, epoch_wait = time.perf_counter(), 0, 0.0, 0.0
        fetch_start = time.perf_counter()
        for batch_index, batch in enumerate(bar):
            waited = time.perf_counter() - fetch_start  # the step waited this long for its batch
            window_wait, epoch_wait = window_wait + waited, epoch_wait + waited
            view_1, view_2 = two_views(batch, views, image_size, mean_d, std_d, generator)
            lr = learning_rate(step, total_steps, warmup_steps, peak_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = optimizer_step(step_model, optimizer, view_1, view_2, autocast)
            tau = model.update_target(step, total_steps)
            step += 1
            loss_sum += loss.detach()
            window_steps += 1
            # Reading the loss forces a device sync: only every log_every steps, and only rank 0
            # (its loss is its own slice's; the others' differ by sampling noise).
            if process.is_main and (window_steps == config.log_every or batch_index == steps_per_epoch - 1):
                logged_loss = loss_sum.item() / window_steps
                window_time = time.perf_counter() - window_start
                speed = window_steps * config.batch_size / window_time
                bar.set_postfix(loss=f"{logged_loss:.4f}", lr=f"{lr:.3g}",
                                **({} if tau is None else {"tau": f"{tau:.4f}"}), img_s=f"{speed:.0f}",
                                data_wait=f"{100 * window_wait / window_time:.0f}%")
                log.scalars(step, **{"train/loss": logged_loss, "train/lr": lr,
                                     **({} if tau is None else {"train/tau": tau}),
                                     "train/images_per_s": speed, "train/data_wait_fraction": window_wait / window_time})
                loss_sum.zero_()
                window_start, window_steps, window_wait = time.perf_counter(), 0, 0.0
            fetch_start = time.perf_counter()
        bar.close()
        epoch_time = time.perf_counter() - epoch_start
        row = {"epoch": epoch + 1, "step": step, "loss": logged_loss, "lr": lr,
               "target_momentum": "" if tau is None else tau,
               "images_per_s": steps_per_epoch * config.batch_size / epoch_time, "data_wait_s": epoch_wait,
               "elapsed_s": time.perf_counter() - started}
        if process.is_main:  # the collapse statistic is logged, so only rank 0 computes it
            row["collapse_std"] = collapse = projection_spread(model, view_1)
            if is_collapsed(collapse, config.projection_dim):
                healthy = healthy_spread(config.projection_dim)
                print(f"byol: warning: epoch {epoch + 1}: the representation is collapsing — the spread of normalised "
                      f"projections is {collapse:.4f}, healthy is about {healthy:.4f} (1/sqrt({config.projection_dim}))"
                      f"; lower --base-lr{', raise --base-target-momentum' if tau is not None else ''}, or check "
                      "the augmentations", file=sys.stderr)
            save_checkpoint(run_dir / "checkpoints" / "last.pt", model, optimizer, epoch + 1, step, config)
        if epoch + 1 == config.epochs:
            break  # the last row waits for the final evaluation's k-NN accuracy
        if config.knn_every and (epoch + 1) % config.knn_every == 0:
            monitor = final_evaluation(model.online_encoder, dataset, mean, std, image_size, config, device,
                                       probe=False, process=process)
            if monitor:
                row["knn_top1"] = monitor["knn_top1"]
                print(f"epoch {epoch + 1}: k-NN top-1 {100 * monitor['knn_top1']:.2f} %")
        if process.is_main:
            log.epoch(row)

    if end_epoch < config.epochs:
        if process.is_main:
            log.close()
            print(f"byol: stopped after epoch {end_epoch} of {config.epochs} (--stop-after); "
                  f"continue with: byol pretrain --out {run_dir} --resume")
        return {}

    encoder = model.online_encoder
    if process.is_main:
        save_encoder(encoder, run_dir / "encoder.safetensors")
    results = final_evaluation(encoder, dataset, mean, std, image_size, config, device, probe=config.linear_probe,
                               process=process)
    if not process.is_main:
        return {}
    log.epoch({**row, "knn_top1": results.get("knn_top1", "")})
    log.close()
    results.update(seconds=time.perf_counter() - started, device=str(device), processes=process.world_size,
                   torch=torch.__version__, git_commit=commit)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print_results(results, config)
    return results


def print_results(results: dict, config: PretrainConfig) -> None:
    print(f"byol: finished in {results['seconds'] / 60:.1f} min")
    if "knn_top1" not in results:
        print("  no labelled test split in this dataset: nothing to evaluate (the encoder is saved)")
    else:
        print(f"  k-NN top-1 (k={config.knn_k}, T={config.knn_temperature}):  {100 * results['knn_top1']:.2f} %")
    if "linear_top1" in results:
        print(f"  linear-probe top-1:              {100 * results['linear_top1']:.2f} %"
              f"  (L2 {results['linear_weight_decay']:g}, chosen on a 10 % validation split)")
