"""Which engine should augment BYOL views: kornia, torchaug, or our batched ops (issue 7)?

    pip install kornia torchaug          # torchaug pins torchvision<0.20; it imports with --no-deps
    python benchmarks/augment_engines.py [--device cuda] [--batch-size 512] [--image-size 32 96] [--compile]

The same recipe for all three, every draw per image: view 1 of the paper's table
(random resized crop 0.08-1 + flip, colour jitter 0.4/0.4/0.2/0.1 at p = 0.8, grayscale
p = 0.2, Gaussian blur p = 1 with a kernel of ~10 % of the side, sigma 0.1-2), from a
uint8 batch on the device to a normalised float batch.  Prints images/s (median of
repeats) and the ratio to ours.  An engine that cannot run the recipe is reported with
the reason.  With --compile, ours is also timed as the compiled training step runs it (the
colour ops compiled, crop and blur eager: ``ViewApplier(compiled=True)``) and with its whole
application compiled.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from byol.augment import ViewApplier, apply_view, augment, byol_views, kernel_size


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--image-size", type=int, nargs="+", default=[32])
    parser.add_argument("--compile", action="store_true", help="also time each engine under torch.compile")
    args = parser.parse_args()
    device, batch = torch.device(args.device), args.batch_size
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, batch {batch}, one view per image")
    print("| image size | engine | mode | images/s | vs byol |")
    print("| --- | --- | --- | --- | --- |")
    for size in args.image_size:
        images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
        mean = torch.tensor([0.5, 0.5, 0.5], device=device)
        std = torch.tensor([0.25, 0.25, 0.25], device=device)
        generator = torch.Generator(device=device).manual_seed(0)
        recipe = byol_views(blur=True)[0]
        engines = {"byol": lambda: augment(images, recipe, size, mean, std, generator)}
        try:
            kornia = kornia_view(size, mean, std).to(device)
            engines["kornia"] = lambda: kornia(images.float() / 255)
        except Exception as error:
            print(f"| {size} | kornia | - | could not build ({type(error).__name__}: {error}) | - |")
        try:
            from torchaug.ta_tensors import BatchImages

            torchaug = torchaug_view(size, mean, std)
            engines["torchaug"] = lambda: torchaug(BatchImages(images.float() / 255))
        except Exception as error:
            print(f"| {size} | torchaug | - | could not build ({type(error).__name__}: {error}) | - |")
        if args.compile:  # the draws stay eager in both: they use the seeded generator
            colour_compiled, all_compiled = ViewApplier(compiled=True), torch.compile(apply_view)
            engines["byol, colour ops compiled (--compile)"] = lambda: augment(images, recipe, size, mean, std,
                                                                                 generator, apply=colour_compiled)
            engines["byol, whole application compiled"] = lambda: augment(images, recipe, size, mean, std,
                                                                            generator, apply=all_compiled)
        ours = None
        for engine, fn in engines.items():
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


if __name__ == "__main__":
    main()
