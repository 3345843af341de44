"""LARS, parameter groups and the learning-rate schedule of BYOL §3.3 / appendix C."""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

OPTIMIZERS = ("lars", "sgd", "adamw")


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017).

    For each parameter of a group with ``lars_adapt=True`` the update
    ``g + wd·w`` is rescaled by ``trust_coefficient·‖w‖ / ‖g + wd·w‖``; groups with
    ``lars_adapt=False`` (biases and norm parameters, BYOL §3.3) get plain SGD with
    momentum and no weight decay — see ``parameter_groups``.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                 trust_coefficient: float = 1e-3):
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                        trust_coefficient=trust_coefficient, lars_adapt=True)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if group["lars_adapt"]:
                    update = update.add(p, alpha=group["weight_decay"])
                    param_norm, update_norm = torch.norm(p), torch.norm(update)
                    # Where either norm is 0 the ratio is undefined: fall back to 1 (no
                    # rescaling), as the reference implementations do.  torch.where keeps
                    # this on the device, without a host synchronisation.
                    trust = torch.where(
                        (param_norm > 0) & (update_norm > 0),
                        group["trust_coefficient"] * param_norm / update_norm,
                        torch.ones_like(param_norm),
                    )
                    update = update.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffer = state["momentum_buffer"]
                buffer.mul_(group["momentum"]).add_(update)
                p.add_(buffer, alpha=-group["lr"])
        return loss


def parameter_groups(parameters: Iterable[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    """Split named parameters into two groups, BYOL §3.3: weights get weight decay and
    LARS adaptation; biases and normalisation parameters (every 1-D tensor) get neither."""
    regular, excluded = [], []
    for _, p in parameters:
        if p.requires_grad:
            (excluded if p.ndim <= 1 else regular).append(p)
    return [
        {"params": regular, "weight_decay": weight_decay, "lars_adapt": True},
        {"params": excluded, "weight_decay": 0.0, "lars_adapt": False},
    ]


def create_optimizer(name: str, groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """``lars`` (the paper), ``sgd`` (momentum 0.9) or ``adamw``, over ``parameter_groups``."""
    if name == "lars":
        return LARS(groups, lr=lr, momentum=0.9, trust_coefficient=1e-3)
    # The other optimizers do not know the lars_adapt key; they ignore it.
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer '{name}'; choose lars, sgd or adamw")


def learning_rate(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warm-up from 0 to ``peak_lr`` over ``warmup_steps``, then cosine decay to 0 at
    ``total_steps`` (BYOL §3.3).  ``peak_lr`` = base_lr × global_batch / 256."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return peak_lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
