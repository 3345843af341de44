"""The pre-training loop: data → two views → the method's loss → optimizer step → EMA → monitor.

``pretrain(data, **settings)`` sets a run up (``_set_up``), trains its epochs — each a pass of
``train_one_epoch`` and then ``end_of_epoch`` — and ends with the final evaluation; ``byol
pretrain`` is a thin call into it.  What is fixed for the run is one ``Loop``; where the run
is, one ``LoopState``, which the loop advances and the checkpointer saves.  What the run
writes, and how a resume reads it back, is ``base/rundir.py``.
"""
from __future__ import annotations

import dataclasses
import functools
import sys
import time
from pathlib import Path

import torch

from ..base.device import fits_on_device, resolve_device
from ..base.errors import UserError, setting
from ..base.rundir import MetricsLog, RunDir, git_commit
from ..data import Batch, DataSplits, ImageSet, as_splits, with_unlabeled
from ..models.backbones import save_encoder
from ..settings.pretrain import PretrainConfig, requested, resumed
from ..settings.recipes import DataFacts, data_facts, resolve
from ..views.spec import byol_views
from .checkpointing import Checkpointer, LoopState, stop_requests
from .distributed import Process, init_process, sync_batchnorm
from .meter import Diverged, StepMeter
from .budget import plan_budget
from .choose import choose_views, should_choose
from .monitor import frozen_evaluation, measured_on, projection_spread, warn_if_collapsed
from .step import Plan, TrainStep, build_model, build_optimizer, two_views


@dataclasses.dataclass
class PretrainResult:
    """What ``pretrain`` returns: the trained encoder and where everything about it is."""

    encoder: torch.nn.Module | None  # the online encoder f_θ (None when stopped before the last epoch)
    results: dict                    # final k-NN / linear-probe accuracy and run facts (results.json)
    metrics: list[dict]              # one row per epoch (metrics.csv)
    run_dir: Path
    config: PretrainConfig


@dataclasses.dataclass
class Loop:
    """What every epoch of a run uses, fixed once the run is set up."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    train_step: TrainStep
    dataset: DataSplits              # every split, for the monitor
    train_set: ImageSet              # what pre-training draws batches from (on the device when it fits)
    views: tuple                     # the two ``ViewSpec``s
    plan: Plan
    mean: torch.Tensor               # normalisation, on the device
    std: torch.Tensor
    run: RunDir
    log: MetricsLog | None           # rank 0 only
    process: Process
    device: torch.device
    started: float                   # perf_counter at the start of this invocation
    scored_on: str = "test"          # what the monitor's labelled images are: "test" or "validation"
    deadline: float | None = None    # time_budget: perf_counter by which training must end

    @property
    def config(self) -> PretrainConfig:
        return self.plan.config

    def views_of(self, batch: Batch, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The two views step ``step`` trains on: its draws depend on nothing but the seed and the step."""
        generator = torch.Generator(device=self.device).manual_seed(self.plan.augmentation_seed(step, self.process.rank))
        return two_views(batch, self.views, self.plan.image_size, self.mean, self.std, generator,
                         self.train_step.apply_view)

    def batches(self, epoch: int, first_step: int = 0):
        """This rank's batches of ``epoch`` from its ``first_step``-th on."""
        order = self.plan.data_order(epoch, len(self.train_set), self.process)[first_step * self.plan.rank_batch:]
        return self.train_set.batches(order, self.plan.rank_batch, self.device, drop_last=True)


