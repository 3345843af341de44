"""LARS and the paper's parameter groups (BYOL §3.3 / appendix C), and the other optimizers a run may choose."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

OPTIMIZERS = ("lars", "sgd", "adamw")


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017).

    For each parameter of a group with ``lars_adapt=True`` the update ``g + wd·w`` is rescaled
    by ``trust_coefficient·‖w‖ / ‖g + wd·w‖`` — with ``clip`` (LARC, solo-learn's clip_lr) by at
    most 1 / lr, so no layer steps faster than the global rate; groups with
    ``lars_adapt=False`` (biases and norm parameters, BYOL §3.3) get plain SGD with momentum and
    no weight decay — see ``parameter_groups``.

    Multi-tensor (``torch._foreach_*``): a handful of kernels per group and step, not a few per
    parameter — the step of a ResNet-18 has ~60 parameter tensors.  Nothing leaves the device:
    a group's ``lr`` may be a 0-d device tensor (the compiled training step writes it in place
    each step, so the graph stays the same), and no branch reads a value back.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                 trust_coefficient: float = 1e-3, clip: bool = False):
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                        trust_coefficient=trust_coefficient, clip=clip, lars_adapt=True)
        super().__init__(params, defaults)
        for group in self.param_groups:  # made now, not at the first step: a compiled step then compiles once
            for p in group["params"]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            updates = [p.grad for p in params]
            if group["lars_adapt"]:
                updates = torch._foreach_add(updates, params, alpha=group["weight_decay"])
                param_norm = torch.stack(torch._foreach_norm(params))
                update_norm = torch.stack(torch._foreach_norm(updates))
                # Where either norm is 0 the ratio is undefined: fall back to 1 (no rescaling), as
                # the reference implementations do; torch.where keeps this on the device.
                trust = torch.where((param_norm > 0) & (update_norm > 0),
                                    group["trust_coefficient"] * param_norm / update_norm, torch.ones_like(param_norm))
                if group["clip"]:  # lr · min(trust / lr, 1); at lr = 0 the step is 0 whatever the trust
                    lr = group["lr"]  # a float is compared on the host: no copy to the device, no sync
                    clipped = torch.clamp(trust / lr, max=1.0)
                    trust = torch.where(lr > 0, clipped, trust) if torch.is_tensor(lr) else clipped if lr > 0 else trust
                torch._foreach_mul_(updates, list(trust.unbind()))
            buffers = [self.state[p]["momentum_buffer"] for p in params]
            torch._foreach_mul_(buffers, group["momentum"])
            torch._foreach_add_(buffers, updates)
            torch._foreach_sub_(params, torch._foreach_mul(buffers, group["lr"]))  # lr: a float or a tensor
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


def create_optimizer(name: str, groups: list[dict], lr: float, trust_coefficient: float = 1e-3,
                     clip: bool = False) -> torch.optim.Optimizer:
    """``lars`` (the paper), ``sgd`` (momentum 0.9) or ``adamw``, over ``parameter_groups``."""
    if name == "lars":
        return LARS(groups, lr=lr, momentum=0.9, trust_coefficient=trust_coefficient, clip=clip)
    # The other optimizers do not know the lars_adapt key; they ignore it.
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer '{name}'; choose lars, sgd or adamw")
