import pytest
import torch

from byol import BYOL, create_encoder
from byol.commands.bench import bench
from byol.commands.cli import main


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
    from byol.base.errors import UserError

    with pytest.raises(UserError, match="seconds must be positive"):
        bench(arch="narrow_resnet", seconds=0, device="cpu")


def test_bench_defaults_fit_the_device_and_the_time_budget_sets_the_steps():
    result = bench(seconds=0.01, repeats=1, device="cpu", batch_size=8)
    assert (result.config.arch, result.config.image_size) == ("narrow_resnet", 28)  # the CPU preset's
    assert result.steps == 1  # a budget shorter than a step: one step per repeat


@pytest.mark.slow
def test_compiled_and_eager_training_steps_agree_and_moving_schedules_do_not_recompile():
    from torch._dynamo.utils import counters

    from byol.optim.lars import create_optimizer, parameter_groups
    from byol.training.step import TrainStep

    def train_step(compiled):
        torch.manual_seed(0)
        # float64: BatchNorm amplifies float32's reassociation differences within a few steps
        model = BYOL(create_encoder("narrow_resnet", 1, None, 16), 256, 32, 16).double()
        groups = parameter_groups(
            [(n, p) for n, p in model.named_parameters() if not n.startswith("target_")], 1e-4)
        groups[1]["scale"] = 0.05  # biases and norms at their own rate, as the CPU recipe's
        optimizer = create_optimizer("lars", groups, 0.0, trust_coefficient=1e-3, clip=True)
        return TrainStep(model, optimizer, torch.device("cpu"), compiled=compiled)

    eager, compiled = train_step(False), train_step(True)
    generator = torch.Generator().manual_seed(1)
    schedule = [(0.5, 0.9), (0.3, 0.95), (0.0, 0.99), (0.2, 1.0)]  # lr 0 and τ 1: the clip's and the EMA's edges
    frames = []
    for lr, tau in schedule:
        v1, v2 = (torch.randn(8, 1, 16, 16, generator=generator, dtype=torch.float64) for _ in range(2))
        losses = [step(v1, v2, lr, tau) for step in (eager, compiled)]
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-9, atol=0)
        frames.append(counters["frames"]["ok"])
    assert frames[0] == frames[-1] > 0  # lr and τ are tensors written in place: only the first step compiles
    for (name, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values()):
        # fused kernels reassociate sums: after four steps, agree to 1e-7 of the tensor's scale
        torch.testing.assert_close(b, a, rtol=1e-7, atol=1e-7 * a.abs().max().item(), msg=name)
    assert not torch.equal(eager.model.target_encoder.conv1.weight, train_step(False).model.target_encoder.conv1.weight)
    buffers = [[o.state[p]["momentum_buffer"] for p in o.param_groups[0]["params"]]
               for o in (eager.optimizer, compiled.optimizer)]
    for a, b in zip(*buffers):
        torch.testing.assert_close(b, a, rtol=1e-7, atol=1e-7 * a.abs().max().item())
