"""The pre-training loop: data → two views → the method's loss → optimizer step → EMA → monitor.

``pretrain(data, **settings)`` sets a run up, calls ``train_one_epoch`` for each epoch,
and ends with the final evaluation; ``byol pretrain`` is a thin call into it.  What the
run writes, and how a resume reads it back, is ``rundir.py``.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from .augment import ViewApplier, apply_view, augment, byol_views
from .backbones import as_encoder, create_encoder
from .config import RESUMABLE_OPTIONS, PretrainConfig, recipe_values
from .data import Batch, DataSplits, as_splits, with_unlabeled
from .device import autocast, fits_on_device, resolve_device
from .distributed import Process, init_process, shard, sync_batchnorm
from .errors import UserError, setting
from .checkpointing import Checkpointer, stop_requests
from .meter import Diverged, StepMeter
from .methods import create_method
from .methods.byol import target_momentum
from .monitor import frozen_evaluation, knn_monitor, projection_spread, warn_if_collapsed
from .optim import create_optimizer, learning_rate, parameter_groups
from .recipes import data_facts, resolve
from .rundir import MetricsLog, RunDir, git_commit
from .settings import load_yaml
from .weights import load_weights


@dataclasses.dataclass
class PretrainResult:
    """What ``pretrain`` returns: the trained encoder and where everything about it is."""

    encoder: torch.nn.Module | None  # the online encoder f_θ (None when stopped before the last epoch)
    results: dict                    # final k-NN / linear-probe accuracy and run facts (results.json)
    metrics: list[dict]              # one row per epoch (metrics.csv)
    run_dir: Path
    config: PretrainConfig


def build_model(config: PretrainConfig, in_channels: int, image_size: int,
                encoder: torch.nn.Module | None = None) -> torch.nn.Module:
    """The encoder — ``encoder`` (any module, from Python), the weights ``init_from`` names, or
    ``arch`` at random initialisation — inside the heads and loss of ``config.method``."""
    if encoder is not None:
        encoder = as_encoder(encoder, in_channels, image_size)
    elif config.init_from:
        encoder = load_weights(config.init_from, config.arch, in_channels, image_size, config.small_stem, "init_from")
        built = encoder.encoder_config
        if (built["name"], built["in_channels"]) != (config.arch, in_channels):
            raise UserError(f"{setting('init_from')} {config.init_from} holds {built['name']} for {built['in_channels']} "
                            f"channel(s), but this run builds {config.arch} for {in_channels}; match {setting('arch')}")
    else:
        encoder = create_encoder(config.arch, in_channels, config.small_stem, image_size)
    return create_method(config.method, encoder, encoder.num_features, config)


def build_optimizer(model: torch.nn.Module, config: PretrainConfig, lr: float) -> torch.optim.Optimizer:
    """The optimizer over everything but the target (which has none), in the paper's two groups."""
    return create_optimizer(config.optimizer, parameter_groups(
        [(n, p) for n, p in model.named_parameters() if not n.startswith("target_")], config.weight_decay), lr,
        trust_coefficient=config.trust_coefficient, clip=config.lars_clip)


def two_views(batch: Batch, views, image_size: int, mean: torch.Tensor, std: torch.Tensor,
              generator: torch.Generator, apply=apply_view) -> tuple[torch.Tensor, torch.Tensor]:
    """Both augmented, normalised views of a batch, channels-last (``apply``: a ``ViewApplier``)."""
    return tuple(augment(batch.images, recipe, image_size, mean, std, generator, batch.sizes, apply)
                 .contiguous(memory_format=torch.channels_last) for recipe in views)