def pretrain(data=None, *, config_file: str | Path | None = None, encoder: torch.nn.Module | None = None,
             **settings) -> PretrainResult:
    """Pre-train an encoder with BYOL (or ``method``) and evaluate it; returns the encoder, the
    results, the metrics and the run directory (see ``PretrainResult``).

    ``data``: a path in any format ``byol pretrain --data`` reads (default: Fashion-MNIST), or
    images from Python — an array or tensor (N, H, W) / (N, C, H, W) / (N, H, W, C), an
    (images, labels) pair, or a torch Dataset.  ``config_file``: a YAML file of settings.
    ``settings``: fields of ``PretrainConfig`` (``byol pretrain --help`` lists them), e.g.
    ``epochs=30, out="runs/a"``.  ``encoder``: any ``nn.Module`` mapping images to a feature
    vector or map, instead of ``arch`` (its weights are the starting point).  With
    ``resume=True`` the run in ``out`` continues with its saved settings, which those given
    here must not contradict.  Under ``torchrun`` every process calls this: ``batch_size`` is
    the global batch, and only rank 0 writes."""
    started, commit = time.perf_counter(), git_commit()  # the code that starts the run, not what is there at its end
    splits = None
    if data is not None and not isinstance(data, (str, Path)):
        splits = as_splits(data)
        settings["data"] = f"python:{splits.name}"
    elif data is not None:
        settings["data"] = str(data)
    if encoder is not None:
        settings["arch"] = "custom"
    config, given = requested(config_file, settings)
    run = RunDir(config.out)
    if config.resume:
        run.check_resume()
        config = resumed(run.load_config(), config, given)
    else:
        run.check_new(config.overwrite)
    if splits is None and (config.data or "").startswith("python:"):
        raise UserError(f"{run.path} was pre-trained on images given from Python: resume it from Python, "
                        "pretrain(images, resume=True, out=...)")
    if encoder is None and config.arch == "custom":
        raise UserError(f"{run.path} was pre-trained with an encoder given from Python: resume it from Python, "
                        "pretrain(..., encoder=module, resume=True)")
    process, device = init_process(resolve_device(config.device))
    try:
        loop, state = _set_up(config, run, splits, encoder, process, device, started)
        result = _train_and_finish(loop, state, commit)
        if process.distributed:
            torch.distributed.barrier()  # every rank done with the group before any tears it down
        return result
    finally:
        if process.distributed:
            torch.distributed.destroy_process_group()


def _set_up(config: PretrainConfig, run: RunDir, splits: DataSplits | None,
            encoder: torch.nn.Module | None, process: Process, device: torch.device,
            started: float) -> tuple[Loop, LoopState]:
    """The data and every setting it decides (derived, printed; the views chosen on the labels),
    the model and optimizer (from the checkpoint when resuming), the run directory; nothing is
    written before every setting the user gave has been checked."""
    dataset = splits or as_splits(config.data, **config.read_options())
    choosing = should_choose(config, dataset) and not process.distributed
    dataset, scored_on = measured_on(dataset, config)
    dataset = with_unlabeled(dataset, [as_splits(source, **config.read_options()) for source in config.unlabeled])
    facts = data_facts(dataset, device.type)
    budget = None
    if config.time_budget and config.epochs is None:
        budget = plan_budget(config, facts, dataset, device, choosing, started, process.is_main)
        config = budget.config
    raw = dataset
    resolved, dataset, plan, model = settled = _settled(config, raw, facts, encoder, process, device)
    if process.is_main and not config.resume:  # a new run: everything given was checked, only now touch the disk
        run.create(config.overwrite)
        run.save_config(config.to_dict())  # as asked; what the data decides follows below
        run.save_seen(dataset.train.identities())  # what a comparison may ask: which test images did it see?
        if config.test_fraction:
            run.save_held_out(dataset.test.names or [str(i) for i in range(len(dataset.test))],
                              dataset.test.labels.tolist(), dataset.test.identities())
    if choosing:
        settle = functools.partial(_settled, raw=raw, facts=facts, encoder=encoder, process=process, device=device)
        resolved, dataset, plan, model = choose_views(settled, config, settle, facts, run, scored_on, pretrain)
    deadline = None
    if budget:  # the proxies took what they took: the run's length is set by the time truly left
        resolved, deadline = budget.length(resolved, facts, started, time.perf_counter(), shorten=choosing)
    plan = dataclasses.replace(plan, config=resolved)
    if process.is_main and not run.has_checkpoint():
        run.save_config(resolved.to_dict())  # every setting of the run, as it trains
    loop, state = _build_loop(resolved, plan, model, run, dataset, scored_on, process, device, started)
    return dataclasses.replace(loop, deadline=deadline), state


