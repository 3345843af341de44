"""The two BYOL views (paper appendix B, table 6), batched, one random draw per image.

``augment(images, recipe, size, ...)`` takes a uint8 batch (N, C, H, W) on any
device and returns normalised float views (N, C, size, size) on that device.
Every random choice — crop box, flip, jitter factors and their order, grayscale,
blur σ, solarize — is drawn **per image**.  (Calling a torchvision transform on
a 4-D batch draws once for the whole batch: every image gets the same crop.)

Why our own ops instead of torchvision's: torchvision's functional ops take one
scalar parameter per call, so per-image randomness would need a Python loop over
the batch.  Here each op is a handful of batched tensor kernels; the tests check
them against torchvision's per-image functional ops for the same parameters.

Grayscale input (C = 1): brightness and contrast act as usual; saturation,
hue and grayscale conversion are no-ops (as in torchvision), so they are skipped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision


@dataclass(frozen=True)
class ViewRecipe:
    """Probabilities and ranges for one view.  Defaults are view 1 of the paper's table."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: float = 1.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_fraction: float = 0.1  # kernel side ≈ 10 % of the image side (paper: 23 px at 224)
    solarize_prob: float = 0.0


AUGMENTATION_SETS = ("full", "crop-colour", "crop")


def byol_views(blur: bool = True, crop_scale: tuple[float, float] = (0.08, 1.0),
               augmentations: str = "full") -> tuple[ViewRecipe, ViewRecipe]:
    """The asymmetric pair t, t' of the paper: blur p = 1.0 / 0.1, solarize p = 0.0 / 0.2.

    ``blur=False`` drops blur from both views, as CIFAR-scale recipes do on 32 px data
    (a 3 px kernel blurs little and costs a full pass).  ``augmentations`` is the
    paper's ablation of figure 3b: ``crop-colour`` keeps crop, flip, colour jitter and
    grayscale (no blur, no solarize); ``crop`` keeps crop and flip only."""
    if augmentations not in AUGMENTATION_SETS:
        raise ValueError(f"augmentations must be one of {AUGMENTATION_SETS}, got {augmentations!r}")
    views = (
        ViewRecipe(crop_scale=crop_scale, blur_prob=1.0 if blur else 0.0, solarize_prob=0.0),
        ViewRecipe(crop_scale=crop_scale, blur_prob=0.1 if blur else 0.0, solarize_prob=0.2),
    )
    if augmentations != "full":
        views = tuple(replace(view, blur_prob=0.0, solarize_prob=0.0) for view in views)
    if augmentations == "crop":
        views = tuple(replace(view, jitter_prob=0.0, grayscale_prob=0.0) for view in views)
    return views


@dataclass
class ViewParams:
    """Per-image random parameters of one view; every field has the batch as first dim."""

    crop: torch.Tensor        # (N, 4) long: top, left, height, width in input pixels
    flip: torch.Tensor        # (N,) bool
    jitter_order: torch.Tensor  # (N, 4) long: a permutation of brightness, contrast, saturation, hue
    brightness: torch.Tensor  # (N,) factor, 1 = unchanged
    contrast: torch.Tensor    # (N,) factor, 1 = unchanged
    saturation: torch.Tensor  # (N,) factor, 1 = unchanged
    hue: torch.Tensor         # (N,) shift in turns, 0 = unchanged
    grayscale: torch.Tensor   # (N,) bool
    blur_sigma: torch.Tensor  # (N,) σ in pixels, 0 = no blur
    solarize: torch.Tensor    # (N,) bool
    blur_kernel_fraction: float = 0.1  # 0 skips the blur pass (no image is blurred)
    jitter_pass: bool = True  # False skips the colour-jitter pass (no image is jittered)


