import math

import pytest
import torch
from torch import nn

from byol.optim.lars import LARS, create_optimizer, parameter_groups
from byol.optim.schedule import learning_rate


def small_net():
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def test_biases_and_norm_parameters_are_excluded_from_decay_and_adaptation():
    net = small_net()
    regular, excluded = parameter_groups(net.named_parameters(), weight_decay=0.1)
    assert {id(p) for p in regular["params"]} == {id(net[0].weight), id(net[3].weight)}
    assert {id(p) for p in excluded["params"]} == {id(net[0].bias), id(net[1].weight), id(net[1].bias),
                                                   id(net[3].bias)}
    assert regular["weight_decay"] == 0.1 and regular["lars_adapt"]
    assert excluded["weight_decay"] == 0.0 and not excluded["lars_adapt"]


def test_lars_step_arithmetic():
    torch.manual_seed(0)
    net = small_net()
    groups = parameter_groups(net.named_parameters(), weight_decay=0.01)
    optimizer = LARS(groups, lr=0.5, momentum=0.9, trust_coefficient=1e-3)
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    net(torch.randn(5, 2, 6, 6)).pow(2).sum().backward()
    grads = {name: p.grad.clone() for name, p in net.named_parameters()}
    optimizer.step()
    for name, p in net.named_parameters():
        w, g = before[name], grads[name]
        if p.ndim > 1:  # adapted and decayed: lr · trust·‖w‖/‖g + wd·w‖ · (g + wd·w)
            update = g + 0.01 * w
            expected = w - 0.5 * (1e-3 * w.norm() / update.norm()) * update
        else:  # bias / BN: plain SGD, no decay
            expected = w - 0.5 * g
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-7, msg=name)


def test_lars_momentum_accumulates():
    p = nn.Parameter(torch.ones(3))
    optimizer = LARS([{"params": [p], "weight_decay": 0.0, "lars_adapt": False}], lr=1.0, momentum=0.9)
    for _ in range(2):
        p.grad = torch.ones(3)
        optimizer.step()
    torch.testing.assert_close(p.detach(), torch.full((3,), 1 - 1 - 1.9))


def test_lars_with_zero_weights_falls_back_to_unit_trust():
    p = nn.Parameter(torch.zeros(2, 2))
    optimizer = LARS([{"params": [p], "weight_decay": 0.0, "lars_adapt": True}], lr=0.1)
    p.grad = torch.ones(2, 2)
    optimizer.step()
    torch.testing.assert_close(p.detach(), torch.full((2, 2), -0.1))


def test_other_optimizers_use_the_same_groups():
    groups = parameter_groups(small_net().named_parameters(), weight_decay=0.1)
    for name, kind in (("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW), ("lars", LARS)):
        optimizer = create_optimizer(name, groups, lr=0.1)
        assert isinstance(optimizer, kind)
        assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    with pytest.raises(ValueError, match="unknown optimizer"):
        create_optimizer("rmsprop", groups, 0.1)


def test_warmup_then_cosine_to_zero():
    total, warmup, peak = 1000, 100, 2.0
    lrs = [learning_rate(k, total, warmup, peak) for k in range(total + 1)]
    assert lrs[0] == pytest.approx(peak / warmup)
    assert lrs[warmup - 1] == pytest.approx(peak) and lrs[warmup] == pytest.approx(peak)
    assert all(b > a for a, b in zip(lrs[:warmup - 1], lrs[1:warmup]))
    assert all(b <= a for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))
    assert lrs[total] == pytest.approx(0.0, abs=1e-12)
    midpoint = warmup + (total - warmup) // 2
    assert lrs[midpoint] == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * 0.5)), rel=1e-3)


def reference_lars_step(params, grads, buffers, lr, weight_decay, momentum, eta, clip):
    """LARS one parameter at a time, from its definition (and solo-learn's clipping)."""
    for p, g, buffer in zip(params, grads, buffers):
        update = g + weight_decay * p
        trust = eta * p.norm() / update.norm()
        if clip:
            trust = min(trust / lr, 1.0)
        buffer.mul_(momentum).add_(trust * update)
        p.sub_(lr * buffer)