def _settled(config: PretrainConfig, raw: DataSplits, facts: DataFacts, encoder: torch.nn.Module | None,
             process: Process, device: torch.device) -> tuple[PretrainConfig, DataSplits, Plan, torch.nn.Module]:
    """``config`` with every open setting derived (printed), the data prepared for its views and
    normalised by them, the run's plan, and its model at the seed's initial weights."""
    resolved, derived = resolve(config, facts)
    if derived and process.is_main:
        print("byol: settings derived from the data (set any of them to override):\n" + "\n".join(derived))
    dataset = raw.prepared(resolved.image_size, resolved.stream, strict=resolved.strict)
    mean, std = dataset.normalisation(resolved.mean, resolved.std)
    resolved = resolved.replace(mean=tuple(round(v, 6) for v in mean.tolist()),
                                std=tuple(round(v, 6) for v in std.tolist()))
    plan = Plan.of(resolved, len(dataset.train), process)
    torch.manual_seed(resolved.seed)  # the same initial weights on every rank
    return resolved, dataset, plan, build_model(resolved, dataset.train.channels, plan.image_size, encoder).to(device)


def _build_loop(config: PretrainConfig, plan: Plan, model: torch.nn.Module, run: RunDir, dataset: DataSplits,
                scored_on: str, process: Process, device: torch.device, started: float) -> tuple[Loop, LoopState]:
    """The model in place (BatchNorm over all ranks, channels-last), its optimizer, the state to
    start from (the checkpoint's, when there is one), the log, and the batches' home."""
    if process.distributed and config.sync_bn is not False:
        model = sync_batchnorm(model, device)  # BN over the global batch, in encoder and heads, online and target
    # channels-last: faster convolutions on tensor cores, and +10 % images/s on a 2-core CPU (BENCHMARKS.md)
    model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config, plan.peak_lr)
    state = LoopState()
    if process.is_main:
        run.rotate()  # finish the renames of a checkpoint a kill interrupted
    if process.distributed:
        torch.distributed.barrier()  # no rank reads the checkpoints while rank 0 renames them
    if run.has_checkpoint():
        checkpoint = run.load_checkpoint(device)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        state = LoopState.of(checkpoint)
    log = MetricsLog(run, keep_epochs=state.epoch) if process.is_main else None
    if log and 0 < state.epoch < config.epochs and not any(r["epoch"] == state.epoch for r in log.rows):
        log.epoch(state.row)  # the checkpoint's epoch ended, but its row was not written
    # DDP averages the online network's gradients; the target has none and is updated by the
    # same EMA on every rank, so it stays identical without communication.
    forward = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None) if process.distributed else model
    train_set = dataset.train  # in memory: moved to the device when it fits, batches gathered and augmented there
    if train_set.images is not None and fits_on_device(train_set.images.nbytes, device):
        train_set = train_set.to(device)
    views = byol_views(config.blur, (config.crop_min_scale, 1.0), config.augmentations, plan.image_size)
    mean, std = torch.tensor(config.mean).to(device), torch.tensor(config.std).to(device)  # as saved: resumes the same
    loop = Loop(model, optimizer, TrainStep(model, optimizer, device, forward, config.compile, config.compile_mode),
                dataset, train_set, views, plan, mean, std, run, log, process, device, started, scored_on)
    if process.is_main:
        describe_run(loop)
    return loop, state


def _train_and_finish(loop: Loop, state: LoopState, commit: str | None) -> PretrainResult:
    train_epochs(loop, state)
    config, run, log = loop.config, loop.run, loop.log  # the epochs shortened when the time budget ran out
    if state.epoch < config.epochs:
        if log:
            log.close()
            print(f"byol: stopped after epoch {state.epoch} of {config.epochs}; continue with: byol pretrain "
                  f"--out {run.path} --resume")
        return PretrainResult(None, {}, log.rows if log else [], run.path, config)
    results = finish(loop, state.row)
    if log:
        if "seconds" not in results:  # not finished before this invocation
            results.update(seconds=time.perf_counter() - loop.started, device=str(loop.device),
                           processes=loop.process.world_size, torch=torch.__version__, git_commit=commit)
            run.save_results(results)
        print_results(results, config)
        log.close()
    return PretrainResult(loop.model.online_encoder, results, log.rows if log else [], run.path, config)


