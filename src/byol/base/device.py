"""Where tensors live: the ``device`` setting, mixed precision, and device synchronisation."""
from __future__ import annotations

import torch

from .errors import UserError, setting


def resolve_device(name: str) -> torch.device:
    """The ``device`` setting as a torch device: auto means CUDA when PyTorch sees a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{setting('device')} {name} asked for, but PyTorch sees no CUDA GPU; use cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"{setting('device')} {name}: give auto, cpu, cuda or cuda:N") from None


def autocast(device: torch.device):
    """bf16 autocast on GPUs; off on CPUs, where it is slower (BENCHMARKS.md, CPU step)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (for timing); nothing to wait for on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """CPU: always (the images are already in RAM).  CUDA: when they take at most a quarter
    of the free GPU memory, leaving the rest to the model and activations."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= free // 4
