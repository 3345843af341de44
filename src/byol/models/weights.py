"""Encoders from what the user names — one resolver behind ``--init`` (evaluation),
``--init-from`` (a new pre-training run) and the Python API.

    random                  the architecture at random initialisation (seeded by the caller)
    pixels                  the raw-pixel baseline (normalised pixels, flattened; evaluation only)
    byol:RUN_DIR, RUN_DIR   that run's encoder.safetensors
    FILE.safetensors        an encoder written by byol (it carries how to rebuild itself)
    FILE.pth / .pt / .bin / other .safetensors
                            the weights of the architecture: a torchvision state dict (e.g.
                            ImageNet weights the user downloaded), or with arch timm:NAME a timm
                            checkpoint; the classifier is dropped, the first convolution adapted
                            to the images' channels (``backbones.adapt_first_conv``)
    an nn.Module, or what byol.pretrain returned (Python only)

Nothing is ever downloaded.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..base.errors import UserError, first_line, setting
from ..base.rundir import RunDir
from .backbones import adapt_first_conv, as_encoder, create_encoder, import_timm, load_encoder, timm_options


class Pixels(nn.Flatten):
    """The raw-pixel baseline as an "encoder": normalised pixels, flattened."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features


def weights_path(spec: str) -> Path:
    """The weights file that ``spec`` names (a run directory means its encoder file)."""
    path = Path(spec.removeprefix("byol:"))
    return RunDir(path).encoder if path.is_dir() else path


def is_byol_file(path: Path) -> bool:
    if path.suffix != ".safetensors":
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as handle:
            return "byol_encoder" in (handle.metadata() or {})
    except Exception:  # not safetensors at all: the caller reports it
        return False


def encoder_config_of(spec) -> dict:
    """How the encoder ``spec`` names was built — arch name, channels, view size — when it says
    (byol files and byol.pretrain's results do), else {}: evaluation then sees the images at the
    size it was trained at, and a random baseline gets the same architecture."""
    if hasattr(spec, "encoder"):
        spec = spec.encoder
    if isinstance(spec, nn.Module):
        return dict(getattr(spec, "encoder_config", {}))
    if not isinstance(spec, str) or spec in ("random", "pixels"):
        return {}
    path = weights_path(spec)
    if not (path.is_file() and is_byol_file(path)):
        return {}
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return json.loads(handle.metadata()["byol_encoder"])


def load_weights(spec, arch: str, in_channels: int, image_size: int, small_stem: bool | None = None,
                 name: str = "init") -> nn.Module:
    """The encoder ``spec`` names (see the module docstring).  ``arch``, ``small_stem`` and
    ``image_size`` build it where the weights do not say; ``name`` is the setting the user gave
    ``spec`` in, for the error messages."""
    if hasattr(spec, "encoder") and isinstance(spec.encoder, nn.Module):
        spec = spec.encoder  # a PretrainResult
    if isinstance(spec, nn.Module):
        return spec if hasattr(spec, "num_features") else as_encoder(spec, in_channels, image_size)
    if spec == "random":
        return create_encoder(arch, in_channels, small_stem, image_size)
    if spec == "pixels":
        if name != "init":
            raise UserError(f"{setting(name)} pixels: the raw-pixel baseline has no weights to train")
        return Pixels(in_channels * image_size * image_size)
    path = weights_path(spec)
    if not path.is_file():
        raise UserError(f"{setting(name)} {spec}: no weights file at {path} (give random, a run directory or a "
                        "weights file)")
    if is_byol_file(path):
        encoder = load_encoder(path)
        if encoder.encoder_config["in_channels"] != in_channels:
            raise UserError(f"{setting(name)} {path} was trained on {encoder.encoder_config['in_channels']}-channel "
                            f"images; these have {in_channels}")
        return encoder
    if arch.startswith("timm:"):
        return _timm_checkpoint(path, arch, in_channels, image_size, name)
    return _state_dict(path, arch, in_channels, image_size, name)


def read_state_dict(path: Path, name: str) -> dict[str, torch.Tensor]:
    """Tensors by name from a .pth / .pt / .bin (torch.save) or .safetensors file, unwrapped from
    the usual containers ("state_dict", "model") and DistributedDataParallel's "module." prefix."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError("no tensors by name in it")
    except Exception as error:
        raise UserError(f"{setting(name)} {path}: not a weights file (a byol encoder, or a PyTorch or safetensors "
                        f"state dict): {first_line(error)[:120]}") from None
    return {key.removeprefix("module."): value for key, value in state.items()}


def _state_dict(path: Path, arch: str, in_channels: int, image_size: int, name: str) -> nn.Module:
    """A torchvision-style state dict of ``arch``: its stem as the weights have it (ImageNet
    weights keep the 7×7 stem whatever the image size), the classifier dropped, the first
    convolution adapted to ``in_channels``."""
    state = read_state_dict(path, name)
    stem = state.get("conv1.weight")
    small_stem = bool(stem.shape[-1] == 3) if stem is not None and stem.ndim == 4 else None
    encoder = create_encoder(arch, in_channels, small_stem, image_size)
    first = next(key for key, module in encoder.named_modules() if isinstance(module, nn.Conv2d)) + ".weight"
    if first in state and state[first].ndim == 4:
        state[first] = adapt_first_conv(state[first], in_channels)
    try:
        missing, unexpected = encoder.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shapes that do not fit
        detail = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise UserError(f"{setting(name)} {path} does not fit {setting('arch')} {arch} "
                        f"({detail[min(1, len(detail) - 1)][:160]})") from None
    classifier = encoder.encoder_config.get("classifier")
    unexpected = [key for key in unexpected if classifier is None or not key.startswith(classifier + ".")]
    if missing or unexpected:
        extra = f"missing {missing[:2]}" if missing else f"unexpected {unexpected[:2]}"
        raise UserError(f"{setting(name)} {path} does not fit {setting('arch')} {arch} ({extra}); give the weights "
                        f"of {arch}, or the {setting('arch')} they are for")
    return encoder


def _timm_checkpoint(path: Path, arch: str, in_channels: int, image_size: int, name: str) -> nn.Module:
    """A timm checkpoint, loaded the way timm loads pretrained weights from a local file: its
    classifier dropped, its first convolution, patch and position embeddings adapted."""
    timm = import_timm()
    try:
        model = timm.create_model(arch[5:], pretrained=True, pretrained_cfg_overlay={"file": str(path)},
                                  **timm_options(arch, in_channels, image_size))
    except (RuntimeError, ValueError, KeyError, OSError) as error:
        raise UserError(f"{setting(name)} {path} does not fit {setting('arch')} {arch} ({first_line(error)[:160]})") from None
    return create_encoder(arch, in_channels, False, image_size, model=model)