def train_epochs(loop: Loop, state: LoopState) -> None:
    """The epochs from the checkpoint's (it may have stopped inside one, or at its last step) to
    the last of this invocation; ``state`` advances as they go."""
    config, steps = loop.config, loop.plan.steps_per_epoch
    end = config.epochs if config.stop_after is None else min(config.epochs, state.epoch + config.stop_after)
    with stop_requests() as requested:
        saver = Checkpointer(loop.run, loop.model, loop.optimizer, config, state, requested, loop.process, loop.device,
                             steps)
        epoch_started = time.perf_counter()
        for epoch in range(state.epoch, end):
            meter = StepMeter(steps, config.batch_size, config.log_every, f"epoch {epoch + 1}/{config.epochs}",
                              loop.log, so_far=state.meter)
            try:
                with meter:
                    train_one_epoch(loop, state, meter, saver)
            except Diverged as error:
                raise UserError(f"training diverged at epoch {epoch + 1}, step {error.step}: the loss is not finite "
                                f"(learning rate {error.lr:.3g}); lower {setting('base_lr')} (now {config.base_lr:g})"
                                f" or lengthen {setting('warmup_epochs')}; the last good checkpoint is kept") from None
            state.epoch, state.row, state.meter = epoch + 1, end_of_epoch(loop, epoch, meter), {}
            saver.save()
            if epoch + 1 < config.epochs and out_of_time(loop, epoch + 1, time.perf_counter() - epoch_started):
                return
            epoch_started = time.perf_counter()
            if loop.log and epoch + 1 < config.epochs:  # the last row waits for the final k-NN accuracy
                loop.log.epoch(state.row)


def out_of_time(loop: Loop, done: int, epoch_seconds: float) -> bool:
    """Whether another epoch would end past the time budget's deadline (steps slower than measured
    at the start: a busy machine); if so the run ends here — its epochs become ``done``, saved
    in config.yaml — and goes on to the final evaluation."""
    if loop.deadline is None or time.perf_counter() + epoch_seconds <= loop.deadline:
        return False
    config = loop.config.replace(epochs=done)
    if loop.process.is_main:
        print(f"byol: the time budget runs out: ending after epoch {done} of {loop.config.epochs} (the steps ran "
              "slower than measured at the start; the learning rate had not decayed to 0)")
        loop.run.save_config(config.to_dict())
    loop.plan = dataclasses.replace(loop.plan, config=config)
    return True


def train_one_epoch(loop: Loop, state: LoopState, meter: StepMeter, saver: Checkpointer) -> None:
    """The rest of epoch ``state.epoch`` from ``state.step`` (none left when it stopped at its last step)."""
    loop.model.train()
    for batch in meter.timed(loop.batches(state.epoch, state.step - state.epoch * loop.plan.steps_per_epoch)):
        view_1, view_2 = loop.views_of(batch, state.step)
        lr, tau = loop.plan.lr(state.step), loop.plan.tau(state.step)
        loss = loop.train_step(view_1, view_2, lr, tau)
        state.step += 1
        saver.after_step(meter.update(loss, state.step, lr, tau), meter)


def end_of_epoch(loop: Loop, epoch: int, meter: StepMeter) -> dict:
    """The epoch's metrics row: the meter's figures, the schedules, the collapse statistic (on the
    epoch's last batch, drawn again: a run resumed at any step logs what it would have), and the
    k-NN monitor when it is due."""
    config, plan = loop.config, loop.plan
    last = (epoch + 1) * plan.steps_per_epoch - 1
    tau = plan.tau(last)
    row = {"epoch": epoch + 1, "step": last + 1, "lr": plan.lr(last), **meter.close(),
           "target_momentum": "" if tau is None else tau, "elapsed_s": time.perf_counter() - loop.started}
    if loop.process.is_main:  # the collapse statistic is logged, so only rank 0 computes it
        batch = next(iter(loop.batches(epoch, plan.steps_per_epoch - 1)))
        row["collapse_std"] = projection_spread(loop.model, loop.views_of(batch, last)[0])
        warn_if_collapsed(row["collapse_std"], epoch + 1, config)
    if epoch + 1 < config.epochs and config.knn_every and (epoch + 1) % config.knn_every == 0:
        monitor = frozen_evaluation(loop.model.online_encoder, loop.dataset, loop.mean, loop.std, config,
                                    plan.image_size, loop.device, loop.process, probe=False)
        if monitor:
            row["knn_top1"] = monitor["knn_top1"]
            print(f"epoch {epoch + 1}: k-NN top-1 {100 * monitor['knn_top1']:.2f} % on the {loop.scored_on} split")
    return row


