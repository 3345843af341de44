"""Encoders: images (N, C, H, W) → feature vectors (N, num_features).

Every encoder built here is a torchvision ResNet with its classifier removed, so
its weights load into the matching torchvision model (``load_encoder``).  Any
other ``nn.Module`` that maps images to vectors works with ``byol.BYOL`` too.
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.models import resnet
from torchvision.models.resnet import BasicBlock

# Inputs up to this side get the small-image stem (CIFAR recipes, SPEC "CIFAR-scale").
SMALL_STEM_MAX_SIDE = 64

ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "narrow_resnet")


def narrow_resnet(widths: tuple[int, ...] = (32, 64, 128, 256)) -> resnet.ResNet:
    """The CPU preset: ResNet-18's layout at half width (32-64-128-256 channels) with one
    block per stage (a ResNet-10), 1.2 M parameters, 256-d features.  Built from
    torchvision's own ``ResNet`` so it shares its module names and forward."""
    model = resnet.ResNet(BasicBlock, [1, 1, 1, 1])
    model.inplanes = widths[0]
    model.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
    model.bn1 = nn.BatchNorm2d(widths[0])
    for index, width in enumerate(widths):
        setattr(model, f"layer{index + 1}", model._make_layer(BasicBlock, width, 1, stride=1 if index == 0 else 2))
    model.fc = nn.Linear(widths[-1], 1000)
    return model


def create_encoder(
    name: str = "resnet18", in_channels: int = 3, small_stem: bool | None = None, image_size: int = 224
) -> nn.Module:
    """A ResNet encoder without its classifier; ``encoder.num_features`` is its width.

    ``small_stem`` (default: automatic, on for ``image_size`` ≤ 64) swaps the 7×7
    stride-2 conv and max-pool for a 3×3 conv without max-pool, as CIFAR-scale
    recipes do: on 32 px images the standard stem throws away 15/16 of the pixels
    at once.  The conv has stride 1, except in ``narrow_resnet``, where stride 2
    makes the first stages 4× cheaper on a CPU (28 px Fashion-MNIST enters the
    first stage at 14 px): a better linear probe per CPU-minute than the stride-1
    net we measured first (BENCHMARKS.md).
    """
    builders = {"resnet18": resnet.resnet18, "resnet34": resnet.resnet34,
                "resnet50": resnet.resnet50, "narrow_resnet": narrow_resnet}
    if name not in builders:
        raise ValueError(f"unknown encoder '{name}'; choose one of: {', '.join(ARCHITECTURES)}")
    model = builders[name]()  # random init, never downloads
    if small_stem is None:
        small_stem = image_size <= SMALL_STEM_MAX_SIDE
    width = model.conv1.out_channels
    if small_stem:
        model.conv1 = nn.Conv2d(in_channels, width, 3, 2 if name == "narrow_resnet" else 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
    model.num_features = model.fc.in_features
    model.fc = nn.Identity()
    model.encoder_config = {"name": name, "in_channels": in_channels, "small_stem": small_stem}
    return model


def save_encoder(encoder: nn.Module, path: str | Path) -> None:
    """Write the encoder's weights as safetensors, with how to rebuild it in the metadata."""
    state = {k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}
    save_file(state, str(path), metadata={"byol_encoder": json.dumps(encoder.encoder_config)})


def load_encoder(path: str | Path) -> nn.Module:
    """Rebuild an encoder written by ``save_encoder`` (e.g. ``runs/NAME/encoder.safetensors``)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    if "byol_encoder" not in metadata:
        raise ValueError(f"{path} was not written by byol (no 'byol_encoder' metadata)")
    encoder = create_encoder(**json.loads(metadata["byol_encoder"]))
    encoder.load_state_dict(load_file(str(path)))
    return encoder
