"""Pre-training images/s of byol against the BYOL implementations users would pick instead,
in one process, on the same encoder and batch sizes (issue 7).

    pip install -e ".[bench]"          # byol-pytorch and lightly
    python benchmarks/compare.py                       # ResNet-18, 32 px small stem, batch 256 and 512
    python benchmarks/compare.py --image-size 96 224   # standard stem at 96 and 224 px

Each library runs its BYOL recipe as its README/tutorial shows it:
- byol-pytorch (lucidrains): ``BYOL(net, image_size, hidden_layer=-1)`` on float batches already
  on the device; its default augmentation (one random draw per batch), Adam 3e-4,
  ``update_moving_average()`` after each step.
- lightly: ``BYOLTransform`` on PIL images in a DataLoader with a worker per core (the
  tutorial's pipeline), ResNet-18 backbone + BYOLProjectionHead/BYOLPredictionHead,
  ``update_momentum``, NegativeCosineSimilarity, SGD 0.06.
- byol: the ``byol bench`` step (uint8 images on the device, per-image batched augmentation,
  LARS, foreach EMA).
Images/s counts source images (one image = both of its views).  A configuration a library
cannot run is reported with the reason instead of a number.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from PIL import Image

from byol.models.backbones import create_encoder
from byol.commands.bench import bench


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, device, steps: int, warmup: int, batch: int) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return batch * steps / (time.perf_counter() - start)


def encoder_for(size: int) -> torch.nn.Module:
    return create_encoder("resnet18", 3, size <= 64, size)  # small stem for 32 px, standard for 96 / 224


def run_byol_pytorch(size, batch, device, steps, warmup) -> float:
    from byol_pytorch import BYOL

    learner = BYOL(encoder_for(size).to(device), image_size=size, hidden_layer=-1).to(device)
    optimizer = torch.optim.Adam(learner.parameters(), lr=3e-4)
    images = torch.rand(batch, 3, size, size, device=device)

    def step():
        loss = learner(images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        learner.update_moving_average()

    return timed(step, device, steps, warmup, batch)


class RandomPIL(torch.utils.data.Dataset):
    """Synthetic RGB images as PIL, what lightly's transforms take."""

    def __init__(self, n: int, size: int, transform):
        self.images = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.transform(Image.fromarray(self.images[index]))


def run_lightly(size, batch, device, steps, warmup) -> float:
    import copy

    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.transforms.byol_transform import BYOLTransform, BYOLView1Transform, BYOLView2Transform

    backbone = encoder_for(size)
    projection, prediction = BYOLProjectionHead(backbone.num_features, 4096, 256), BYOLPredictionHead(256, 4096, 256)
    online = torch.nn.ModuleDict({"backbone": backbone, "projection": projection, "prediction": prediction}).to(device)
    target = copy.deepcopy(torch.nn.ModuleDict({"backbone": backbone, "projection": projection})).to(device)
    deactivate_requires_grad(target)
    transform = BYOLTransform(view_1_transform=BYOLView1Transform(input_size=size),
                              view_2_transform=BYOLView2Transform(input_size=size))
    loader = torch.utils.data.DataLoader(RandomPIL(batch * (steps + warmup + 1), size, transform), batch_size=batch,
                                         shuffle=True, drop_last=True, num_workers=os.cpu_count(),
                                         pin_memory=device.type == "cuda", persistent_workers=True)
    criterion, optimizer = NegativeCosineSimilarity(), torch.optim.SGD(online.parameters(), lr=0.06)
    batches = iter(loader)

    def step():
        x0, x1 = next(batches)
        x0, x1 = x0.to(device, non_blocking=True), x1.to(device, non_blocking=True)
        update_momentum(online["backbone"], target["backbone"], m=0.99)
        update_momentum(online["projection"], target["projection"], m=0.99)
        p0 = online["prediction"](online["projection"](online["backbone"](x0)))
        p1 = online["prediction"](online["projection"](online["backbone"](x1)))
        with torch.no_grad():
            z0 = target["projection"](target["backbone"](x0))
            z1 = target["projection"](target["backbone"](x1))
        loss = 0.5 * (criterion(p0, z1) + criterion(p1, z0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return timed(step, device, steps, warmup, batch)


def run_ours(size, batch, device, steps, warmup) -> float:
    return bench(arch="resnet18", image_size=size, batch_size=batch, channels=3, hidden_dim=4096,
                 seconds=max(10.0, (steps + warmup) * 2.0), repeats=1, device=str(device)).images_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, nargs="+", default=[32])
    parser.add_argument("--batch-size", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    try:  # fail early, in one line, when the libraries to compare against are missing
        import byol_pytorch  # noqa: F401
        import lightly
    except ImportError as error:
        raise SystemExit(f"compare.py: {error.name} is not installed: pip install byol-pytorch lightly "
                         "(or their wheels from .whl/, as benchmarks/gpu.sh does)")

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"{name}; torch {torch.__version__}, lightly {lightly.__version__}; {time.strftime('%Y-%m-%d')}")
    print("| image size | batch | byol (img/s) | byol-pytorch (img/s) | byol / byol-pytorch | lightly (img/s) "
          "| byol / lightly |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for size in args.image_size:
        for batch in args.batch_size:
            results = {}
            for label, runner in (("ours", run_ours), ("byol-pytorch", run_byol_pytorch), ("lightly", run_lightly)):
                try:
                    results[label] = runner(size, batch, device, args.steps, args.warmup)
                except Exception as error:  # e.g. out of memory: say so in the table
                    results[label] = f"could not run ({type(error).__name__}: {str(error).splitlines()[0][:60]})"
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            ours = results["ours"]
            cells = []
            for label in ("byol-pytorch", "lightly"):
                value = results[label]
                if isinstance(value, str):
                    cells += [value, "-"]
                else:
                    cells += [f"{value:,.0f}", f"{ours / value:.2f}x" if isinstance(ours, float) else "-"]
            ours_cell = f"{ours:,.0f}" if isinstance(ours, float) else ours
            print(f"| {size} | {batch} | {ours_cell} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
