"""What a view draws, per image: ``ViewSpec`` (probabilities and ranges of one view), the named
augmentation sets, the paper's asymmetric pair (``byol_views``, appendix B, table 6), and the
draws themselves (``sample_view_params``), one per image from a seeded generator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class ViewSpec:
    """What one view draws: probabilities and ranges.  Defaults are view 1 of the paper's table."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    vflip_prob: float = 0.0          # vertical flip: for images with no up and down (fundus, microscopy)
    rotation: float = 0.0            # rotate by U(−rotation, rotation) degrees (paper: none)
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: float = 1.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_fraction: float = 0.1  # kernel side ≈ 10 % of the view side (paper: 23 px at 224)
    solarize_prob: float = 0.0


# Named augmentation sets.  full: the paper's table.  crop-colour, crop: the paper's ablation
# (figure 3b).  geometric: crops, both flips and any rotation, nothing else.  fundus: retinal
# photographs, where colour carries the grade (red haemorrhages, yellow exudates) and there is
# no canonical orientation: any rotation and both flips, milder jitter, no grayscale, no
# solarize.  microscopy: no canonical orientation, stains and bands whose hue means something:
# rotations, both flips, brightness and contrast only.
AUGMENTATION_SETS = ("full", "crop-colour", "crop", "geometric", "fundus", "microscopy")
DOMAIN_CHANGES = {
    # scans graded by the extent and darkness of structures (OCTA drop-out, lesions): where the
    # brightness, contrast and blur of the paper's table teach invariance to the very thing
    # graded, only the geometry changes — crops, both flips, any rotation
    "geometric": dict(vflip_prob=0.5, rotation=180.0, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0,
                      solarize_prob=0.0),
    "fundus": dict(vflip_prob=0.5, rotation=180.0, brightness=0.2, contrast=0.2, saturation=0.1, hue=0.02,
                   grayscale_prob=0.0, solarize_prob=0.0),
    "microscopy": dict(vflip_prob=0.5, rotation=180.0, brightness=0.3, contrast=0.3, saturation=0.0, hue=0.0,
                       grayscale_prob=0.0, solarize_prob=0.0),
}


def byol_views(blur: bool = True, crop_scale: tuple[float, float] = (0.08, 1.0),
               augmentations: str = "full", image_size: int = 224) -> tuple[ViewSpec, ViewSpec]:
    """The asymmetric pair t, t' of the paper: blur p = 1.0 / 0.1, solarize p = 0.0 / 0.2.

    ``blur=False`` drops blur from both views, as CIFAR-scale recipes do on 32 px data
    (a 3 px kernel blurs little and costs a full pass).  The blur's σ range, the paper's
    0.1–2.0 px at 224 px, scales with ``image_size`` (as its kernel, 10 % of the side, does):
    a 64 px view is blurred as much, relative to its content, as a 224 px one.
    ``augmentations`` names a set above."""
    if augmentations not in AUGMENTATION_SETS:
        raise ValueError(f"augmentations must be one of {AUGMENTATION_SETS}, got {augmentations!r}")
    sigma = (0.1 * image_size / 224, 2.0 * image_size / 224)
    views = (
        ViewSpec(crop_scale=crop_scale, blur_prob=1.0 if blur else 0.0, blur_sigma=sigma, solarize_prob=0.0),
        ViewSpec(crop_scale=crop_scale, blur_prob=0.1 if blur else 0.0, blur_sigma=sigma, solarize_prob=0.2),
    )
    if augmentations in DOMAIN_CHANGES:
        views = tuple(replace(view, **DOMAIN_CHANGES[augmentations]) for view in views)
    if augmentations in ("crop-colour", "crop"):
        views = tuple(replace(view, blur_prob=0.0, solarize_prob=0.0) for view in views)
    if augmentations == "crop":
        views = tuple(replace(view, jitter_prob=0.0, grayscale_prob=0.0) for view in views)
    return views


