"""Where a training step's time goes: the PyTorch profiler over a few `byol bench` steps.

    python benchmarks/profile_step.py [--arch resnet18 --image-size 32 --batch-size 512] [--steps 10] [--compile]

Prints, per step: the wall time (timed without the profiler), the device's busy time (the
kernels' own time summed; on a CPU, the operators'), its share of the wall (low: the host's
launches are the limit, not the device) and how many operators the host dispatched; then the 15
kernels (operators on a CPU) that took the most time.  On an H200 (2026-11-30) `byol bench`
measured 24.3 ms of augmentation and 33.8 ms of forward, backward and optimizer in a 56.4 ms
eager step: this says which kernels, and whether the device or the host is the limit.
"""
from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from byol.base.device import resolve_device
from byol.commands.bench import BenchConfig, Step


def own_times(events, cuda: bool) -> list[tuple[str, float, int]]:
    """(name, own µs, calls) of what ran on the device: the kernels on a GPU, the operators on a CPU."""
    from torch.autograd import DeviceType

    if cuda:
        return [(e.key, e.self_device_time_total, e.count) for e in events if e.device_type == DeviceType.CUDA]
    return [(e.key, e.self_cpu_time_total, e.count) for e in events if e.key.startswith("aten::")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    settings = BenchConfig.create(None, arch=args.arch, image_size=args.image_size, batch_size=args.batch_size,
                                  compile=args.compile)
    device = resolve_device(settings.device)
    step = Step(settings, device)
    for _ in range(3):  # allocate (and compile)
        step()
    wall = 1000 * step.timed(args.steps)  # without the profiler's own overhead
    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]) as profiler:
        step.timed(args.steps)
    events = profiler.key_averages()
    ran = own_times(events, cuda)
    busy = max(sum(own for _, own, _ in ran) / args.steps / 1000, 1e-9)  # ms; floored: the shares below divide by it
    dispatched = sum(e.count for e in events if e.key.startswith("aten::")) / args.steps
    print(f"{torch.cuda.get_device_name(device) if cuda else 'CPU'}, torch {torch.__version__}; {args.arch}, "
          f"{args.image_size} px, batch {args.batch_size}, {'compiled' if args.compile else 'eager'}, "
          f"{args.steps} profiled steps")
    print(f"step {wall:.1f} ms wall; device busy {busy:.1f} ms ({100 * busy / wall:.0f} % of the wall); "
          f"aten operators dispatched per step: {dispatched:.0f}")
    print(f"| {'kernel' if cuda else 'operator'} | ms per step | share of busy | calls per step |\n"
          "| --- | --- | --- | --- |")
    for name, own, calls in sorted(ran, key=lambda r: -r[1])[:15]:
        print(f"| {name[:70]} | {own / args.steps / 1000:.2f} | {100 * own / args.steps / 1000 / busy:.1f} % | "
              f"{calls / args.steps:g} |")


if __name__ == "__main__":
    main()
