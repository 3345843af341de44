"""byol: BYOL self-supervised pre-training (Grill et al. 2020, arXiv:2006.07733).

In a notebook::

    import byol
    run = byol.pretrain("path/to/images", epochs=30, out="runs/mine")   # run.encoder, run.results
    byol.evaluate([run, "random"], data="path/to/labelled", protocols=["linear"])

The pieces, usable one at a time in your own loop::

    from byol import BYOL, create_encoder, augment, byol_views, LARS, parameter_groups
"""
from .augment import ViewRecipe, augment, byol_views
from .backbones import create_encoder, load_encoder, save_encoder
from .config import PretrainConfig
from .embed import embed
from .errors import UserError
from .evaluate import EvalConfig, evaluate
from .frozen import extract_features, knn_accuracy, linear_probe
from .methods import MLPHead, collapse_statistic, create_method
from .methods.byol import BYOL, byol_loss, target_momentum
from .methods.simclr import SimCLR, nt_xent_loss
from .optim import LARS, learning_rate, parameter_groups
from .train import PretrainResult, pretrain

__all__ = ["BYOL", "EvalConfig", "LARS", "MLPHead", "PretrainConfig", "PretrainResult", "SimCLR", "UserError",
           "ViewRecipe", "augment", "byol_loss", "byol_views", "collapse_statistic", "create_encoder", "create_method",
           "embed", "evaluate", "extract_features", "knn_accuracy", "learning_rate", "linear_probe", "load_encoder",
           "nt_xent_loss", "parameter_groups", "pretrain", "save_encoder", "target_momentum"]