class TrainStep:
    """One training step from the two views: the loss of both, backward, the optimizer at ``lr``,
    then the EMA at ``tau`` (ξ ← τξ + (1 − τ)θ; None for a method without a target); and
    ``apply_view``, the half of the augmentation that applies the drawn parameters.

    Eager, or ``compiled``: torch.compile turns it into graphs — the views' colour ops (see
    ``ViewApplier``), the forwards with the loss, their backward (AOTAutograd), and the optimizer
    with the EMA (multi-tensor LARS and lerp) — that stay the same for the whole run.  lr and τ then live in
    0-d device tensors written in place before each step, so the moving schedules neither
    recompile a graph nor read anything back to the host; ``mode`` is torch.compile's
    ("reduce-overhead" replays each graph as a CUDA graph on a GPU).  The per-image draws stay
    eager: a generator re-seeded every step is what lets a resumed run draw what an uninterrupted
    one does.  Eager is the fallback and the reference the tests compare against.
    ``forward`` is what computes the loss (the model, or its DistributedDataParallel wrapper).
    """

    def __init__(self, model, optimizer, device: torch.device, forward=None, compiled: bool = False,
                 mode: str = "default"):
        self.model, self.optimizer, self.device, self.compiled = model, optimizer, device, compiled
        self.apply_view, self.forward, self.update = ViewApplier(compiled, mode), forward or model, self._update
        if compiled:  # float64: 1 − τ keeps the digits it has when computed on the host
            self.lr, self.tau = (torch.zeros((), dtype=torch.float64, device=device) for _ in range(2))
            for group in optimizer.param_groups:
                group["lr"] = self.lr
            self.forward, self.update = (torch.compile(f, mode=mode) for f in (self.forward, self.update))

    def _update(self, tau):
        self.optimizer.step()
        if tau is not None:  # τ given: update_target's step and total_steps do not enter
            self.model.update_target(0, 1, momentum=tau)

    def __call__(self, view_1: torch.Tensor, view_2: torch.Tensor, lr: float, tau: float | None) -> torch.Tensor:
        """One step; returns the loss, on the device (not read back)."""
        if self.compiled:
            self.lr.fill_(lr)
            tau = None if tau is None else self.tau.fill_(tau)
        else:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        with autocast(self.device):
            loss = self.forward(view_1, view_2)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.update(tau)
        # a copy: a CUDA graph's output is overwritten by its next replay, and the meter keeps losses a while
        return loss.detach().clone() if self.compiled else loss


@dataclasses.dataclass
class Plan:
    """The run's shape, fixed before the first step: sizes, step counts and the schedules."""

    config: PretrainConfig
    image_size: int
    steps_per_epoch: int
    rank_batch: int

    @property
    def total_steps(self) -> int:
        return self.config.epochs * self.steps_per_epoch

    @property
    def peak_lr(self) -> float:
        return self.config.base_lr * self.config.batch_size / 256  # §3.3: lr = base × global batch / 256

    def lr(self, step: int) -> float:
        """Warm-up then cosine decay (§3.3)."""
        return learning_rate(step, self.total_steps, int(self.config.warmup_epochs * self.steps_per_epoch),
                             self.peak_lr)

    def tau(self, step: int) -> float | None:
        """Target momentum after ``step`` (§3.2): cosine from τ_base to 1, or the fixed ablation
        value; None for a method without a target network."""
        if self.config.method != "byol":
            return None
        if self.config.target_momentum is not None:
            return self.config.target_momentum
        return target_momentum(step, self.total_steps, self.config.base_target_momentum)

    def data_order(self, epoch: int, n_images: int, process: Process) -> torch.Tensor:
        """This rank's image indices for ``epoch``: a permutation that depends only on (seed, epoch),
        so a resumed run sees the same batches; each rank takes its slice of every global batch."""
        order = torch.randperm(n_images, generator=torch.Generator().manual_seed(self.config.seed * 100_003 + epoch))
        return shard(order, self.config.batch_size, process)

    def augmentation_seed(self, step: int, rank: int) -> int:
        """The augmentation RNG is re-seeded every step, per rank: a run resumed at any step draws
        what an uninterrupted run draws there."""
        return (self.config.seed * 1_000_003 + step) * 4_099 + rank


def train_one_epoch(model, train_step: TrainStep, batches, views, plan: Plan, mean, std, step: int,
                    meter: StepMeter, saver: Checkpointer, rank: int, device: torch.device) -> tuple[int, torch.Tensor]:
    """One pass over ``batches``; returns the step count after it and the last batch's first view."""
    model.train()
    generator = torch.Generator(device=device)
    for batch in meter.timed(batches):
        generator.manual_seed(plan.augmentation_seed(step, rank))  # the draws of a step depend on nothing else
        view_1, view_2 = two_views(batch, views, plan.image_size, mean, std, generator, train_step.apply_view)
        lr, tau = plan.lr(step), plan.tau(step)
        loss = train_step(view_1, view_2, lr, tau)
        step += 1
        saver.after_step(step, window_ended=meter.update(loss, step, lr, tau))
    return step, view_1



