"""Encoders: images (N, C, H, W) → feature vectors (N, num_features), through one door.

``create_encoder(name, in_channels, small_stem, image_size)`` builds, at random
initialisation (nothing is ever downloaded):

    narrow_resnet     the CPU preset: ResNet-18's layout at half width, one block per stage
    resnet18, ...     any torchvision classification model by its name (torchvision.models.list_models)
    timm:NAME         any timm model (the optional [timm] extra), e.g. timm:convnext_atto, timm:vit_tiny_patch16_224

and removes its classifier, so every encoder answers ``num_features`` and returns pooled
features.  ``as_encoder`` does the same for any ``nn.Module`` a Python user brings.  Small
images get a small stem where the family allows it (ResNet-style: a 3×3 first convolution
without max-pool); ViT-style timm models get a patch size the image size divides (at least
7 × 7 patches).  ``in_channels`` other than 3 replace the first convolution.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision import models
from torchvision.models import resnet
from torchvision.models.resnet import BasicBlock

from ..base.errors import UserError, setting

# Inputs up to this side get the small-image stem (as CIFAR-scale BYOL recipes do).
SMALL_STEM_MAX_SIDE = 64
# torchvision builders' keyword arguments that make a model an encoder of any input (no aux heads).
TORCHVISION_OPTIONS = {"googlenet": {"aux_logits": False, "init_weights": True},
                       "inception_v3": {"aux_logits": False, "init_weights": True}}


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


def torchvision_names() -> list[str]:
    return sorted(models.list_models(module=models))


def family(name: str) -> str:
    """resnet-style, vit (patches and a class token: AdamW, no LARS), or convnet."""
    base = name.removeprefix("timm:").lower()
    if any(key in base for key in ("vit", "deit", "beit", "swin", "eva", "cait", "xcit", "maxvit", "levit")):
        return "vit"
    if base == "narrow_resnet" or base.startswith(("resnet", "resnext", "wide_resnet", "seresnet")):
        return "resnet"
    return "convnet"


def import_timm():
    try:
        import timm
    except ImportError:
        raise UserError(f"{setting('arch')} timm:...: timm is not installed; pip install 'byol[timm]' (setup.sh "
                        "installs it)") from None
    return timm


def patch_size_for(image_size: int, default: int = 16) -> int:
    """The largest patch size up to ``default`` that divides ``image_size`` into at least 7 × 7
    patches: 28 px → 4, 32 → 4, 64 → 8, 96 → 12, 224 → 16."""
    return next(p for p in range(max(1, min(default, image_size // 7)), 0, -1) if image_size % p == 0)


def timm_options(name: str, in_channels: int, image_size: int) -> dict:
    """timm.create_model's keywords for an encoder: no classifier, the channels, and for ViTs
    the image size and a patch size that divides it."""
    options = {"num_classes": 0, "in_chans": in_channels}
    patch = re.search(r"patch(\d+)", name)
    if family(name) == "vit" and patch:
        options.update(img_size=image_size, patch_size=patch_size_for(image_size, int(patch.group(1))))
    return options


def _build(name: str, in_channels: int, image_size: int) -> nn.Module:
    if name == "narrow_resnet":
        return narrow_resnet()
    if name.startswith("timm:"):
        timm = import_timm()
        if not timm.is_model(name[5:]):
            raise UserError(f"{setting('arch')} {name}: timm has no such model; timm.list_models('*{name[5:5 + 6]}*') "
                            "lists the names")
        return timm.create_model(name[5:], pretrained=False, **timm_options(name, in_channels, image_size))
    if name not in torchvision_names():
        raise UserError(f"{setting('arch')} '{name}' is not known: give narrow_resnet, a torchvision model "
                        f"(e.g. resnet18, efficientnet_b0, mobilenet_v3_small, convnext_tiny) or timm:NAME")
    options = dict(TORCHVISION_OPTIONS.get(name, {}))
    if name.startswith("vit_"):
        options["image_size"] = image_size
    try:
        return models.get_model(name, weights=None, **options)
    except (ValueError, AssertionError) as error:  # e.g. a ViT whose patches do not divide the image
        raise UserError(f"{setting('arch')} {name} at {image_size} px: {str(error).splitlines()[0]}; choose another "
                        f"{setting('image_size')}, or timm:{name.split('_')[0]}_... whose patch size adapts") from None


def _remove_classifier(model: nn.Module, name: str) -> tuple[nn.Module, str | None]:
    """The last Linear layer (the classifier) replaced by Identity: the model returns features.
    Also returns that layer's name (its weights are not the encoder's)."""
    if name.startswith("timm:"):
        return model, None  # built with num_classes=0
    last = None
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = module_name
    if last is None:
        raise UserError(f"{setting('arch')} {name}: no linear classifier to remove; use it from Python with "
                        "byol.pretrain(encoder=...)")
    parent, _, child = last.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
    return model, last


def _first_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    """(parent module, attribute name, the first Conv2d) of ``model``."""
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent, _, child = module_name.rpartition(".")
            return (model.get_submodule(parent) if parent else model), child, module
    raise UserError("the encoder has no convolution to take the images' channels")


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """First-layer weights (out, 3, k, k) for ``in_channels`` inputs: the sum of the RGB filters
    divided by ``in_channels``, for every channel — so an image with the same values in every
    channel gives the activation that gray image gave in RGB (1 channel: the sum, as timm does)."""
    if weight.shape[1] == in_channels:
        return weight
    return (weight.sum(dim=1, keepdim=True) / in_channels).repeat(1, in_channels, 1, 1)


def create_encoder(name: str = "resnet18", in_channels: int = 3, small_stem: bool | None = None,
                   image_size: int = 224, model: nn.Module | None = None) -> nn.Module:
    """An encoder without its classifier; ``encoder.num_features`` is its width.

    ``small_stem`` (default: automatic, on for ``image_size`` ≤ 64, ResNet-style models only)
    swaps the 7×7 stride-2 conv and max-pool for a 3×3 conv without max-pool, as CIFAR-scale
    recipes do: on 32 px images the standard stem throws away 15/16 of the pixels at once.
    The conv has stride 1, except in ``narrow_resnet``, where stride 2 makes the first stages
    4× cheaper on a CPU (BENCHMARKS.md).  ``model``: ``name``'s model already built (with
    pretrained weights), instead of a new one."""
    model, classifier = _remove_classifier(model if model is not None else _build(name, in_channels, image_size), name)
    resnet_stem = isinstance(getattr(model, "conv1", None), nn.Conv2d) and hasattr(model, "maxpool")
    if small_stem is None:
        small_stem = resnet_stem and image_size <= SMALL_STEM_MAX_SIDE
    if small_stem and not resnet_stem:
        raise UserError(f"{setting('small_stem')}: {name} has no ResNet-style stem to shrink; drop it")
    if small_stem:
        width = model.conv1.out_channels
        model.conv1 = nn.Conv2d(in_channels, width, 3, 2 if name == "narrow_resnet" else 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif not name.startswith("timm:"):
        parent, child, conv = _first_conv(model)
        if conv.in_channels != in_channels:
            setattr(parent, child, nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                             conv.padding, conv.dilation, conv.groups, conv.bias is not None))
    model.num_features = feature_width(model, in_channels, image_size)
    model.encoder_config = {"name": name, "in_channels": in_channels, "small_stem": bool(small_stem),
                            "image_size": image_size, "classifier": classifier}
    return model


@torch.no_grad()
def feature_width(model: nn.Module, in_channels: int, image_size: int) -> int:
    """The width of the model's output vector, from one forward pass of two blank images in
    eval mode (no BatchNorm statistics change; nothing is trained)."""
    was_training = model.training
    model.eval()
    try:
        out = model(torch.zeros(2, in_channels, image_size, image_size, device=next(model.parameters()).device))
    except RuntimeError as error:  # e.g. more downsampling than the image has pixels
        raise UserError(f"the encoder cannot take {image_size} px images ({str(error).splitlines()[0][:120]}); raise "
                        f"{setting('image_size')} (e.g. 32 or 64) or choose another {setting('arch')}") from None
    finally:
        model.train(was_training)
    if out.ndim != 2:
        raise UserError(f"the encoder returns shape {tuple(out.shape)}, not (batch, features); wrap it with "
                        "byol.as_encoder, which pools and flattens")
    return out.shape[1]


class Pooled(nn.Sequential):
    """A module returning feature maps (N, C, H, W), followed by global average pooling."""

    def __init__(self, module: nn.Module):
        super().__init__(module, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def as_encoder(module: nn.Module, in_channels: int, image_size: int) -> nn.Module:
    """Any ``nn.Module`` mapping images to a feature vector or map, as a byol encoder: maps are
    pooled and flattened; ``num_features`` is found by ``feature_width``."""
    was_training = module.training
    module.eval()
    with torch.no_grad():
        out = module(torch.zeros(2, in_channels, image_size, image_size, device=next(module.parameters()).device))
    module.train(was_training)
    encoder = Pooled(module) if out.ndim == 4 else module
    if out.ndim not in (2, 4):
        raise UserError(f"the encoder returns shape {tuple(out.shape)}; give one that returns (batch, features) "
                        "or (batch, channels, height, width)")
    encoder.num_features = feature_width(encoder, in_channels, image_size)
    if not hasattr(encoder, "encoder_config"):
        encoder.encoder_config = {"name": "custom", "in_channels": in_channels, "image_size": image_size}
    return encoder


def save_encoder(encoder: nn.Module, path: str | Path, normalisation: tuple | None = None) -> None:
    """Write the encoder's weights as safetensors, with how to rebuild it in the metadata, and
    the per-channel (mean, std) its inputs were normalised with when given."""
    state = {k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}
    metadata = {"byol_encoder": json.dumps(encoder.encoder_config)}
    if normalisation is not None:
        metadata["byol_normalisation"] = json.dumps([[float(v) for v in values] for values in normalisation])
    save_file(state, str(path), metadata=metadata)


def load_encoder(path: str | Path) -> nn.Module:
    """Rebuild an encoder written by ``save_encoder`` (e.g. ``runs/NAME/encoder.safetensors``)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    if "byol_encoder" not in metadata:
        raise ValueError(f"{path} was not written by byol (no 'byol_encoder' metadata)")
    config = json.loads(metadata["byol_encoder"])
    if config["name"] == "custom":
        raise ValueError(f"{path} holds a custom encoder: build your module and load_state_dict(safetensors.torch."
                         "load_file(path)) into it")
    encoder = create_encoder(config["name"], config["in_channels"], config["small_stem"], config.get("image_size", 224))
    encoder.load_state_dict(load_file(str(path)))
    if "byol_normalisation" in metadata:  # (mean, std) per channel, what the inputs must be normalised with
        encoder.normalisation = tuple(json.loads(metadata["byol_normalisation"]))
    return encoder
