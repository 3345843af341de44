"""One pre-training step and the plan it follows: the model (encoder inside the method's heads),
its optimizer, the two views of a batch, the step itself (loss, backward, optimizer, EMA), and
the schedules fixed before the first step (learning rate, τ, data order, augmentation seeds)."""
from __future__ import annotations

import dataclasses

import torch

from ..base.device import autocast
from ..base.errors import UserError, setting
from ..data import Batch
from ..models.backbones import as_encoder, create_encoder
from ..models.methods import create_method
from ..models.methods.byol import target_momentum
from ..models.weights import load_weights
from ..optim.lars import create_optimizer, parameter_groups
from ..optim.schedule import learning_rate
from ..settings.pretrain import PretrainConfig
from ..views.apply import ViewApplier, apply_view, augment
from ..views.spec import byol_views
from .distributed import Process, shard


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
    """The optimizer over everything but the target (which has none), in the paper's two groups;
    the second (biases, normalisation) at ``bias_norm_lr`` / ``base_lr`` of the schedule's rate.
    Where ``predictor_lr`` differs from ``base_lr``, the predictor's weights are a third group at
    their own share (its biases and norms stay in the second)."""
    online = [(n, p) for n, p in model.named_parameters() if not n.startswith("target_")]
    groups = parameter_groups(online, config.weight_decay)
    groups[1]["scale"] = config.bias_norm_lr / config.base_lr
    predictor = {id(p) for n, p in online if n.startswith("predictor.") and p.ndim > 1}
    rate = config.base_lr if config.predictor_lr is None else config.predictor_lr  # None: not resolved, the paper's
    if predictor and rate != config.base_lr:
        groups.append({**groups[0], "params": [p for p in groups[0]["params"] if id(p) in predictor],
                       "scale": rate / config.base_lr})
        groups[0]["params"] = [p for p in groups[0]["params"] if id(p) not in predictor]
    return create_optimizer(config.optimizer, groups, lr, trust_coefficient=config.trust_coefficient,
                            clip=config.lars_clip)


def two_views(batch: Batch, views, image_size: int, mean: torch.Tensor, std: torch.Tensor,
              generator: torch.Generator, apply=apply_view) -> tuple[torch.Tensor, torch.Tensor]:
    """Both augmented, normalised views of a batch, channels-last (``apply``: a ``ViewApplier``)."""
    return tuple(augment(batch.images, spec, image_size, mean, std, generator, batch.sizes, apply)
                 .contiguous(memory_format=torch.channels_last) for spec in views)


class TrainStep:
    """One training step from the two views: the loss of both, backward, the optimizer at ``lr``,
    then the EMA at ``tau`` (ξ ← τξ + (1 − τ)θ; None for a method without a target); and
    ``apply_view``, the half of the augmentation that applies the drawn parameters.

    Eager, or ``compiled``: torch.compile turns it into graphs — the views' colour ops (see
    ``ViewApplier``), the forwards with the loss, their backward (AOTAutograd), and the optimizer
    with the EMA (multi-tensor LARS and lerp) — that stay the same for the whole run.  lr and τ then live in
    0-d device tensors written in place before each step, so the moving schedules neither
    recompile a graph nor read anything back to the host; each parameter group's rate is
    ``lr`` × its ``scale`` (1 where it has none; see ``build_optimizer``); ``mode`` is torch.compile's
    ("reduce-overhead" replays each graph as a CUDA graph on a GPU).  The per-image draws stay
    eager: a generator re-seeded every step is what lets a resumed run draw what an uninterrupted
    one does.  Eager is the fallback and the reference the tests compare against.
    ``forward`` is what computes the loss (the model, or its DistributedDataParallel wrapper).
    """

    def __init__(self, model, optimizer, device: torch.device, forward=None, compiled: bool = False,
                 mode: str = "default"):
        self.model, self.optimizer, self.device, self.compiled = model, optimizer, device, compiled
        self.apply_view, self.forward, self.update = ViewApplier(compiled, mode), forward or model, self._update
        self.scales = [group.get("scale", 1.0) for group in optimizer.param_groups]
        if compiled:  # float64: 1 − τ keeps the digits it has when computed on the host
            self.lrs = [torch.zeros((), dtype=torch.float64, device=device) for _ in optimizer.param_groups]
            self.tau = torch.zeros((), dtype=torch.float64, device=device)
            for group, lr in zip(optimizer.param_groups, self.lrs):
                group["lr"] = lr
            self.forward, self.update = (torch.compile(f, mode=mode) for f in (self.forward, self.update))

    def _update(self, tau):
        self.optimizer.step()
        if tau is not None:
            self.model.update_target(tau)

    def __call__(self, view_1: torch.Tensor, view_2: torch.Tensor, lr: float, tau: float | None) -> torch.Tensor:
        """One step; returns the loss, on the device (not read back)."""
        if self.compiled:
            for tensor, scale in zip(self.lrs, self.scales):
                tensor.fill_(lr * scale)
            tau = None if tau is None else self.tau.fill_(tau)
        else:
            for group, scale in zip(self.optimizer.param_groups, self.scales):
                group["lr"] = lr * scale
        with autocast(self.device):
            loss = self.forward(view_1, view_2)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.update(tau)
        # a copy: a CUDA graph's output is overwritten by its next replay, and the meter keeps losses a while
        return loss.detach().clone() if self.compiled else loss


@dataclasses.dataclass
class Plan:
    """The run's shape, fixed before the first step: sizes, step counts and the schedules — the
    one source of the learning rate and of τ."""

    config: PretrainConfig
    image_size: int
    steps_per_epoch: int
    rank_batch: int

    @classmethod
    def of(cls, config: PretrainConfig, images: int, process: Process) -> "Plan":
        if config.batch_size % process.world_size:
            raise UserError(f"{setting('batch_size')} {config.batch_size} (the global batch) does not split evenly "
                            f"over {process.world_size} processes; use a multiple of {process.world_size}")
        if images < config.batch_size:
            raise UserError(f"{setting('batch_size')} {config.batch_size} is larger than the dataset ({images} images)")
        return cls(config, config.image_size, images // config.batch_size, config.batch_size // process.world_size)

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


class SyntheticStep:
    """The training loop's own step around a synthetic batch of ``config``'s size (uint8 images,
    seeded): what ``byol bench`` times and what a time budget measures before a run."""

    def __init__(self, config: PretrainConfig, channels: int, device: torch.device, compiled: bool = False,
                 mode: str = "default"):
        size, batch = config.image_size, config.batch_size
        torch.manual_seed(0)
        self.model = build_model(config, channels, size).to(device).to(memory_format=torch.channels_last)
        self.train_step = TrainStep(self.model, build_optimizer(self.model, config, 0.1), device, compiled=compiled,
                                    mode=mode)
        self.generator = torch.Generator(device=device).manual_seed(0)
        self.images = torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8, device=device,
                                    generator=self.generator)
        self.mean = torch.full((channels,), 0.5, device=device)
        self.std = torch.full((channels,), 0.25, device=device)
        self.views = byol_views(config.blur, (config.crop_min_scale, 1.0), config.augmentations or "full", size)
        self.device, self.size = device, size

    def make_views(self):
        return two_views(Batch(self.images, None), self.views, self.size, self.mean, self.std, self.generator,
                         self.train_step.apply_view)

    def __call__(self):
        self.train_step(*self.make_views(), 0.1, 0.99)
