"""Which engine should augment BYOL views: kornia, torchaug, or our batched ops?

    python benchmarks/augment_engines.py [--device cuda] [--batch-size 512] [--image-size 32 96] [--compile]
    python benchmarks/augment_engines.py --ops [--channels 1 3] [--image-size 32 64]

Engines: the same recipe for all, every draw per image — view 1 of the paper's table (random
resized crop 0.08-1 + flip, colour jitter 0.4/0.4/0.2/0.1 at p = 0.8, grayscale p = 0.2,
Gaussian blur p = 1 with a kernel of ~10 % of the side, sigma 0.1-2), from a uint8 batch on
the device to a normalised float batch.  Prints images/s (median of repeats) and the ratio to
ours.  An engine that cannot run the recipe is reported with the reason (kornia's ColorJitter
draws one op order per batch, not per image; torchaug needs an old torchvision).  With
--compile, ours is also timed as the compiled training step runs it (the colour ops compiled,
crop and blur eager: ``ViewApplier(compiled=True)``) and with its whole application compiled.

--ops: op by op, ours against the library function with the same per-image parameters, and
how far apart their outputs are — what ``byol/views/ops.py`` chose each op by.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch import nn

from byol.views.apply import ViewApplier, apply_view, augment
from byol.views.ops import contrast, gaussian_blur, grayscale, kernel_size
from byol.views.spec import byol_views


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, device, steps=10, warmup=3, repeats=3, batch=512) -> float:
    for _ in range(warmup):
        fn()
    rates = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        sync(device)
        rates.append(batch * steps / (time.perf_counter() - start))
    return statistics.median(rates)


def kornia_view(size: int, mean, std) -> nn.Module:
    import kornia.augmentation as K

    k = kernel_size(size, 0.1)
    return nn.Sequential(
        K.RandomResizedCrop((size, size), scale=(0.08, 1.0)), K.RandomHorizontalFlip(),
        K.ColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8), K.RandomGrayscale(p=0.2),
        K.RandomGaussianBlur((k, k), (0.1, 2.0), p=1.0), K.Normalize(mean, std))


def torchaug_view(size: int, mean, std):
    import torchaug.transforms as T

    k = kernel_size(size, 0.1)
    per_image = {"num_chunks": -1, "batch_transform": True}
    return T.SequentialTransform([
        T.RandomResizedCrop(size, scale=(0.08, 1.0), **per_image),
        T.RandomHorizontalFlip(batch_transform=True),
        T.RandomColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8, **per_image),
        T.RandomGrayscale(p=0.2, batch_transform=True),
        T.RandomGaussianBlur(k, sigma=(0.1, 2.0), p=1.0, batch_transform=True),  # sigma per image when batched
        T.Normalize(mean.tolist(), std.tolist()),
    ])


def engines(args, device, batch: int) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, batch {batch}, one view per image")
    print("| image size | engine | mode | images/s | vs byol |")
    print("| --- | --- | --- | --- | --- |")
    for size in args.image_size:
        images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
        mean = torch.tensor([0.5, 0.5, 0.5], device=device)
        std = torch.tensor([0.25, 0.25, 0.25], device=device)
        generator = torch.Generator(device=device).manual_seed(0)
        spec = byol_views(blur=True)[0]
        runs = {"byol": lambda: augment(images, spec, size, mean, std, generator)}
        try:
            kornia = kornia_view(size, mean, std).to(device)
            runs["kornia"] = lambda: kornia(images.float() / 255)
        except Exception as error:
            print(f"| {size} | kornia | - | could not build ({type(error).__name__}: {error}) | - |")
        try:
            from torchaug.ta_tensors import BatchImages

            torchaug = torchaug_view(size, mean, std)
            runs["torchaug"] = lambda: torchaug(BatchImages(images.float() / 255))
        except Exception as error:
            print(f"| {size} | torchaug | - | could not build ({type(error).__name__}: {str(error)[:80]}) | - |")
        if args.compile:  # the draws stay eager in both: they use the seeded generator
            colour_compiled, all_compiled = ViewApplier(compiled=True), torch.compile(apply_view)
            runs["byol, colour ops compiled (--compile)"] = lambda: augment(images, spec, size, mean, std,
                                                                              generator, apply=colour_compiled)
            runs["byol, whole application compiled"] = lambda: augment(images, spec, size, mean, std,
                                                                         generator, apply=all_compiled)
        ours = None
        for engine, fn in runs.items():
            modes = ["eager"] + (["compiled"] if args.compile and not engine.startswith("byol") else [])
            for mode in modes:
                try:
                    rate = measure(torch.compile(fn) if mode == "compiled" else fn, device, batch=batch)
                except Exception as error:
                    print(f"| {size} | {engine} | {mode} | could not run ({type(error).__name__}: "
                          f"{str(error).splitlines()[0][:80]}) | - |", flush=True)
                    continue
                ours = rate if engine == "byol" and mode == "eager" else ours
                ratio = f"{rate / ours:.2f}x" if ours else "-"
                label = engine.split(", ", 1) if ", " in engine else (engine, mode)  # "byol, <how compiled>"
                print(f"| {size} | {label[0]} | {label[1]} | {rate:,.0f} | {ratio} |", flush=True)


def ops(args, device, batch: int) -> None:
    """Each op: ours, the library's, images/s of each and their largest difference."""
    import kornia.color
    import kornia.enhance
    import kornia.filters

    print(f"{'CPU' if device.type == 'cpu' else torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
          f"kornia {kornia.__version__}, batch {batch}")
    print("| op | channels | size | ours (img/s) | library (img/s) | library / ours | max difference |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    g = torch.Generator(device=device).manual_seed(0)

    def uniform(low, high):
        return low + (high - low) * torch.rand(batch, generator=g, device=device)

    for channels in args.channels:
        for size in args.image_size:
            x = torch.rand(batch, channels, size, size, generator=g, device=device)
            delta, factor, sat, turns = uniform(-.4, .4), uniform(.6, 1.4), uniform(.8, 1.2), uniform(-.1, .1)
            sigma, k = uniform(.1, 2.) * size / 224, kernel_size(size, .1)
            pairs = {
                "brightness (official: additive)": (lambda: (x + delta.view(-1, 1, 1, 1)).clamp(0, 1),
                                                    lambda: kornia.enhance.adjust_brightness(x, delta)),
                "contrast (official: around each channel's mean)": (
                    lambda: contrast(x, factor),
                    lambda: kornia.enhance.adjust_contrast_with_mean_subtraction(x, factor)),
                "blur, sigma per image": (lambda: gaussian_blur(x, sigma, k), lambda: kornia.filters.gaussian_blur2d(
                    x, (k, k), torch.stack([sigma, sigma], 1), border_type="reflect")),
                "solarize": (lambda: torch.where(x >= 0.5, 1 - x, x), lambda: kornia.enhance.solarize(x, 0.5)),
            }
            if channels == 3:
                pairs.update({
                    "saturation (HSV round trip, ours before)": (
                        lambda: _hsv_round_trip(x, sat, torch.zeros_like(sat)),
                        lambda: kornia.enhance.adjust_saturation(x, sat)),
                    "hue (HSV round trip, ours before)": (
                        lambda: _hsv_round_trip(x, torch.ones_like(turns), turns),
                        lambda: kornia.enhance.adjust_hue(x, turns * 2 * math.pi)),
                    "grayscale (official: 0.2989 R)": (lambda: grayscale(x), lambda: kornia.color.rgb_to_grayscale(x)),
                })
            for name, (ours, library) in pairs.items():
                difference = (ours() - library()).abs().max().item()
                a, b = measure(ours, device, batch=batch), measure(library, device, batch=batch)
                print(f"| {name} | {channels} | {size} | {a:,.0f} | {b:,.0f} | {b / a:.2f}x | {difference:.1e} |",
                      flush=True)


def _hsv_round_trip(x: torch.Tensor, saturation: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """What our saturation and hue were before they moved to kornia: RGB → HSV, scale S and shift
    H per image, → RGB (the reference the move is measured against)."""
    r, g, b = x.unbind(1)
    value, _ = x.max(dim=1)
    delta = value - x.min(dim=1)[0]
    s = delta / torch.where(value == 0, torch.ones_like(value), value)
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = (value - r) / safe, (value - g) / safe, (value - b) / safe
    h = torch.where(value == r, bc - gc, torch.where(value == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = (torch.where(delta == 0, torch.zeros_like(h), h) / 6.0) % 1.0
    h, s = (h + hue.view(-1, 1, 1)) % 1.0, (s * saturation.view(-1, 1, 1)).clamp(0, 1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = ((value * (1 - s)).clamp(0, 1), (value * (1 - s * f)).clamp(0, 1),
               (value * (1 - s * (1 - f))).clamp(0, 1))
    pick = torch.tensor([[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]], device=x.device)
    return torch.stack([value, q, p, t], dim=1).gather(1, pick[i].permute(0, 3, 1, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--image-size", type=int, nargs="+", default=[32])
    parser.add_argument("--channels", type=int, nargs="+", default=[3], help="--ops: image channels to try")
    parser.add_argument("--compile", action="store_true", help="also time each engine under torch.compile")
    parser.add_argument("--ops", action="store_true", help="op by op, ours against the library's")
    args = parser.parse_args()
    device = torch.device(args.device)
    (ops if args.ops else engines)(args, device, args.batch_size)


if __name__ == "__main__":
    main()
