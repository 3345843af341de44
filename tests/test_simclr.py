import math

import pytest
import torch
import torch.nn.functional as F

from byol import SimCLR, create_encoder, nt_xent_loss


def test_nt_xent_matches_a_direct_computation():
    generator = torch.Generator().manual_seed(0)
    z_1, z_2 = torch.randn(5, 8, generator=generator), torch.randn(5, 8, generator=generator)
    temperature = 0.3
    views = F.normalize(torch.cat([z_1, z_2]), dim=1)
    n = len(z_1)
    terms = []
    for anchor in range(2 * n):  # SimCLR eq. 1, one anchor at a time
        partner = (anchor + n) % (2 * n)
        similarity = [float(views[anchor] @ views[k]) / temperature for k in range(2 * n)]
        denominator = sum(math.exp(similarity[k]) for k in range(2 * n) if k != anchor)
        terms.append(-math.log(math.exp(similarity[partner]) / denominator))
    assert nt_xent_loss(z_1, z_2, temperature).item() == pytest.approx(sum(terms) / (2 * n), rel=1e-5)


def test_nt_xent_is_low_when_views_agree_and_others_differ():
    z = torch.eye(6) * 5.0
    agree = nt_xent_loss(z, z, 0.1).item()
    shuffled = nt_xent_loss(z, z.roll(1, dims=0), 0.1).item()
    assert agree < 0.01 < 5 < shuffled


def tiny_simclr() -> SimCLR:
    encoder = create_encoder("narrow_resnet", in_channels=3, small_stem=True)
    return SimCLR(encoder, encoder.num_features, hidden_dim=32, projection_dim=16, temperature=0.5)


def test_simclr_trains_every_parameter_and_has_no_target():
    model = tiny_simclr()
    model(torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert not any(name.startswith("target_") for name, _ in model.named_parameters())
    model.update_target(0.5)  # no target: nothing to update, nothing to fail


def test_simclr_loss_is_nt_xent_of_the_projections_of_each_view():
    model = tiny_simclr()
    view_1, view_2 = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)
    loss = model(view_1, view_2)
    expected = nt_xent_loss(model.project(view_1), model.project(view_2), 0.5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