def pretrain(data=None, *, config: str | Path | None = None, encoder: torch.nn.Module | None = None,
             **settings) -> PretrainResult:
    """Pre-train an encoder with BYOL (or ``method``) and evaluate it; returns the encoder, the
    results, the metrics and the run directory (see ``PretrainResult``).

    ``data``: a path in any format ``byol pretrain --data`` reads (default: Fashion-MNIST), or
    images from Python — an array or tensor (N, H, W) / (N, C, H, W) / (N, H, W, C), an
    (images, labels) pair, or a torch Dataset.  ``config``: a YAML file of settings.
    ``settings``: fields of ``PretrainConfig`` (``byol pretrain --help`` lists them), e.g.
    ``epochs=30, out="runs/a"``.  ``encoder``: any ``nn.Module`` mapping images to a feature
    vector or map, instead of ``arch`` (its weights are the starting point).  With
    ``resume=True`` the run in ``out`` continues with its saved settings, which those given
    here must not contradict.  Under ``torchrun`` every
    process calls this: ``batch_size`` is the global batch, and only rank 0 writes."""
    started, commit = time.perf_counter(), git_commit()  # the code that starts the run, not what is there at its end
    splits = None
    if data is not None and not isinstance(data, (str, Path)):
        splits = as_splits(data)
        settings["data"] = f"python:{splits.name}"
    elif data is not None:
        settings["data"] = str(data)
    if encoder is not None:
        settings["arch"] = "custom"
    settings = {name: value for name, value in settings.items() if value is not None}  # None: not given
    requested = PretrainConfig.create(config, **settings)
    given = set(settings) | (set(load_yaml(config)) if config is not None else set())
    run = RunDir(requested.out)
    if requested.resume:
        run.check_resume()
        requested = resumed_config(requested, run, given)
    else:
        run.check_new(requested.overwrite)
        named = {k: v for k, v in recipe_values(requested.recipe).items() if k not in given}
        requested = requested.replace(**named)  # a named recipe under the --config file and the flags
    if splits is None and (requested.data or "").startswith("python:"):
        raise UserError(f"{run.path} was pre-trained on images given from Python: resume it from Python, "
                        "pretrain(images, resume=True, out=...)")
    if encoder is None and requested.arch == "custom":
        raise UserError(f"{run.path} was pre-trained with an encoder given from Python: resume it from Python, "
                        "pretrain(..., encoder=module, resume=True)")
    process, device = init_process(resolve_device(requested.device))
    try:
        return _pretrain(requested, run, splits, encoder, process, device, started, commit)
    finally:
        if process.distributed:
            torch.distributed.destroy_process_group()


def resumed_config(requested: PretrainConfig, run: RunDir, given: set[str]) -> PretrainConfig:
    """The saved config of the run in ``out``, with the few options a resume may change."""
    saved = PretrainConfig.create(**run.load_config())
    changed = sorted(name for name in given - RESUMABLE_OPTIONS if getattr(requested, name) != getattr(saved, name))
    if changed:
        raise UserError(f"{setting('resume')} continues the run as configured; these settings differ from its "
                        f"config.yaml: {', '.join(changed)} (start a new run with {setting('out')}, or "
                        f"{setting('init_from')} its encoder)")
    return saved.replace(**{name: getattr(requested, name) for name in RESUMABLE_OPTIONS})


