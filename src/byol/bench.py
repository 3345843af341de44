"""``byol bench``: how fast is a pre-training step here, and where does the time go.

Images/s of whole steps after warm-up (synthetic uint8 images already on the device, so
the data path is excluded), then the same step cut into its three parts, each timed
with the device synchronised around it: augmentation (two views), forward + backward +
optimizer, and the EMA update.  FLOPs are counted once with ``torch.utils.flop_counter``
(convolutions and matmuls of the online forward/backward and the target forward), so the
FLOP utilisation is counted work / time / the device's peak.
"""
from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .augment import byol_views
from .config import PretrainConfig
from .data import Batch
from .device import resolve_device, synchronize
from .settings import Settings, option, require
from .train import build_model, build_optimizer, optimizer_step, two_views

# Dense bf16 tensor-core peaks (vendor data sheets, TFLOP/s), for the utilisation column.
PEAK_TFLOPS = {"H100 80GB HBM3": 989.4, "H100 SXM": 989.4, "H200": 989.4, "H100 PCIe": 756.0,
               "A100": 312.0, "L40S": 362.1, "A10": 125.0, "RTX 4090": 165.2}


@dataclass
class BenchConfig(Settings):
    """Settings of ``byol bench``."""

    arch: str = option("resnet18", "encoder to time")
    image_size: int = option(32, "side of the views")
    batch_size: int = option(512, "images per step (each gives two views)")
    channels: int = option(3, "image channels")
    hidden_dim: int = option(4096, "projector / predictor hidden width")
    steps: int = option(20, "timed steps per repeat")
    warmup: int = option(5, "untimed steps first")
    repeats: int = option(3, "timed repeats; the median is reported")
    device: str = option("auto", "cuda, cpu or auto (cuda when available)")
    compile: bool = option(False, "torch.compile the model first")
    peak_tflops: float | None = option(None, "the device's peak TFLOP/s, for the utilisation column (known for "
                                       "H100/H200/A100)")

    def check(self) -> None:
        for name in ("steps", "repeats", "channels"):
            require(getattr(self, name) >= 1, name, f"must be positive, got {getattr(self, name)}")
        require(self.warmup >= 0, "warmup", f"must be >= 0, got {self.warmup}")
        require(self.batch_size >= 2, "batch_size", f"must be at least 2, got {self.batch_size}")


@dataclass
class BenchResult:
    config: BenchConfig
    images_per_s: float           # source images per second, whole steps, median over repeats
    step_ms: float
    augment_ms: float
    update_ms: float              # forward + backward + optimizer
    ema_ms: float
    gflop_per_image: float
    tflops: float                 # achieved
    utilisation: float | None     # of the device's peak, when known
    peak_memory_gib: float


def _peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def bench(**settings) -> BenchResult:
    """Time BYOL pre-training steps (``BenchConfig``'s settings: ``arch``, ``image_size``, ...)."""
    settings = BenchConfig.create(**settings)
    arch, image_size, batch_size, channels = settings.arch, settings.image_size, settings.batch_size, settings.channels
    steps, warmup, repeats, compile = settings.steps, settings.warmup, settings.repeats, settings.compile
    target_device = resolve_device(settings.device)
    config = PretrainConfig(arch=arch, image_size=image_size, batch_size=batch_size, hidden_dim=settings.hidden_dim,
                            compile=compile)
    torch.manual_seed(0)
    model = build_model(config, channels, image_size).to(target_device).to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config, 0.1)
    step_model = torch.compile(model) if compile else model
    generator = torch.Generator(device=target_device).manual_seed(0)
    images = torch.randint(0, 256, (batch_size, channels, image_size, image_size), dtype=torch.uint8,
                           device=target_device, generator=generator)
    mean = torch.full((channels,), 0.5, device=target_device)
    std = torch.full((channels,), 0.25, device=target_device)
    views = byol_views(blur=config.blur, crop_scale=(config.crop_min_scale, 1.0))
    total = 10 ** 6

    # The training loop's own pieces (train.py), so the bench times exactly its step.
    def make_views():
        return two_views(Batch(images, None), views, image_size, mean, std, generator)

    def update(v1, v2):
        return optimizer_step(step_model, optimizer, v1, v2, target_device)

    def whole_step(step: int):
        update(*make_views())
        model.update_target(step, total)

    for step in range(warmup):
        whole_step(step)
    synchronize(target_device)
    if target_device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(target_device)

    step_times = []
    for _ in range(repeats):
        synchronize(target_device)
        start = time.perf_counter()
        for step in range(steps):
            whole_step(step)
        synchronize(target_device)
        step_times.append((time.perf_counter() - start) / steps)

    parts = {"augment": [], "update": [], "ema": []}
    for step in range(steps):
        synchronize(target_device)
        t0 = time.perf_counter()
        v1, v2 = make_views()
        synchronize(target_device)
        t1 = time.perf_counter()
        update(v1, v2)
        synchronize(target_device)
        t2 = time.perf_counter()
        model.update_target(step, total)
        synchronize(target_device)
        t3 = time.perf_counter()
        for name, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
            parts[name].append(value)

    with FlopCounterMode(display=False) as counter:
        update(*make_views())
    flops = counter.get_total_flops()
    step_s = statistics.median(step_times)
    achieved = flops / step_s / 1e12
    peak = _peak_tflops(target_device, settings.peak_tflops)
    if target_device.type == "cuda":
        memory = torch.cuda.max_memory_allocated(target_device) / 2 ** 30
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB → GiB (process peak RSS)
    return BenchResult(settings, batch_size / step_s, 1000 * step_s, *(1000 * statistics.median(parts[k]) for k in parts),
                       flops / batch_size / 1e9, achieved, achieved / peak if peak else None, memory)


def print_bench(result: BenchResult) -> None:
    config = result.config
    parts_ms = result.augment_ms + result.update_ms + result.ema_ms
    rows = [
        ("images/s (whole steps, median)", f"{result.images_per_s:,.0f}"),
        ("step", f"{result.step_ms:.1f} ms"),
        ("augmentation (2 views)", f"{result.augment_ms:.1f} ms ({100 * result.augment_ms / parts_ms:.0f} %)"),
        ("forward + backward + optimizer", f"{result.update_ms:.1f} ms ({100 * result.update_ms / parts_ms:.0f} %)"),
        ("EMA update", f"{result.ema_ms:.2f} ms ({100 * result.ema_ms / parts_ms:.1f} %)"),
        ("counted work", f"{result.gflop_per_image:.2f} GFLOP per source image"),
        ("achieved", f"{result.tflops:.1f} TFLOP/s"),
        ("FLOP utilisation", "n/a (give --peak-tflops)" if result.utilisation is None
         else f"{100 * result.utilisation:.1f} % of peak"),
        ("peak memory", f"{result.peak_memory_gib:.2f} GiB"),
    ]
    print(f"byol bench: {config.arch}, {config.image_size} px, batch {config.batch_size}, {config.device}"
          f"{', compiled' if config.compile else ''}")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print("  (parts are timed one at a time with the device synchronised around each; they add up to more "
          "than a whole step, which overlaps them)")
