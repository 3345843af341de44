"""Encoders from what the user names — one resolver behind ``--init`` (evaluation),
``--init-from`` (a new pre-training run) and the Python API.

    random                  the architecture at random initialisation (seeded by the caller)
    pixels                  the raw-pixel baseline (normalised pixels, flattened; evaluation only)
    byol:RUN_DIR, RUN_DIR   that run's encoder.safetensors
    FILE.safetensors        an encoder written by byol (it carries how to rebuild itself)
    FILE.pth / FILE.pt      a torchvision state dict of the architecture, e.g. ImageNet weights
                            the user downloaded (nothing is ever downloaded here)
    an nn.Module            used as it is (Python only)
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .backbones import create_encoder, load_encoder
from .errors import UserError, first_line, setting


class Pixels(nn.Flatten):
    """The raw-pixel baseline as an "encoder": normalised pixels, flattened."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features


def weights_path(spec: str) -> Path:
    """The weights file that ``spec`` names (a run directory means its encoder.safetensors)."""
    path = Path(spec.removeprefix("byol:"))
    return path / "encoder.safetensors" if path.is_dir() else path


def load_weights(spec: str | nn.Module, arch: str, in_channels: int, image_size: int,
                 small_stem: bool | None = None, name: str = "init") -> nn.Module:
    """The encoder ``spec`` names (see the module docstring).  ``arch``, ``small_stem`` and
    ``image_size`` build it where the weights do not say; ``name`` is the setting the user gave
    ``spec`` in, for the error messages."""
    if isinstance(spec, nn.Module):
        return spec
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
    if path.suffix == ".safetensors":
        try:
            return load_encoder(path)
        except Exception as error:  # a foreign or damaged file: say which, not where it broke
            raise UserError(f"{setting(name)} {path}: not a byol encoder file ({first_line(error)})") from None
    return _torchvision_state_dict(path, arch, in_channels, image_size, name)


def _torchvision_state_dict(path: Path, arch: str, in_channels: int, image_size: int, name: str) -> nn.Module:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.get("state_dict", state).items() if not k.startswith("fc.")}
    except Exception as error:
        raise UserError(f"{setting(name)} {path}: not a PyTorch state dict ({first_line(error)})") from None
    # ImageNet weights have the 7x7 stride-2 stem; keep it whatever the image size.
    small_stem = state["conv1.weight"].shape[-1] == 3 if "conv1.weight" in state else None
    encoder = create_encoder(arch, in_channels, small_stem, image_size)
    if in_channels == 1 and state.get("conv1.weight") is not None and state["conv1.weight"].shape[1] == 3:
        state["conv1.weight"] = state["conv1.weight"].sum(dim=1, keepdim=True)  # RGB filters on gray input
    try:
        encoder.load_state_dict(state)
    except RuntimeError as error:
        detail = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise UserError(f"{setting(name)} {path} does not fit {setting('arch')} {arch} "
                        f"({detail[min(1, len(detail) - 1)]})") from None
    return encoder