def describe_run(loop: Loop) -> None:
    config, plan, (channels, height, width) = loop.config, loop.plan, loop.dataset.train.image_shape
    processes = f" x {loop.process.world_size} processes" if loop.process.distributed else ""
    print(f"byol: {loop.dataset.name}, {len(loop.dataset.train)} images {channels}x{height}x{width} -> "
          f"{plan.image_size} px ({'in memory' if loop.train_set.images is not None else 'streamed from disk'}), "
          f"{config.method} {config.arch} on {loop.device}{processes}, {config.epochs} epochs x {plan.steps_per_epoch}"
          f" steps, batch {config.batch_size}, peak lr {plan.peak_lr:.3g}; run directory {loop.run.path}")


def finish(loop: Loop, row: dict) -> dict:
    """After the last epoch: the encoder file, the final evaluation, the last metrics row.
    Each is skipped when a resumed run finds it done."""
    config, encoder, log = loop.config, loop.model.online_encoder, loop.log
    if log:
        normalisation = (loop.mean.tolist(), loop.std.tolist())
        loop.run.save_encoder(lambda path: save_encoder(encoder, path, normalisation))
    done = loop.run.read_results() if log else None
    if done is not None and any(r["epoch"] == config.epochs for r in log.rows):
        return done
    start = starting_encoder(config, loop.dataset.train.channels, loop.plan.image_size) \
        if loop.scored_on == "validation" and config.linear_probe and loop.process.is_main else None
    results = frozen_evaluation(encoder, loop.dataset, loop.mean, loop.std, config, loop.plan.image_size,
                                loop.device, loop.process, probe=config.linear_probe, start=start)
    if results:
        results["scored_on"] = describe_split(loop)
    if log and not any(r["epoch"] == config.epochs for r in log.rows):
        log.epoch({**row, "knn_top1": results.get("knn_top1", "")})
    return results


def starting_encoder(config: PretrainConfig, channels: int, image_size: int) -> torch.nn.Module | None:
    """The encoder the run started from, built again as ``_set_up`` built it (the seed's random
    initialisation, or the weights ``init_from`` names); None for an encoder given from Python."""
    if config.arch == "custom":
        return None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_model(config, channels, image_size).online_encoder


def describe_split(loop: Loop) -> str:
    test = loop.dataset.test
    if loop.scored_on == "validation":
        return (f"a validation split of {len(test)} labelled images (pre-trained on, without their labels; "
                "test_fraction holds a test split out instead)")
    held = " held out from pre-training" if loop.config.test_fraction else ""
    return f"the test split{held}, {len(test)} images"


def print_results(results: dict, config: PretrainConfig) -> None:
    print(f"byol: finished in {results['seconds'] / 60:.1f} min")
    if "knn_top1" not in results:
        print("  no labelled images in this dataset: nothing to evaluate (the encoder is saved)")
        return
    print(f"  on {results['scored_on']}:")
    print(f"  k-NN top-1 (k={results['knn_k']}, T={config.knn_temperature}):  {100 * results['knn_top1']:.2f} %")
    if "linear_top1" in results:
        print(f"  linear-probe top-1:              {100 * results['linear_top1']:.2f} %"
              f"  (balanced {100 * results['linear_balanced_accuracy']:.2f} %, quadratic kappa "
              f"{results['linear_qwk']:.3f}; L2 {results['linear_weight_decay']:g} chosen by "
              f"{results['linear_selection']} of the training labels)")
    if "start_linear_top1" in results:
        start = "weights it started from" if config.init_from else "random network it started from"
        print(f"  the {start}, the same probe: {100 * results['start_linear_top1']:.2f} %  (balanced "
              f"{100 * results['start_linear_balanced_accuracy']:.2f} %, quadratic kappa {results['start_linear_qwk']:.3f})")
        print(f"  pre-trained − start, balanced accuracy: {100 * results['gain_balanced_accuracy']:+.2f} points "
              f"[{100 * results['gain_low']:+.2f}, {100 * results['gain_high']:+.2f}] (95 %, these images only; "
              "byol compare --seeds gives a verdict)")
        if results["gain_high"] < 0:
            print(f"byol: warning: pre-training left the encoder below the {start} on this validation split: its "
                  "views may teach it to ignore what your labels depend on. Look at them (byol views), try larger "
                  "views (--time-budget) or other views (--augmentations)", file=sys.stderr)