def make_plan(config: PretrainConfig, dataset: DataSplits, process: Process) -> Plan:
    if config.batch_size % process.world_size:
        raise UserError(f"{setting('batch_size')} {config.batch_size} (the global batch) does not split evenly over "
                        f"{process.world_size} processes; use a multiple of {process.world_size}")
    n_images = len(dataset.train)
    if n_images < config.batch_size:
        raise UserError(f"{setting('batch_size')} {config.batch_size} is larger than the dataset ({n_images} images)")
    return Plan(config, config.image_size, n_images // config.batch_size, config.batch_size // process.world_size)


def _pretrain(config: PretrainConfig, run: RunDir, splits: DataSplits | None, encoder: torch.nn.Module | None,
              process: Process, device: torch.device, started: float, commit: str | None) -> PretrainResult:
    dataset = splits or as_splits(config.data, **config.read_options())
    dataset = with_unlabeled(dataset, [as_splits(source, **config.read_options()) for source in config.unlabeled])
    config, derived = resolve(config, data_facts(dataset, device.type))
    if derived and process.is_main:
        print("byol: settings derived from the data (set any of them to override):\n" + "\n".join(derived))
    dataset = dataset.prepared(config.image_size, config.stream, strict=config.strict)
    plan = make_plan(config, dataset, process)
    mean, std = dataset.normalisation(config.mean, config.std)
    config = config.replace(mean=tuple(round(v, 6) for v in mean.tolist()), std=tuple(round(v, 6) for v in std.tolist()))
    mean, std = torch.tensor(config.mean), torch.tensor(config.std)  # as saved: a resumed run normalises the same
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = build_model(config, dataset.train.channels, plan.image_size, encoder).to(device)
    if process.distributed and config.sync_bn is not False:
        model = sync_batchnorm(model, device)  # BN over the global batch, in encoder and heads, online and target
    # channels-last: faster convolutions on tensor cores, and +10 % images/s on a 2-core CPU (benchmarks/cpu_step.py)
    model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config, plan.peak_lr)
    state = {"epoch": 0, "step": 0, "row": {}}
    if config.resume:
        checkpoint = run.load_checkpoint(device)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        state = {key: checkpoint[key] for key in state}
    elif process.is_main:  # everything the user gave has been checked: only now touch the disk
        run.create(config.overwrite)
        run.save_config(config.to_dict())
    log = MetricsLog(run, keep_epochs=state["epoch"]) if process.is_main else None
    if log and 0 < state["epoch"] < config.epochs and not any(r["epoch"] == state["epoch"] for r in log.rows):
        log.epoch(state["row"])  # the checkpoint's epoch ended, but its row was not written
    row = train_epochs(model, optimizer, dataset, plan, mean, std, state, run, log, process, device, started)
    if state["epoch"] < config.epochs:
        if process.is_main:
            log.close()
            print(f"byol: stopped after epoch {state['epoch']} of {config.epochs}; continue with: byol pretrain "
                  f"--out {run.path} --resume")
        return PretrainResult(None, {}, log.rows if log else [], run.path, config)
    results = finish(model.online_encoder, dataset, mean, std, plan, run, log, row, process, device)
    if process.is_main:
        if "seconds" not in results:  # not finished before this invocation
            results.update(seconds=time.perf_counter() - started, device=str(device), processes=process.world_size,
                           torch=torch.__version__, git_commit=commit)
            run.save_results(results)
        print_results(results, config)
        log.close()
    return PretrainResult(model.online_encoder, results, log.rows if log else [], run.path, config)


def train_epochs(model, optimizer, dataset: DataSplits, plan: Plan, mean, std, state: dict, run: RunDir,
                 log: MetricsLog | None, process: Process, device: torch.device, started: float) -> dict:
    """The epochs from the checkpoint's (``state``, updated as they finish; it may stop inside an
    epoch) to the last of this invocation.  Each ends with ``end_of_epoch``.  Returns the last
    epoch's metrics row."""
    config = plan.config
    # DDP averages the online network's gradients; the target has none and is updated by the
    # same EMA on every rank, so it stays identical without communication.
    forward = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None) if process.distributed else model
    train_step = TrainStep(model, optimizer, device, forward, config.compile, config.compile_mode)
    # In memory: the uint8 images move to the device when they fit there, and batches are
    # gathered and augmented on it.  Streaming: workers decode, the device augments.
    train_set = dataset.train
    if train_set.images is not None and fits_on_device(train_set.images.nbytes, device):
        train_set = train_set.to(device)
    views = byol_views(config.blur, (config.crop_min_scale, 1.0), config.augmentations, plan.image_size)
    end = config.epochs if config.stop_after is None else min(config.epochs, state["epoch"] + config.stop_after)
    if process.is_main:
        describe_run(dataset, train_set, plan, process, device, run)
    with stop_requests() as requested:
        saver = Checkpointer(run, model, optimizer, config, state, requested, process, device)
        for epoch in range(state["epoch"], end):
            done = state["step"] - epoch * plan.steps_per_epoch  # > 0: resumed inside this epoch
            meter = StepMeter(plan.steps_per_epoch - done, config.batch_size, config.log_every,
                              f"epoch {epoch + 1}/{config.epochs}", log)
            order = plan.data_order(epoch, len(train_set), process)[done * plan.rank_batch:]
            batches = train_set.batches(order, plan.rank_batch, device, drop_last=True)
            try:
                with meter:
                    step, last_views = train_one_epoch(model, train_step, batches, views, plan,
                                                       mean.to(device), std.to(device), state["step"], meter, saver,
                                                       process.rank, device)
            except Diverged as error:
                raise UserError(f"training diverged at epoch {epoch + 1}, step {error.step}: the loss is not finite "
                                f"(learning rate {error.lr:.3g}); lower {setting('base_lr')} (now {config.base_lr:g})"
                                f" or lengthen {setting('warmup_epochs')}; the last good checkpoint is kept") from None
            state.update(epoch=epoch + 1, step=step, row=end_of_epoch(model, dataset, mean, std, plan, meter, step,
                                                                      last_views, process, device, started))
            saver.save(step)
            if process.is_main and epoch + 1 < config.epochs:  # the last row waits for the final k-NN accuracy
                log.epoch(state["row"])
    return state["row"]


