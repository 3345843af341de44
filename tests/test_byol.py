import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from byol import BYOL, byol_loss, create_encoder, target_momentum


def tiny_model(**kwargs) -> BYOL:
    encoder = create_encoder("narrow_resnet", in_channels=3, small_stem=True)
    return BYOL(encoder, encoder.num_features, hidden_dim=32, projection_dim=16, **kwargs)


def views(n=8, size=16):
    return torch.randn(n, 3, size, size), torch.randn(n, 3, size, size)


def test_target_receives_no_gradient():
    model = tiny_model()
    model(*views()).backward()
    for name, p in model.named_parameters():
        if name.startswith("target_"):
            assert p.grad is None and not p.requires_grad, name
        else:
            assert p.grad is not None, name


def test_optimizer_step_leaves_target_untouched():
    model = tiny_model()
    before = copy.deepcopy(model.target_encoder.state_dict())
    optimizer = torch.optim.SGD(model.online_parameters(), lr=0.1)
    model(*views()).backward()
    optimizer.step()
    for name, value in model.target_encoder.state_dict().items():
        if "running" in name or "num_batches" in name:
            continue  # BN statistics: the target's own forward passes update them (see update_target)
        assert torch.equal(value, before[name]), name
    assert not torch.equal(model.online_encoder.conv1.weight, model.target_encoder.conv1.weight)


def test_ema_matches_formula():
    model = tiny_model()
    with torch.no_grad():
        for p in model.online_parameters():
            p.add_(torch.randn_like(p))
    pairs = [(t.detach().clone().double(), o.detach().clone().double()) for t, o in model.ema_pairs()]
    tau = target_momentum(37, 100, 0.996)
    model.update_target(tau)
    eps = torch.finfo(torch.float32).eps
    for (target, _), (old_target, online) in zip(model.ema_pairs(), pairs):
        expected = tau * old_target + (1 - tau) * online
        # ξ ← τξ + (1 − τ)θ up to float32 rounding of the two terms.
        bound = 2 * eps * (tau * old_target.abs() + (1 - tau) * online.abs()) + 1e-30
        assert ((target.double() - expected).abs() <= bound).all()


def test_ema_leaves_batchnorm_buffers_alone():
    model = tiny_model()
    with torch.no_grad():
        model.online_encoder.bn1.running_mean.fill_(5.0)
    model.update_target(0.99)
    assert torch.equal(model.target_encoder.bn1.running_mean, torch.zeros_like(model.target_encoder.bn1.running_mean))


def test_fixed_momentum_one_and_zero():
    model = tiny_model()
    with torch.no_grad():
        for p in model.online_parameters():
            p.add_(1.0)
    frozen = [t.clone() for t, _ in model.ema_pairs()]
    model.update_target(1.0)
    assert all(torch.equal(t, f) for (t, _), f in zip(model.ema_pairs(), frozen))
    model.update_target(0.0)
    assert all(torch.equal(t, o) for t, o in model.ema_pairs())


def test_tau_schedule_endpoints_and_monotone():
    total = 1000
    values = [target_momentum(k, total, 0.996) for k in range(total + 1)]
    assert values[0] == pytest.approx(0.996)
    assert values[-1] == pytest.approx(1.0)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[500] == pytest.approx(1 - 0.004 / 2)


def test_loss_is_two_minus_two_cosine_per_pair():
    p, z = torch.randn(5, 7), torch.randn(5, 7)
    per_pair = [2 - 2 * torch.dot(p[i], z[i]) / (p[i].norm() * z[i].norm()) for i in range(5)]
    assert byol_loss(p, z).item() == pytest.approx(torch.stack(per_pair).mean().item(), abs=1e-6)
    normalised_distance = (F.normalize(p, dim=1) - F.normalize(z, dim=1)).pow(2).sum(1).mean()
    assert byol_loss(p, z).item() == pytest.approx(normalised_distance.item(), abs=1e-6)


def test_loss_is_zero_for_identical_normalised_outputs():
    p = torch.randn(4, 6)
    assert byol_loss(p, 3.0 * p).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(p, -p).item() == pytest.approx(4.0, abs=1e-6)


def test_symmetrised_loss_sums_both_directions_and_is_symmetric():
    model = tiny_model()
    v1, v2 = views()
    loss = model(v1, v2)
    assert torch.equal(loss, model(v2, v1))
    p1 = model.predictor(model.online_projector(model.online_encoder(v1)))
    p2 = model.predictor(model.online_projector(model.online_encoder(v2)))
    z1 = model.target_projector(model.target_encoder(v1))
    z2 = model.target_projector(model.target_encoder(v2))
    assert loss.item() == pytest.approx((byol_loss(p1, z2) + byol_loss(p2, z1)).item(), rel=1e-6)


class RecordingEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.batch_sizes = []

    def forward(self, x):
        self.batch_sizes.append(len(x))
        return self.net(x)


def test_views_are_forwarded_separately():
    """BatchNorm must not see both views in one batch (official implementation)."""
    encoder = RecordingEncoder()
    model = BYOL(encoder, feature_dim=4, hidden_dim=8, projection_dim=4)
    model.online_encoder.batch_sizes.clear()
    model(*views(n=6))
    assert model.online_encoder.batch_sizes == [6, 6]
    assert model.target_encoder.batch_sizes == [6, 6]