def _uniform(low: float, high: float, n: int, generator: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def sample_view_params(
    recipe: ViewRecipe, n: int, height: int, width: int, generator: torch.Generator, device=None
) -> ViewParams:
    """Draw one view's parameters for ``n`` images of size ``height``×``width``."""
    device = device or generator.device
    crop = _sample_crops(recipe, n, height, width, generator, device)

    def coin(p: float) -> torch.Tensor:
        return torch.rand(n, generator=generator, device=device) < p

    jitter = coin(recipe.jitter_prob)

    def factor(strength: float) -> torch.Tensor:  # U(1 − s, 1 + s), or 1 when jitter is off
        return torch.where(jitter, _uniform(max(0.0, 1 - strength), 1 + strength, n, generator, device), 1.0)

    brightness, contrast, saturation = factor(recipe.brightness), factor(recipe.contrast), factor(recipe.saturation)
    hue = torch.where(jitter, _uniform(-recipe.hue, recipe.hue, n, generator, device), 0.0)
    order = torch.rand(n, 4, generator=generator, device=device).argsort(dim=1)
    blur_sigma = torch.where(coin(recipe.blur_prob), _uniform(*recipe.blur_sigma, n, generator, device), 0.0)
    return ViewParams(crop, coin(recipe.flip_prob), order, brightness, contrast, saturation, hue,
                      coin(recipe.grayscale_prob), blur_sigma, coin(recipe.solarize_prob),
                      recipe.blur_kernel_fraction if recipe.blur_prob > 0 else 0.0, recipe.jitter_prob > 0)


def _sample_crops(recipe: ViewRecipe, n: int, height: int, width: int, generator, device) -> torch.Tensor:
    """torchvision's RandomResizedCrop.get_params, vectorised: 10 tries per image, the first
    box that fits wins, a centre crop with clamped ratio if none does."""
    tries = 10
    area = height * width
    target_area = area * (recipe.crop_scale[0] + (recipe.crop_scale[1] - recipe.crop_scale[0])
                          * torch.rand(n, tries, generator=generator, device=device))
    log_lo, log_hi = math.log(recipe.crop_ratio[0]), math.log(recipe.crop_ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, tries, generator=generator, device=device))
    w = torch.sqrt(target_area * aspect).round().long()
    h = torch.sqrt(target_area / aspect).round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.int().argmax(dim=1, keepdim=True)  # index of the first fitting try (0 if none)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)

    # Fallback (no try fitted): whole image, ratio clamped into crop_ratio.
    in_ratio = width / height
    if in_ratio < recipe.crop_ratio[0]:
        fallback_w, fallback_h = width, int(round(width / recipe.crop_ratio[0]))
    elif in_ratio > recipe.crop_ratio[1]:
        fallback_w, fallback_h = int(round(height * recipe.crop_ratio[1])), height
    else:
        fallback_w, fallback_h = width, height
    any_fits = fits.any(dim=1)
    w = torch.where(any_fits, w, fallback_w)
    h = torch.where(any_fits, h, fallback_h)
    top = (torch.rand(n, generator=generator, device=device) * (height - h + 1)).floor().long()
    left = (torch.rand(n, generator=generator, device=device) * (width - w + 1)).floor().long()
    top = torch.where(any_fits, top, (height - fallback_h) // 2)
    left = torch.where(any_fits, left, (width - fallback_w) // 2)
    return torch.stack([top, left, h, w], dim=1)


def apply_view(images: torch.Tensor, params: ViewParams, size: int) -> torch.Tensor:
    """Apply ``params`` to a uint8 or [0, 1] float batch; returns floats in [0, 1] (N, C, size, size)."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    x = resized_crop(x, params.crop, params.flip, size)
    if params.jitter_pass:
        x = color_jitter(x, params)
    if x.shape[1] == 3:
        x = torch.where(params.grayscale[:, None, None, None], grayscale(x).expand_as(x), x)
    if params.blur_kernel_fraction > 0:
        x = gaussian_blur(x, params.blur_sigma, kernel_size(size, params.blur_kernel_fraction))
    return torch.where(params.solarize[:, None, None, None] & (x >= 0.5), 1 - x, x)


def kernel_size(side: int, fraction: float) -> int:
    """Odd blur kernel ≈ ``fraction`` of the side, at least 3 (23 px at 224, 3 px at 32)."""
    k = max(3, int(round(side * fraction)))
    return k if k % 2 else k + 1


def resized_crop(x: torch.Tensor, crop: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image to its own box, resize to ``size`` (bicubic) and flip, in one grid_sample.

    The affine grid maps output pixel centres exactly where ``F.interpolate(...,
    align_corners=False)`` of the cropped box would sample; taps that fall outside
    the box read the real neighbouring pixels instead of repeating the box's edge.
    Like the paper's TF code there is no antialiasing when shrinking.
    """
    n, _, height, width = x.shape
    top, left, h, w = crop.to(x.dtype).unbind(1)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = torch.where(flip, -w / width, w / width)
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    out = F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return out.clamp_(0, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) → (N, 1, H, W) luma."""
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    factor = factor[:, None, None, None]
    return (factor * x + (1 - factor) * other).clamp_(0, 1)


def color_jitter(x: torch.Tensor, params: ViewParams) -> torch.Tensor:
    """Brightness, contrast, saturation, hue, each image in its own random order (torchvision ColorJitter)."""
    rgb = x.shape[1] == 3
    ops = range(4) if rgb else range(2)  # saturation and hue do nothing to one channel
    for position in range(4):
        op_here = params.jitter_order[:, position]
        for op in ops:
            selected = (op_here == op)[:, None, None, None]
            if op == 0:
                changed = _blend(x, torch.zeros_like(x), params.brightness)
            elif op == 1:
                luma = grayscale(x) if rgb else x
                changed = _blend(x, luma.mean(dim=(1, 2, 3), keepdim=True), params.contrast)
            elif op == 2:
                changed = _blend(x, grayscale(x), params.saturation)
            else:
                changed = adjust_hue(x, params.hue)
            x = torch.where(selected, changed, x)
    return x


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift`` turns per image, through HSV as torchvision and TF do."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    value = maxc
    saturation = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    safe_delta = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / safe_delta, (maxc - g) / safe_delta, (maxc - b) / safe_delta
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(delta == 0, torch.zeros_like(hue), hue)
    hue = (hue / 6.0 + shift[:, None, None]) % 1.0

    i = torch.floor(hue * 6.0)
    f = hue * 6.0 - i
    i = i.long() % 6
    p = (value * (1 - saturation)).clamp(0, 1)
    q = (value * (1 - saturation * f)).clamp(0, 1)
    t = (value * (1 - saturation * (1 - f))).clamp(0, 1)
    # The six sectors of the hue circle: which of (v, q, p, t) is r, g and b.
    candidates = torch.stack([value, q, p, t], dim=1)
    pick = torch.tensor([[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]], device=x.device)
    index = pick[i].permute(0, 3, 1, 2)  # (N, 3, H, W) index into candidates
    return candidates.gather(1, index)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel: int) -> torch.Tensor:
    """Separable Gaussian blur with a per-image σ (0 = leave the image alone), reflect padding.

    One grouped convolution per direction blurs the whole batch: images are
    folded into channels, each with its own kernel."""
    n, c, h, w = x.shape
    positions = torch.arange(kernel, device=x.device, dtype=x.dtype) - (kernel - 1) / 2
    safe_sigma = torch.where(sigma > 0, sigma, torch.ones_like(sigma)).to(x.dtype)
    weights = torch.exp(-0.5 * (positions[None] / safe_sigma[:, None]) ** 2)
    weights = weights / weights.sum(dim=1, keepdim=True)
    identity = (positions == 0).to(x.dtype).expand(n, kernel)
    weights = torch.where((sigma > 0)[:, None], weights, identity)  # (N, k)
    weights = weights.repeat_interleave(c, dim=0)  # (N·C, k)
    folded = F.pad(x.reshape(1, n * c, h, w), [kernel // 2] * 4, mode="reflect")
    folded = F.conv2d(folded, weights[:, None, None, :], groups=n * c)
    folded = F.conv2d(folded, weights[:, None, :, None], groups=n * c)
    return folded.reshape(n, c, h, w)


def augment(
    images: torch.Tensor,
    recipe: ViewRecipe,
    size: int,
    mean: torch.Tensor,
    std: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """One normalised view of a uint8 batch: sample per-image parameters, apply, normalise."""
    params = sample_view_params(recipe, images.shape[0], images.shape[2], images.shape[3], generator, images.device)
    x = apply_view(images, params, size)
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
