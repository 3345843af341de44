"""BYOL, paper §3: online and target networks, heads, loss, τ schedule, EMA.

Grill et al., *Bootstrap Your Own Latent*, arXiv:2006.07733.  Everything the
method adds on top of an encoder lives in this file, with the switches of the
paper's ablations: no predictor, a fixed τ, other normalisation in the heads.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import feature_width
from . import MLPHead


def byol_loss(prediction: torch.Tensor, target_projection: torch.Tensor) -> torch.Tensor:
    """One direction of the BYOL loss, §3 eq. 2: ‖p̄ − z̄'‖² = 2 − 2·cos(p, z'), batch mean.

    ``target_projection`` must already be detached (it comes from the target network).
    """
    return (2 - 2 * F.cosine_similarity(prediction, target_projection, dim=-1)).mean()


def target_momentum(step: int, total_steps: int, base: float) -> float:
    """τ at optimizer step ``step`` of ``total_steps``, §3.2:
    τ = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2 — τ_base at k = 0, rising to 1 at k = K."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2


class BYOL(nn.Module):
    """Online network (encoder, projector, predictor) and its EMA target (encoder, projector).

    ``encoder`` is any module mapping images (N, C, H, W) to features (N, D).  After
    training keep ``online_encoder``; everything else exists only to train it.

    Usage in your own loop::

        loss = model(view_1, view_2)
        loss.backward(); optimizer.step(); optimizer.zero_grad()
        model.update_target(target_momentum(step, total_steps, 0.996))
    """

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int | None = None,
        hidden_dim: int = 4096,
        projection_dim: int = 256,
        predictor: bool = True,
        head_norm: str = "batchnorm",
    ):
        super().__init__()
        # The width: the encoder's num_features (byol's and timm's have it), else one eval-mode forward.
        feature_dim = feature_dim or getattr(encoder, "num_features", None) or feature_width(encoder, 3, 32)
        # Ablation (§5, SPEC): without a predictor the online output is the projection itself.
        self.online_encoder = encoder
        self.online_projector = MLPHead(feature_dim, hidden_dim, projection_dim, head_norm)
        self.predictor = MLPHead(projection_dim, hidden_dim, projection_dim, head_norm) if predictor else nn.Identity()
        # §3.1: the target starts as a copy of the online network and is never
        # touched by the optimizer (stop-gradient).
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.online_projector).requires_grad_(False)

    def online_parameters(self) -> list[nn.Parameter]:
        """What the optimizer trains: encoder, projector and predictor."""
        return [p for name, p in self.named_parameters() if not name.startswith("target_")]

    def ema_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(target, online) parameter pairs that the EMA updates, in a fixed order."""
        pairs = []
        for target, online in ((self.target_encoder, self.online_encoder),
                               (self.target_projector, self.online_projector)):
            pairs += list(zip(target.parameters(), online.parameters()))
        return pairs

    def project(self, views: torch.Tensor) -> torch.Tensor:
        """Online projections g_θ(f_θ(v)), before the predictor."""
        return self.online_projector(self.online_encoder(views))

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> torch.Tensor:
        """Symmetrised loss L + L̃ of §3 eq. 2 for two augmented views of one batch.

        Each view goes through the networks separately, as the official
        implementation does: concatenating them would mix the two views in the
        BatchNorm statistics.  The target runs in train mode like the online
        network (batch statistics), also as in the official implementation.
        """
        p_1 = self.predictor(self.project(view_1))
        p_2 = self.predictor(self.project(view_2))
        with torch.no_grad():
            z_1 = self.target_projector(self.target_encoder(view_1))
            z_2 = self.target_projector(self.target_encoder(view_2))
        # The two directions are summed, not averaged (the paper's L_total); the
        # learning rates of §3.3 assume this scale.
        return byol_loss(p_1, z_2) + byol_loss(p_2, z_1)

    @torch.no_grad()
    def update_target(self, tau: float | torch.Tensor) -> None:
        """ξ ← τξ + (1 − τ)θ after an optimizer step (§3.1), τ from the caller's schedule
        (``target_momentum``; a fixed τ for the ablations: 0 makes the target the online network,
        1 a frozen random network).

        Only parameters are averaged.  BatchNorm running statistics of the target are its
        own, accumulated by its own train-mode forward passes as in the official
        implementation; they never enter the loss (train mode normalises with batch
        statistics).
        """
        targets, onlines = zip(*self.ema_pairs())
        # ξ + (1 − τ)(θ − ξ): one multi-tensor kernel over all pairs, exact at τ = 0 and τ = 1;
        # τ may be a 0-d device tensor (the compiled step's), so nothing waits for the host.
        torch._foreach_lerp_(targets, onlines, 1 - tau)


def build(encoder: nn.Module, feature_dim: int, config) -> BYOL:
    """BYOL as a ``PretrainConfig`` describes it (see ``byol.methods``)."""
    return BYOL(encoder, feature_dim, config.hidden_dim, config.projection_dim, predictor=config.predictor,
                head_norm=config.head_norm)