def test_construction_does_not_touch_batchnorm_statistics():
    encoder = RecordingEncoder()  # no num_features: BYOL must probe the width itself
    model = BYOL(encoder, hidden_dim=8, projection_dim=4)
    bn = model.online_encoder.net[1]
    assert model.online_projector[0].in_features == 4
    assert bn.num_batches_tracked.item() == 0
    assert torch.equal(bn.running_mean, torch.zeros(4)) and torch.equal(bn.running_var, torch.ones(4))
    assert model.training


def test_heads_are_linear_bn_relu_linear():
    model = tiny_model()
    for head in (model.online_projector, model.predictor, model.target_projector):
        assert [type(m) for m in head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert model.online_projector[0].in_features == model.online_encoder.num_features
    assert model.predictor[0].in_features == model.predictor[3].out_features == 16
    assert not hasattr(model, "target_predictor")


def test_collapse_statistic_is_zero_when_collapsed_and_one_over_root_d_when_spread():
    from byol import collapse_statistic

    assert collapse_statistic(torch.ones(512, 64) * 3.0) == pytest.approx(0.0, abs=1e-6)
    spread = collapse_statistic(torch.randn(4096, 64, generator=torch.Generator().manual_seed(0)))
    assert spread == pytest.approx(64 ** -0.5, rel=0.02)


def test_no_predictor_means_no_predictor_parameters_and_projections_are_compared():
    model = tiny_model(predictor=False)
    assert sum(p.numel() for p in model.predictor.parameters()) == 0
    v1, v2 = views()
    z1, z2 = model.target_projector(model.target_encoder(v1)), model.target_projector(model.target_encoder(v2))
    expected = byol_loss(model.project(v1), z2.detach()) + byol_loss(model.project(v2), z1.detach())
    assert model(v1, v2).item() == pytest.approx(expected.item(), rel=1e-6)
    with_predictor = tiny_model()
    assert sum(p.numel() for p in with_predictor.predictor.parameters()) > 0


def test_the_plan_is_the_one_source_of_tau_cosine_or_the_fixed_ablation_value():
    from byol import PretrainConfig
    from byol.training.step import Plan

    scheduled = Plan(PretrainConfig(epochs=2, base_target_momentum=0.99), 16, 5, 8)
    assert [scheduled.tau(k) for k in (0, 5, 10)] == [pytest.approx(target_momentum(k, 10, 0.99)) for k in (0, 5, 10)]
    assert scheduled.tau(0) == pytest.approx(0.99) and scheduled.tau(10) == pytest.approx(1.0)
    fixed = Plan(PretrainConfig(epochs=2, base_target_momentum=0.99, target_momentum=1.0), 16, 5, 8)
    assert {fixed.tau(k) for k in range(11)} == {1.0}
    assert Plan(PretrainConfig(epochs=2, method="simclr"), 16, 5, 8).tau(3) is None


def test_tau_one_leaves_the_target_untouched_and_tau_zero_copies_the_online_network():
    frozen = tiny_model()
    start = [t.clone() for t, _ in frozen.ema_pairs()]
    optimizer = torch.optim.SGD(frozen.online_parameters(), lr=0.5)
    for step in range(3):
        frozen(*views()).backward()
        optimizer.step()
        optimizer.zero_grad()
        frozen.update_target(1.0)
    assert all(torch.equal(t, s) for (t, _), s in zip(frozen.ema_pairs(), start))
    assert not all(torch.equal(o, s) for (_, o), s in zip(frozen.ema_pairs(), start))  # the online net did learn

    copied = tiny_model()
    with torch.no_grad():
        for p in copied.online_parameters():
            p.add_(torch.randn_like(p))
    copied.update_target(0.0)
    assert all(torch.equal(t, o) for t, o in copied.ema_pairs())


@pytest.mark.parametrize("norm, layers", [("layernorm", [nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear]),
                                          ("none", [nn.Linear, nn.ReLU, nn.Linear])])
def test_head_norm_switch_changes_every_head(norm, layers):
    model = tiny_model(head_norm=norm)
    for head in (model.online_projector, model.predictor, model.target_projector):
        assert [type(m) for m in head] == layers
    model(*views()).backward()  # still trains


def test_method_switch_builds_the_named_method(tmp_path):
    from byol import PretrainConfig, SimCLR
    from byol.base.errors import UserError, command_line
    from byol.training.step import build_model

    config = PretrainConfig(method="simclr", arch="narrow_resnet", hidden_dim=32, projection_dim=16)
    assert isinstance(build_model(config, 1, 28), SimCLR)
    config = PretrainConfig(predictor=False, target_momentum=1.0, head_norm="none", arch="narrow_resnet",
                            hidden_dim=32, projection_dim=16)
    model = build_model(config, 1, 28)
    assert isinstance(model, BYOL)
    assert isinstance(model.predictor, nn.Identity) and not any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    with pytest.raises(UserError, match="method must be one of byol, simclr, got 'moco'"):
        PretrainConfig(method="moco")
    with pytest.raises(UserError, match="method simclr: target_momentum and turning off predictor are BYOL ablations"):
        PretrainConfig(method="simclr", target_momentum=0.5)
    with command_line(), pytest.raises(UserError, match="--head-norm must be one of batchnorm, layernorm, none"):
        PretrainConfig.create(head_norm="groupnorm")  # the same check, naming the flag on the command line
