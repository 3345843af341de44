"""Several processes with ``torchrun``: PyTorch's DistributedDataParallel, nothing home-made
except where PyTorch has no CPU path (SyncBatchNorm is GPU-only; see ``GlobalBatchNorm``).

One process per GPU.  The user's ``--batch-size`` is the global batch: every step, the
global batch of the epoch's seeded order is cut into one slice per rank, so N processes
see exactly the images one process would.  Rank 0 alone logs and writes.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn

from ..base.errors import UserError

# Its replacement (_functional_collectives) is private and has no autograd; this one does.
warnings.filterwarnings("ignore", message="torch.distributed.nn.functional.all_reduce is deprecated")


@dataclass(frozen=True)
class Process:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_process(device: torch.device) -> tuple[Process, torch.device]:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on CPUs); one GPU per
    process, chosen by LOCAL_RANK.  A single process returns ``Process()`` unchanged."""
    if not launched_by_torchrun():
        return Process(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs here; "
                            "use --nproc-per-node at most the number of GPUs")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", device_id=device
                                if device.type == "cuda" else None)
    return Process(dist.get_rank(), dist.get_world_size(), local_rank), device


def shard(order: torch.Tensor, global_batch: int, process: Process) -> torch.Tensor:
    """This rank's images of an epoch: of every global batch of ``order``, slice ``rank``
    of ``world_size`` equal slices (a trailing partial batch is dropped)."""
    steps = len(order) // global_batch
    per_rank = global_batch // process.world_size
    return order[: steps * global_batch].view(steps, process.world_size, per_rank)[:, process.rank].reshape(-1)


def local_rows(total: int, process: Process) -> torch.Tensor:
    """This rank's contiguous share of ``total`` rows (shares differ by at most one)."""
    return torch.arange(total).tensor_split(process.world_size)[process.rank]


def gather_rows(local: torch.Tensor, total: int, process: Process) -> torch.Tensor:
    """All ranks' rows, in global order, on every rank, each rank holding ``local_rows``."""
    if not process.distributed:
        return local
    sizes = [len(part) for part in torch.arange(total).tensor_split(process.world_size)]
    padded = local.new_zeros((max(sizes), *local.shape[1:]))
    padded[: len(local)] = local
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return torch.cat([part[:size] for part, size in zip(gathered, sizes)])


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics span every rank's batch, on any device.

    ``nn.SyncBatchNorm`` refuses CPU tensors; this does the same with one differentiable
    all-reduce of (Σx, Σx², count) per layer, so CPU/gloo runs (and our tests) compute
    what one process with the global batch computes.  On CUDA we use ``nn.SyncBatchNorm``."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        count = x.new_full((1,), x.numel() / x.shape[1])
        stats = dist_nn.all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        channels, n = x.shape[1], stats[-1]
        mean = stats[:channels] / n
        var = (stats[channels:2 * channels] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach() * n / (n - 1), self.momentum)
        shape = (1, channels) + (1,) * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``module`` normalised over the global batch: ``nn.SyncBatchNorm`` on
    GPUs, ``GlobalBatchNorm`` elsewhere.  Weights and running statistics are kept."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
            replacement = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                          child.track_running_stats)
            # The same parameter and buffer objects (as nn.SyncBatchNorm's conversion does), so
            # requires_grad — off in the target network — and the optimizer's references survive.
            for key, value in child._parameters.items():
                replacement._parameters[key] = value
            for key, value in child._buffers.items():
                replacement._buffers[key] = value
            replacement.train(child.training)
            setattr(module, name, replacement)
        else:
            sync_batchnorm(child, device)
    return module
