import pytest
import torch

from byol import BYOL, create_encoder
from byol.bench import bench
from byol.cli import main


def test_bench_runs_on_cpu_and_its_parts_are_consistent(capsys):
    assert main(["bench", "--arch", "narrow_resnet", "--image-size", "16", "--batch-size", "8", "--channels", "1",
                 "--hidden-dim", "32", "--seconds", "2", "--repeats", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for fragment in ("warming up", "timing 1 x", "timing the parts", "images/s", "augmentation (2 views)",
                     "forward + backward + optimizer", "EMA update", "GFLOP per source image", "FLOP utilisation",
                     "peak memory"):
        assert fragment in out, fragment  # it says what it is doing, then the table
    result = bench(arch="narrow_resnet", image_size=16, batch_size=8, channels=1, seconds=2, repeats=1,
                   device="cpu", hidden_dim=32, peak_tflops=1.0)
    assert result.images_per_s == pytest.approx(8000 / result.step_ms)
    assert 0 < result.utilisation == pytest.approx(result.tflops / 1.0)
    # counted work: 2 views x (online forward + backward ~ 3x forward, plus the target forward) of the encoder
    encoder = create_encoder("narrow_resnet", 1, None, 16)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        encoder(torch.randn(8, 1, 16, 16))
    forward_per_image = counter.get_total_flops() / 8 / 1e9
    assert 7.5 * forward_per_image < result.gflop_per_image < 9 * forward_per_image


def test_bench_rejects_nonsense():
    from byol.errors import UserError

    with pytest.raises(UserError, match="seconds must be positive"):
        bench(arch="narrow_resnet", seconds=0, device="cpu")


def test_bench_defaults_fit_the_device_and_the_time_budget_sets_the_steps():
    result = bench(seconds=0.01, repeats=1, device="cpu", batch_size=8)
    assert (result.config.arch, result.config.image_size) == ("narrow_resnet", 28)  # the CPU preset's
    assert result.steps == 1  # a budget shorter than a step: one step per repeat


@pytest.mark.slow
def test_compiled_and_eager_steps_agree_on_cpu():
    torch.manual_seed(0)
    eager = BYOL(create_encoder("narrow_resnet", 1, None, 16), 256, 32, 16)
    compiled_model = BYOL(create_encoder("narrow_resnet", 1, None, 16), 256, 32, 16)
    compiled_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_model)
    generator = torch.Generator().manual_seed(1)
    v1, v2 = torch.randn(8, 1, 16, 16, generator=generator), torch.randn(8, 1, 16, 16, generator=generator)
    losses = []
    for step_model in (eager, compiled):
        loss = step_model(v1, v2)
        loss.backward()
        losses.append(loss.detach())
    assert torch.allclose(losses[0], losses[1], rtol=1e-4, atol=1e-5)
    for (name, a), b in zip(eager.named_parameters(), compiled_model.parameters()):
        if a.grad is not None:  # fused kernels reassociate sums: agree to 0.1 % of the gradient's scale
            # (a bias right before BatchNorm has a zero gradient up to rounding: hence the floor)
            atol = max(1e-3 * a.grad.abs().max().item(), 1e-6)
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=atol, msg=name)
