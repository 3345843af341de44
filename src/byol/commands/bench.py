"""``byol bench``: how fast is a pre-training step here, and where does the time go.

Images/s of whole steps (synthetic uint8 images already on the device, so the data path is
excluded), then the same step cut into its three parts, each timed with the device
synchronised around it: augmentation (two views), forward + backward + optimizer, and the EMA
update.  FLOPs are counted once with ``torch.utils.flop_counter`` (convolutions and matmuls of
the online forward/backward and the target forward), so the FLOP utilisation is counted work /
time / the device's peak.  The number of steps follows a time budget (``seconds``), so the
bench takes about as long on a laptop CPU as on an H100, and says what it is doing.
"""
from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..base.device import autocast, resolve_device, synchronize
from ..settings.mechanism import option, require
from ..settings.options import CompileOptions, DeviceOption
from ..settings.pretrain import PretrainConfig
from ..settings.recipes import DataFacts, resolve
from ..training.step import SyntheticStep

# Dense bf16 tensor-core peaks (vendor data sheets, TFLOP/s), for the utilisation column.
PEAK_TFLOPS = {"H100 80GB HBM3": 989.4, "H100 SXM": 989.4, "H200": 989.4, "H100 PCIe": 756.0,
               "A100": 312.0, "L40S": 362.1, "A10": 125.0, "RTX 4090": 165.2}


# The images the bench stands in for, by device: the README's Fashion-MNIST run on a CPU, CIFAR-10
# on a GPU (the speed targets' setting); the recipe derives everything else from them.
STAND_IN = {"cpu": (60_000, 28), "cuda": (50_000, 32)}  # (images, side)


@dataclass
class BenchConfig(CompileOptions, DeviceOption):
    """Settings of ``byol bench``."""

    arch: str | None = option(None, "encoder to time; default: the recipe's for the device (resnet18 on a GPU, "
                              "narrow_resnet on a CPU)")
    image_size: int | None = option(None, "side of the views; default: the stand-in data's, Fashion-MNIST's 28 px "
                                    "on a CPU, CIFAR-10's 32 on a GPU")
    batch_size: int | None = option(None, "images per step (each gives two views); default: the recipe's for the "
                                    "stand-in data (256 on a CPU, 512 on a GPU)")
    channels: int = option(3, "image channels")
    hidden_dim: int | None = option(None, "projector / predictor hidden width; default: the recipe's (4096 on a GPU)")
    seconds: float = option(60.0, "about how long the whole bench runs: warm-up, timed repeats, then the parts")
    repeats: int = option(3, "timed repeats; the median is reported")
    peak_tflops: float | None = option(None, "the device's peak TFLOP/s, for the utilisation column (known for "
                                       "H100/H200/A100)")

    def check(self) -> None:
        super().check()
        require(self.channels >= 1, "channels", f"must be positive, got {self.channels}")
        require(self.repeats >= 1, "repeats", f"must be positive, got {self.repeats}")
        require(self.seconds > 0, "seconds", f"must be positive, got {self.seconds}")
        require(self.batch_size is None or self.batch_size >= 2, "batch_size",
                f"must be at least 2, got {self.batch_size}")


@dataclass
class BenchResult:
    config: BenchConfig           # with the defaults filled in
    images_per_s: float           # source images per second, whole steps, median over repeats
    step_ms: float
    augment_ms: float
    update_ms: float              # forward + backward + optimizer
    ema_ms: float
    gflop_per_image: float
    tflops: float                 # achieved
    utilisation: float | None     # of the device's peak, when known
    peak_memory_gib: float
    steps: int                    # timed steps per repeat


def _peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def _say(text: str) -> None:
    print(f"byol bench: {text}", flush=True)


class Step(SyntheticStep):
    """The training loop's own step around synthetic images, at the settings the recipe derives
    for the bench's stand-in data, with its parts timed apart."""

    def __init__(self, settings: BenchConfig, device: torch.device):
        images, side = STAND_IN[device.type]
        config = PretrainConfig(arch=settings.arch, image_size=settings.image_size, batch_size=settings.batch_size,
                                hidden_dim=settings.hidden_dim)
        self.config = resolve(config, DataFacts(images, side, settings.channels, 8, False, device.type))[0]
        self.settings = settings.replace(arch=self.config.arch, image_size=self.config.image_size,
                                         batch_size=self.config.batch_size, hidden_dim=self.config.hidden_dim)
        super().__init__(self.config, settings.channels, device, settings.compile, settings.compile_mode)

    def update(self, view_1, view_2):
        """Forward, backward and optimizer: the training step without its EMA (τ = None)."""
        return self.train_step(view_1, view_2, 0.1, None)

    def ema(self):
        """The EMA alone, eager: one multi-tensor lerp, as inside the compiled step."""
        self.model.update_target(0.99)

    def timed(self, steps: int) -> float:
        """Seconds per step over ``steps`` whole steps."""
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self()
        synchronize(self.device)
        return (time.perf_counter() - start) / steps


