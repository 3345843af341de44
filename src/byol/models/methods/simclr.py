"""SimCLR, the contrastive baseline BYOL is compared with (Chen et al. 2020, arXiv:2002.05709).

One encoder and a 2-layer projector; the NT-Xent loss pulls the two views of an image
together and pushes them away from the other 2N − 2 views of the batch (the negative
pairs BYOL does without).  It runs on the same encoder, views, optimiser and loop as
BYOL, as in the BYOL paper's own SimCLR re-implementation for its batch-size and
augmentation ablations (§5).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from . import MLPHead


def nt_xent_loss(z_1: torch.Tensor, z_2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent, SimCLR eq. 1, averaged over all 2N views.

    ``z_1[i]`` and ``z_2[i]`` are the projections of the two views of image i.  Each view
    is classified among the other 2N − 1 by cosine similarity / ``temperature``, with
    its partner as the right answer.
    """
    n = len(z_1)
    with torch.autocast(z_1.device.type, enabled=False):  # bf16 logits / T would lose the small differences
        z = F.normalize(torch.cat([z_1, z_2]).float(), dim=1)
        logits = z @ z.T / temperature
    # A view is not its own candidate: -inf on the diagonal drops it from the softmax.
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, partner)


def _gather(z: torch.Tensor) -> torch.Tensor:
    """All ranks' rows, in rank order, with gradients flowing back to each rank's own rows.

    With torchrun every rank computes the loss of the whole global batch (its negatives
    are all 2N − 2 other views, as in SimCLR's cross-replica setup).  The all-gather's
    backward sums the W identical copies of each row's gradient and DDP then averages
    over the W ranks: the gradient is the one-process gradient of the global batch."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return z
    return torch.cat(torch.distributed.nn.functional.all_gather(z))


class SimCLR(nn.Module):
    """Encoder f and projector g; the loss is NT-Xent on g(f(v)), g(f(v')).

    ``encoder`` maps images (N, C, H, W) to features (N, D); keep ``online_encoder``
    after training.  SimCLR has no target network: ``update_target`` does nothing.
    """

    def __init__(self, encoder: nn.Module, feature_dim: int, hidden_dim: int = 2048, projection_dim: int = 128,
                 temperature: float = 0.5, head_norm: str = "batchnorm"):
        super().__init__()
        self.temperature = temperature
        self.online_encoder = encoder
        self.online_projector = MLPHead(feature_dim, hidden_dim, projection_dim, head_norm)

    def project(self, views: torch.Tensor) -> torch.Tensor:
        return self.online_projector(self.online_encoder(views))

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> torch.Tensor:
        # Views go through the network separately, as in BYOL, so BatchNorm never
        # normalises the two views of an image together.
        return nt_xent_loss(_gather(self.project(view_1)), _gather(self.project(view_2)), self.temperature)

    def update_target(self, tau) -> None:
        """No target network: nothing to update."""


def build(encoder: nn.Module, feature_dim: int, config) -> SimCLR:
    """SimCLR as a ``PretrainConfig`` describes it (see ``byol.methods``)."""
    return SimCLR(encoder, feature_dim, config.hidden_dim, config.projection_dim, config.temperature,
                  config.head_norm)