def end_of_epoch(model, dataset: DataSplits, mean, std, plan: Plan, meter: StepMeter, step: int, last_views,
                 process: Process, device: torch.device, started: float) -> dict:
    """The epoch's metrics row: the meter's figures, the schedules, the collapse statistic (with
    its warning), and the k-NN monitor when it is due."""
    config, epoch, tau = plan.config, step // plan.steps_per_epoch, plan.tau(step - 1)
    row = {"epoch": epoch, "step": step, "lr": plan.lr(step - 1), **meter.close(),
           "target_momentum": "" if tau is None else tau, "elapsed_s": time.perf_counter() - started}
    if process.is_main:  # the collapse statistic is logged, so only rank 0 computes it
        row["collapse_std"] = projection_spread(model, last_views)
        warn_if_collapsed(row["collapse_std"], epoch, config)
    if epoch < config.epochs and config.knn_every and epoch % config.knn_every == 0:
        monitor = knn_monitor(model.online_encoder, dataset, mean, std, config, plan.image_size, device, process)
        if monitor:
            row["knn_top1"] = monitor["knn_top1"]
            print(f"epoch {epoch}: k-NN top-1 {100 * monitor['knn_top1']:.2f} %")
    return row


def describe_run(dataset: DataSplits, train_set: ImageSet, plan: Plan, process: Process, device: torch.device,
                 run: RunDir) -> None:
    config, (channels, height, width) = plan.config, dataset.train.image_shape
    processes = f" x {process.world_size} processes" if process.distributed else ""
    print(f"byol: {dataset.name}, {len(dataset.train)} images {channels}x{height}x{width} -> {plan.image_size} px "
          f"({'in memory' if train_set.images is not None else 'streamed from disk'}), {config.method} "
          f"{config.arch} on {device}{processes}, {config.epochs} epochs x {plan.steps_per_epoch} steps, batch "
          f"{config.batch_size}, peak lr {plan.peak_lr:.3g}; run directory {run.path}")


def finish(encoder, dataset: DataSplits, mean, std, plan: Plan, run: RunDir, log: MetricsLog | None, row: dict,
           process: Process, device: torch.device) -> dict:
    """After the last epoch: the encoder file, the final evaluation, the last metrics row.
    Each step is skipped when a resumed run finds it done."""
    if process.is_main:
        run.save_encoder(encoder, (mean.tolist(), std.tolist()))
    done = run.read_results() if process.is_main else None
    if done is not None and any(r["epoch"] == plan.config.epochs for r in log.rows):
        return done
    results = frozen_evaluation(encoder, dataset, mean, std, plan.config, plan.image_size, device, process,
                                probe=plan.config.linear_probe)
    if process.is_main and not any(r["epoch"] == plan.config.epochs for r in log.rows):
        log.epoch({**row, "knn_top1": results.get("knn_top1", "")})
    return results


def print_results(results: dict, config: PretrainConfig) -> None:
    print(f"byol: finished in {results['seconds'] / 60:.1f} min")
    if "knn_top1" not in results:
        print("  no labelled test split in this dataset: nothing to evaluate (the encoder is saved)")
    else:
        print(f"  k-NN top-1 (k={results['knn_k']}, T={config.knn_temperature}):  {100 * results['knn_top1']:.2f} %")
    if "linear_top1" in results:
        print(f"  linear-probe top-1:              {100 * results['linear_top1']:.2f} %"
              f"  (L2 {results['linear_weight_decay']:g}, chosen on a 10 % validation split of the training labels)")