def bench(*, config_file: str | None = None, **settings) -> BenchResult:
    """Time BYOL pre-training steps (``BenchConfig``'s settings: ``arch``, ``image_size``, ...)."""
    settings = BenchConfig.create(config_file, **settings)
    device = resolve_device(settings.device)
    step = Step(settings, device)
    settings = step.settings
    _say(f"{settings.arch}, {settings.image_size} px, batch {settings.batch_size}, {device}"
         f"{settings.compile_label()}: warming up{' (compiling)' if settings.compile else ''} ...")
    started = time.perf_counter()
    step(), step(), step.update(*step.make_views())  # the first steps allocate (and compile, with and without EMA)
    probe = step.timed(1)
    while time.perf_counter() - started < 0.1 * settings.seconds:
        probe = min(probe, step.timed(1))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    steps = max(1, int(0.6 * settings.seconds / settings.repeats / probe))
    _say(f"timing {settings.repeats} x {steps} steps (~{probe * 1000:.0f} ms each) ...")
    step_s = statistics.median(step.timed(steps) for _ in range(settings.repeats))
    parts = {"augment": [], "update": [], "ema": []}
    count = max(1, int(0.25 * settings.seconds / step_s))
    _say(f"timing the parts over {count} steps ...")
    for _ in range(count):
        synchronize(device)
        t0 = time.perf_counter()
        view_1, view_2 = step.make_views()
        synchronize(device)
        t1 = time.perf_counter()
        step.update(view_1, view_2)
        synchronize(device)
        t2 = time.perf_counter()
        step.ema()
        synchronize(device)
        t3 = time.perf_counter()
        for name, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
            parts[name].append(value)
    with FlopCounterMode(display=False) as counter:  # the eager model: the same work, counted op by op
        with autocast(device):
            loss = step.model(*step.make_views())
        loss.backward()
    step.model.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    achieved = flops / step_s / 1e12
    peak = _peak_tflops(device, settings.peak_tflops)
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated(device) / 2 ** 30
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB → GiB (process peak RSS)
    batch = settings.batch_size
    return BenchResult(settings, batch / step_s, 1000 * step_s, *(1000 * statistics.median(parts[k]) for k in parts),
                       flops / batch / 1e9, achieved, achieved / peak if peak else None, memory, steps)


def print_bench(result: BenchResult) -> None:
    parts_ms = result.augment_ms + result.update_ms + result.ema_ms
    rows = [
        ("images/s (whole steps, median)", f"{result.images_per_s:,.0f}"),
        ("step", f"{result.step_ms:.1f} ms"),
        ("augmentation (2 views)", f"{result.augment_ms:.1f} ms ({100 * result.augment_ms / parts_ms:.0f} %)"),
        ("forward + backward + optimizer", f"{result.update_ms:.1f} ms ({100 * result.update_ms / parts_ms:.0f} %)"),
        ("EMA update", f"{result.ema_ms:.2f} ms ({100 * result.ema_ms / parts_ms:.1f} %)"),
        ("counted work", f"{result.gflop_per_image:.2f} GFLOP per source image"),
        ("achieved", f"{result.tflops:.2f} TFLOP/s"),
        ("FLOP utilisation", "n/a (give --peak-tflops)" if result.utilisation is None
         else f"{100 * result.utilisation:.1f} % of peak"),
        ("peak memory", f"{result.peak_memory_gib:.2f} GiB"),
    ]
    config = result.config
    print(f"byol bench: {config.arch}, {config.image_size} px, batch {config.batch_size}, {config.device}"
          f"{config.compile_label()}; {config.repeats} x {result.steps} timed steps")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print("  (parts are timed one at a time with the device synchronised around each; they add up to more "
          "than a whole step, which overlaps them)")