@dataclass
class ViewParams:
    """Per-image random parameters of one view; every tensor field has the batch as first dim."""

    crop: torch.Tensor          # (N, 4) long: top, left, height, width in input pixels
    flip: torch.Tensor          # (N,) bool, left-right
    vflip: torch.Tensor         # (N,) bool, up-down
    angle: torch.Tensor         # (N,) rotation in radians, 0 = none
    jitter_order: torch.Tensor  # (N, 4) long: a permutation of brightness, contrast, saturation, hue
    brightness: torch.Tensor    # (N,) added to every pixel, 0 = unchanged
    contrast: torch.Tensor      # (N,) factor, 1 = unchanged
    saturation: torch.Tensor    # (N,) factor, 1 = unchanged
    hue: torch.Tensor           # (N,) shift in turns, 0 = unchanged
    grayscale: torch.Tensor     # (N,) bool
    blur_sigma: torch.Tensor    # (N,) σ in pixels, 0 = no blur
    solarize: torch.Tensor      # (N,) bool
    blur_kernel_fraction: float = 0.1  # 0 skips the blur pass (no image is blurred)
    jitter_pass: bool = True    # False skips the colour-jitter pass (no image is jittered)


def _uniform(low: float, high: float, n: int, generator: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def sample_view_params(spec: ViewSpec, n: int, height, width, generator: torch.Generator,
                       device=None) -> ViewParams:
    """Draw one view's parameters for ``n`` images of ``height`` × ``width`` (ints, or (N,)
    tensors when the images differ in size)."""
    device = device or generator.device
    crop = _sample_crops(spec, n, height, width, generator, device)

    def coin(p: float) -> torch.Tensor:
        return torch.rand(n, generator=generator, device=device) < p

    jitter = coin(spec.jitter_prob)

    def factor(strength: float) -> torch.Tensor:  # U(1 − s, 1 + s), or 1 when jitter is off
        return torch.where(jitter, _uniform(max(0.0, 1 - strength), 1 + strength, n, generator, device), 1.0)

    brightness = torch.where(jitter, _uniform(-spec.brightness, spec.brightness, n, generator, device), 0.0)
    contrast, saturation = factor(spec.contrast), factor(spec.saturation)
    hue = torch.where(jitter, _uniform(-spec.hue, spec.hue, n, generator, device), 0.0)
    order = torch.rand(n, 4, generator=generator, device=device).argsort(dim=1)
    blur_sigma = torch.where(coin(spec.blur_prob), _uniform(*spec.blur_sigma, n, generator, device), 0.0)
    flip, vflip = coin(spec.flip_prob), coin(spec.vflip_prob)
    angle = _uniform(-1, 1, n, generator, device) * math.radians(spec.rotation)
    return ViewParams(crop, flip, vflip, angle, order, brightness, contrast, saturation, hue,
                      coin(spec.grayscale_prob), blur_sigma, coin(spec.solarize_prob),
                      spec.blur_kernel_fraction if spec.blur_prob > 0 else 0.0, spec.jitter_prob > 0)


def _sample_crops(spec: ViewSpec, n: int, height, width, generator, device) -> torch.Tensor:
    """torchvision's RandomResizedCrop.get_params, vectorised over images of their own sizes:
    10 tries per image, the first box that fits wins, a centre crop with clamped ratio if none does."""
    height = torch.as_tensor(height, device=device).expand(n).float()
    width = torch.as_tensor(width, device=device).expand(n).float()
    tries = 10
    area = (height * width)[:, None]
    target_area = area * (spec.crop_scale[0] + (spec.crop_scale[1] - spec.crop_scale[0])
                          * torch.rand(n, tries, generator=generator, device=device))
    log_lo, log_hi = math.log(spec.crop_ratio[0]), math.log(spec.crop_ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, tries, generator=generator, device=device))
    w = torch.sqrt(target_area * aspect).round()
    h = torch.sqrt(target_area / aspect).round()
    fits = (w > 0) & (w <= width[:, None]) & (h > 0) & (h <= height[:, None])
    first = fits.int().argmax(dim=1, keepdim=True)  # index of the first fitting try (0 if none)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)

    # Fallback (no try fitted): the whole image, its ratio clamped into crop_ratio.
    in_ratio = width / height
    fallback_w = torch.where(in_ratio > spec.crop_ratio[1], (height * spec.crop_ratio[1]).round(), width)
    fallback_h = torch.where(in_ratio < spec.crop_ratio[0], (width / spec.crop_ratio[0]).round(), height)
    any_fits = fits.any(dim=1)
    w, h = torch.where(any_fits, w, fallback_w), torch.where(any_fits, h, fallback_h)
    top = (torch.rand(n, generator=generator, device=device) * (height - h + 1)).floor()
    left = (torch.rand(n, generator=generator, device=device) * (width - w + 1)).floor()
    top = torch.where(any_fits, top, ((height - fallback_h) / 2).floor())
    left = torch.where(any_fits, left, ((width - fallback_w) / 2).floor())
    return torch.stack([top, left, h, w], dim=1).long()
