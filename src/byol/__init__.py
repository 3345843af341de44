"""byol: BYOL self-supervised pre-training (Grill et al. 2020, arXiv:2006.07733).

In a notebook::

    import byol
    run = byol.pretrain("path/to/images", epochs=30, out="runs/mine")   # run.encoder, run.results
    byol.evaluate([run, "random"], data="path/to/labelled", protocols=["linear"])

The pieces, usable one at a time in your own loop::

    from byol import BYOL, create_encoder, augment, byol_views, LARS, parameter_groups, target_momentum

The package reads in the order data flows: ``data`` → ``views`` → ``models`` → ``optim`` →
``training`` → ``evaluation``, with ``base`` and ``settings`` beneath and ``commands`` on top.
"""
from .base.errors import UserError
from .commands.embed import embed
from .evaluation.compare import EvalConfig, evaluate
from .evaluation.frozen import extract_features, knn_accuracy, linear_probe
from .models.backbones import create_encoder, load_encoder, save_encoder
from .models.methods import MLPHead, collapse_statistic, create_method
from .models.methods.byol import BYOL, byol_loss, target_momentum
from .models.methods.simclr import SimCLR, nt_xent_loss
from .optim.lars import LARS, parameter_groups
from .optim.schedule import learning_rate
from .settings.pretrain import PretrainConfig
from .training.loop import PretrainResult, pretrain
from .views.apply import augment
from .views.spec import ViewSpec, byol_views

__all__ = ["BYOL", "EvalConfig", "LARS", "MLPHead", "PretrainConfig", "PretrainResult", "SimCLR", "UserError",
           "ViewSpec", "augment", "byol_loss", "byol_views", "collapse_statistic", "create_encoder", "create_method",
           "embed", "evaluate", "extract_features", "knn_accuracy", "learning_rate", "linear_probe", "load_encoder",
           "nt_xent_loss", "parameter_groups", "pretrain", "save_encoder", "target_momentum"]
