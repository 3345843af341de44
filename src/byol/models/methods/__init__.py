"""Self-supervised methods on one shared base: a method is its heads plus its loss.

The encoder, the two augmented views, the optimiser, the schedules and the loop
(``train.py``) are the same for every method.  Each module in this package is one
method and defines

    build(encoder, feature_dim, config) -> nn.Module

returning a model with

    forward(view_1, view_2) -> loss        a scalar, for ``loss.backward()``
    online_encoder                         the encoder kept after training
    project(views) -> (N, d)               the online projections (collapse statistic)
    update_target(tau)                     after each optimizer step: the EMA with τ from the loop's
                                           schedule (a method without a target does nothing)
and parameters named ``target_*`` for whatever the optimizer must not train.

``--method NAME`` finds the module by its file name: a third method is one new
module here (plus a field in ``config.py`` if it brings a new hyperparameter).
"""
from __future__ import annotations

import importlib
import pkgutil

import torch
import torch.nn.functional as F
from torch import nn

HEAD_NORMS = ("batchnorm", "layernorm", "none")


class MLPHead(nn.Sequential):
    """Projector / predictor of BYOL §3.3 (and SimCLR's projector): Linear → norm → ReLU → Linear.

    In: (N, in_dim) features.  Out: (N, out_dim).  ``norm`` is BatchNorm1d in the paper;
    ``layernorm`` and ``none`` are the ablation of SPEC ("understanding BYOL": BN in both
    heads 57.7, no normalisation 28.3, LayerNorm 29.4).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256, norm: str = "batchnorm"):
        normalisation = {"batchnorm": nn.BatchNorm1d, "layernorm": nn.LayerNorm}.get(norm)
        if normalisation is None and norm != "none":
            raise ValueError(f"head norm must be one of {HEAD_NORMS}, got {norm!r}")
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            *([normalisation(hidden_dim)] if normalisation else []),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )


def collapse_statistic(projections: torch.Tensor) -> float:
    """Standard deviation over the batch of the L2-normalised projections, averaged over
    dimensions (SimSiam §4.1): 0 for a collapsed encoder (every image the same output),
    about 1/√d for healthy, spread-out d-dimensional outputs."""
    return F.normalize(projections.float(), dim=1).std(dim=0).mean().item()


COLLAPSE_FRACTION = 0.2  # collapsed: the statistic below this share of its healthy value


def healthy_spread(dim: int) -> float:
    """The collapse statistic of spread-out ``dim``-dimensional projections: 1/√d."""
    return dim ** -0.5


def is_collapsed(spread: float, dim: int) -> bool:
    """The one collapse criterion: the training warning and the claims study both use it."""
    return spread < COLLAPSE_FRACTION * healthy_spread(dim)


def method_names() -> list[str]:
    """The modules of this package: every one is a method."""
    return sorted(module.name for module in pkgutil.iter_modules(__path__))


def create_method(name: str, encoder: nn.Module, feature_dim: int, config) -> nn.Module:
    """The model of method ``name`` (a module of this package) around ``encoder``."""
    if name not in method_names():
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(method_names())}")
    return importlib.import_module(f"{__name__}.{name}").build(encoder, feature_dim, config)