@pytest.mark.parametrize("clip", [False, True])
def test_multi_tensor_lars_equals_lars_one_parameter_at_a_time(clip):
    torch.manual_seed(0)
    weights = [torch.randn(8, 4, 3, 3), torch.randn(16, 8), torch.randn(3, 16)]
    params = [nn.Parameter(w.clone()) for w in weights]
    optimizer = LARS([{"params": params, "weight_decay": 1e-4, "lars_adapt": True}], lr=2.0, momentum=0.9,
                     trust_coefficient=0.02, clip=clip)
    reference = [w.clone() for w in weights]
    buffers = [torch.zeros_like(w) for w in weights]
    for step in range(3):
        grads = [torch.randn_like(w) * (step + 1) for w in weights]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimizer.step()
        reference_lars_step(reference, grads, buffers, 2.0, 1e-4, 0.9, 0.02, clip)
    for p, r in zip(params, reference):
        torch.testing.assert_close(p.detach(), r, rtol=1e-5, atol=1e-6)


def test_clipped_lars_never_steps_a_layer_faster_than_the_learning_rate():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(10, 10) * 100)  # a large weight, a small gradient: LARS's trust is huge
    p.grad = torch.randn(10, 10) * 1e-3
    before = p.detach().clone()
    LARS([{"params": [p], "weight_decay": 0.0, "lars_adapt": True}], lr=0.1, momentum=0.0, trust_coefficient=0.02,
         clip=True).step()
    torch.testing.assert_close(p.detach(), before - 0.1 * p.grad)  # the local rate clipped at the global 0.1


def moved_by_one_step(**rates) -> dict:
    """How far one LARS training step moves each online parameter of a small BYOL (float64, so the
    differences are exact), from the same start and views; ``rates``: the PretrainConfig rates."""
    from byol import BYOL, PretrainConfig, create_encoder
    from byol.training.step import TrainStep, build_optimizer

    torch.manual_seed(0)
    model = BYOL(create_encoder("narrow_resnet", 1, None, 16), 256, 32, 16).double()
    config = PretrainConfig(**{"optimizer": "lars", "base_lr": 4.0, "bias_norm_lr": 0.2, "weight_decay": 1e-5,
                               **rates})
    step = TrainStep(model, build_optimizer(model, config, 0.0), torch.device("cpu"))
    online = {n: p for n, p in model.named_parameters() if not n.startswith("target_")}
    before = {n: p.detach().clone() for n, p in online.items()}
    generator = torch.Generator().manual_seed(1)
    step(*(torch.randn(8, 1, 16, 16, generator=generator, dtype=torch.float64) for _ in range(2)), 0.5, 0.99)
    return {n: p.detach() - before[n] for n, p in online.items()}


def test_a_training_step_moves_biases_and_norm_parameters_at_their_own_rate():
    """The CPU recipe's LARS rate is 4.0, its biases' and norms' the paper's 0.2 (``bias_norm_lr``): from
    the same start and views, one step moves every weight alike and every 1-D parameter by 0.2 / 4 as far."""
    same, paper = moved_by_one_step(bias_norm_lr=4.0), moved_by_one_step(bias_norm_lr=0.2)
    one_d = [n for n in same if same[n].ndim <= 1]
    assert one_d and all(same[n].abs().max() > 0 for n in one_d)
    for name in same:
        expected = same[name] * 0.05 if name in one_d else same[name]
        torch.testing.assert_close(paper[name], expected, rtol=1e-9, atol=1e-12, msg=name)


def test_a_training_step_moves_the_predictors_weights_at_their_own_rate():
    """``predictor_lr`` 10 × ``base_lr``: from the same start and views, one step moves the predictor's
    weights ten times as far and every other parameter (its biases and norms too) as before."""
    paper, faster = moved_by_one_step(predictor_lr=4.0), moved_by_one_step(predictor_lr=40.0)
    weights = [n for n in paper if n.startswith("predictor.") and paper[n].ndim > 1]
    assert len(weights) == 2 and all(paper[n].abs().max() > 0 for n in weights)
    for name in paper:
        expected = paper[name] * 10 if name in weights else paper[name]
        torch.testing.assert_close(faster[name], expected, rtol=1e-9, atol=1e-12, msg=name)
