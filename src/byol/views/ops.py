"""Pixel operations on a batch (N, C, H, W) of floats in [0, 1], each with its own parameter per
image: the crop, the colour jitter of the official implementation, grayscale, blur, solarize,
normalisation, and the deterministic evaluation view.

Colour jitter follows the official implementation (TensorFlow / dm_pix semantics, not
torchvision's): brightness adds δ ~ U(−0.4, 0.4); contrast scales each channel around that
channel's mean by U(0.6, 1.4); saturation scales S in HSV by U(0.8, 1.2); hue shifts H by
U(−0.1, 0.1); the four in a random order per image, each followed by a clip to [0, 1].  One
channel (gray) or N bands: brightness and contrast act on every channel; saturation, hue and
grayscale conversion need RGB and are skipped.

Library or our own, op by op, by what ``benchmarks/augment_engines.py --ops`` measured on
the CPU (BENCHMARKS.md, "Augmentation: library ops or ours"):
- kornia's brightness, saturation, hue and solarize take one factor per image and match the
  official definitions (≤ 2e-6): we use them.  Its saturation scales S without an HSV round
  trip and is 7× faster than ours was.
- contrast is ours: kornia's scales pixels or blends with the gray mean (torchvision's), not
  each channel around its own mean.
- grayscale is ours: ITU-R 601-2 with dm_pix's 0.2989 (kornia: 0.299).
- the blur is ours: one grouped, separable convolution per direction with σ per image,
  10–15 % faster than ``kornia.filters.gaussian_blur2d`` with per-image σ.
- the crop is ours: crop, rotation, flips and bicubic resize in one ``grid_sample`` per batch,
  taps outside the box reading the image's real neighbouring pixels.
"""
from __future__ import annotations

import math

import kornia.enhance
import torch
import torch.nn.functional as F

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as the official code (dm_pix) and torchvision
EVAL_CROP = 224 / 256  # the paper's evaluation: resize the shorter side to 256, centre crop 224


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """Images as floats in [0, 1]: uint8 / 255, uint16 / 65535 (16-bit data keeps its levels)."""
    if images.dtype == torch.uint8:
        return images.float() / 255
    if images.dtype == torch.uint16:
        return images.float() / 65535
    return images.float()


def kernel_size(side: int, fraction: float) -> int:
    """Odd blur kernel ≈ ``fraction`` of the side, at least 3 (23 px at 224, 3 px at 32)."""
    k = max(3, int(round(side * fraction)))
    return k if k % 2 else k + 1


def resized_crop(x: torch.Tensor, crop: torch.Tensor, flip: torch.Tensor, size: int,
                 vflip: torch.Tensor | None = None, angle: torch.Tensor | None = None) -> torch.Tensor:
    """Crop each image to its own box, rotate it about the box's centre by ``angle``, resize to
    ``size`` (bicubic) and flip, in one grid_sample.

    The affine grid maps output pixel centres exactly where ``F.interpolate(...,
    align_corners=False)`` of the cropped box would sample; taps that fall outside the box
    read the real neighbouring pixels instead of repeating the box's edge.  Like the paper's
    TF code there is no antialiasing when shrinking.
    """
    n, _, height, width = x.shape
    top, left, h, w = crop.to(x.dtype).unbind(1)
    flip_x = torch.where(flip, -1.0, 1.0).to(x.dtype)
    flip_y = torch.where(vflip, -1.0, 1.0).to(x.dtype) if vflip is not None else torch.ones_like(flip_x)
    cos, sin = (angle.cos().to(x.dtype), angle.sin().to(x.dtype)) if angle is not None else (1.0, 0.0)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = cos * flip_x * w / width
    theta[:, 0, 1] = -sin * flip_y * h / width
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 0] = sin * flip_x * w / height
    theta[:, 1, 1] = cos * flip_y * h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    out = F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return out.clamp_(0, 1)


def brightness(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """x + δ per image, clipped (the official, additive brightness)."""
    return kornia.enhance.adjust_brightness(x, delta)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Each channel scaled around its own mean by the image's factor, clipped."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * factor.view(-1, 1, 1, 1) + mean).clamp(0, 1)


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """HSV saturation × the image's factor, clipped to [0, 1] (RGB)."""
    return kornia.enhance.adjust_saturation(x, factor)


def hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """HSV hue shifted by ``turns`` of the colour circle (RGB)."""
    return kornia.enhance.adjust_hue(x, turns * (2 * math.pi))


JITTER_OPS = (brightness, contrast, saturation, hue)  # the order ``ViewParams.jitter_order`` indexes


def color_jitter(x: torch.Tensor, order: torch.Tensor, factors: tuple[torch.Tensor, ...],
                 masked: bool) -> torch.Tensor:
    """The four jitter ops of ``JITTER_OPS`` (the last two on RGB only) with ``factors[k]`` per
    image, each image in its own ``order`` (N, 4).

    At each of the four positions an image applies the one op its order puts there.  Two ways,
    the same numbers: by index, each op runs on the images that apply it there — a quarter of
    the work, but finding them (``nonzero``) reads back from the device; ``masked``, every op runs
    on every image and a mask keeps the right one — static shapes, as a compiled graph (and a
    CUDA graph) needs, and no host sync on a GPU."""
    ops = len(JITTER_OPS) if x.shape[1] == 3 else 2
    for position in range(4):
        at = order[:, position]
        for k in range(ops):
            if masked:
                x = torch.where((at == k).view(-1, 1, 1, 1), JITTER_OPS[k](x, factors[k]), x)
            else:
                index = (at == k).nonzero().squeeze(1)  # note: a host sync on a GPU (the CPU's eager path only)
                if len(index):
                    x = x.index_copy(0, index, JITTER_OPS[k](x[index], factors[k][index]))
    return x


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) → (N, 1, H, W) luma."""
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


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


def solarize(x: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """x ← 1 − x where x ≥ 0.5, in the ``chosen`` images (N,) bool."""
    return torch.where(chosen.view(-1, 1, 1, 1), kornia.enhance.solarize(x, 0.5), x)


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def eval_crop_for(image_size: int) -> float:
    """The evaluation crop: the paper's 224 / 256 for views of 128 px and more; the whole image
    below (CIFAR- and Fashion-MNIST-scale recipes evaluate on the full 32 / 28 px image)."""
    return EVAL_CROP if image_size >= 128 else 1.0


def eval_view(images: torch.Tensor, size: int, crop: float = 1.0, sizes: torch.Tensor | None = None) -> torch.Tensor:
    """The evaluation view in [0, 1]: the centred square of side ``crop`` × the shorter side of
    each image (the paper's resize-256-crop-224 is ``crop = EVAL_CROP``), resized to ``size``
    (bicubic, antialiased)."""
    x = to_unit(images)
    if sizes is None:
        height, width = x.shape[2:]
        side = max(1, round(crop * min(height, width)))
        if side == height == width == size:
            return x
        top, left = (height - side) // 2, (width - side) // 2
        return _resize(x[:, :, top:top + side, left:left + side], size)
    views = []
    for image, (height, width) in zip(x, sizes.tolist()):
        side = max(1, round(crop * min(height, width)))
        top, left = (height - side) // 2, (width - side) // 2
        views.append(_resize(image[None, :, top:top + side, left:left + side], size))
    return torch.cat(views)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == x.shape[-2] == size:
        return x
    antialias = x.shape[-1] > size  # antialiasing only matters when shrinking
    return F.interpolate(x, size=(size, size), mode="bicubic", antialias=antialias, align_corners=False).clamp_(0, 1)
