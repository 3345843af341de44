"""Images/s of one BYOL training step of the default model on the CPU, per variant:
NCHW vs channels-last memory format, bf16 autocast, torch.compile.  Median of 5 steps
after 2 warm-up steps (compile's warm-up includes compilation).

    .venv/bin/python benchmarks/cpu_step.py [--batch-size 256] [--compile]
"""
import argparse
import statistics
import time

import torch

from byol import BYOL, byol_views, create_encoder, parameter_groups
from byol.views.apply import augment
from byol.optim.lars import create_optimizer

parser = argparse.ArgumentParser()
parser.add_argument("--batch-size", type=int, default=256)
parser.add_argument("--compile", action="store_true", help="also time torch.compile (about a minute to compile)")
args = parser.parse_args()

torch.manual_seed(0)
images = torch.randint(0, 256, (args.batch_size, 1, 28, 28), dtype=torch.uint8)
mean, std = torch.tensor([0.286]), torch.tensor([0.353])
views = byol_views(blur=False, crop_scale=(0.4, 1.0))


def measure(channels_last: bool, bf16: bool, compiled: bool) -> float:
    encoder = create_encoder("narrow_resnet", in_channels=1, image_size=28)
    model = BYOL(encoder, encoder.num_features, hidden_dim=1024, base_target_momentum=0.95)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimizer = create_optimizer("lars", parameter_groups(
        [(n, p) for n, p in model.named_parameters() if not n.startswith("target_")], 1e-5), 1.0)
    forward = torch.compile(model) if compiled else model
    generator = torch.Generator().manual_seed(0)

    def step():
        v1 = augment(images, views[0], 28, mean, std, generator).contiguous(memory_format=fmt)
        v2 = augment(images, views[1], 28, mean, std, generator).contiguous(memory_format=fmt)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = forward(v1, v2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.update_target(0, 100)

    for _ in range(2):
        step()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return args.batch_size / statistics.median(times)


def augmentation_ms() -> float:
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(7):
        start = time.perf_counter()
        augment(images, views[0], 28, mean, std, generator)
        augment(images, views[1], 28, mean, std, generator)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[2:])


variants = [(False, False, False), (True, False, False), (True, True, False)]
if args.compile:
    variants.append((True, False, True))
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, narrow_resnet, 28 px")
baseline = None
for channels_last, bf16, compiled in variants:
    speed = measure(channels_last, bf16, compiled)
    baseline = baseline or speed
    name = f"{'channels-last' if channels_last else 'NCHW'}{' + bf16' if bf16 else ''}{' + compile' if compiled else ''}"
    print(f"{name:28s} {speed:7.0f} img/s  ({speed / baseline:.2f}x)", flush=True)
print(f"augmenting both views: {augmentation_ms():.1f} ms per batch")
