"""The two BYOL views (paper appendix B, table 6), batched, one random draw per image; and the
deterministic evaluation view (resize, centre crop).

``augment(images, recipe, size, ...)`` takes a batch (N, C, H, W) of uint8 / uint16 images on
any device — each image may fill only the top-left (h, w) of the canvas (``sizes``) — and
returns normalised float views (N, C, size, size) on that device.  Every random choice — crop
box, flips, rotation, jitter values and their order, grayscale, blur σ, solarize — is drawn
**per image**.  (Calling a torchvision transform on a 4-D batch draws once for the whole
batch: every image gets the same crop.)

Colour jitter follows the official implementation (TensorFlow / dm_pix semantics, not
torchvision's): brightness adds δ ~ U(−0.4, 0.4); contrast scales each channel around that
channel's mean by U(0.6, 1.4); saturation scales S in HSV by U(0.8, 1.2); hue shifts H by
U(−0.1, 0.1); the four in a random order per image, each followed by a clip to [0, 1].
One channel (gray) or N bands: brightness and contrast act on every channel; saturation,
hue and grayscale conversion need RGB and are skipped.

Why our own ops instead of a library's: torchvision's functional ops take one scalar
parameter per call (per-image randomness would need a Python loop over the batch), and
kornia's ColorJitter draws one op order per batch, not per image (BENCHMARKS.md, "Speed").
Here each op is a handful of batched tensor kernels; the tests check them image by image
against torchvision (crop, flip, blur, solarize) and against the paper's definitions (jitter).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as the official code (dm_pix) and torchvision
EVAL_CROP = 224 / 256  # the paper's evaluation: resize the shorter side to 256, centre crop 224


@dataclass(frozen=True)
class ViewRecipe:
    """Probabilities and ranges for one view.  Defaults are view 1 of the paper's table."""

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
# (figure 3b).  fundus: retinal photographs, where colour carries the grade (red haemorrhages,
# yellow exudates) and there is no canonical orientation: any rotation and both flips, crops
# that keep small lesions, milder jitter, no grayscale, no solarize.  microscopy: no canonical
# orientation, stains and bands whose hue means something: rotations, both flips, brightness
# and contrast only.
AUGMENTATION_SETS = ("full", "crop-colour", "crop", "fundus", "microscopy")
DOMAIN_CHANGES = {
    "fundus": dict(vflip_prob=0.5, rotation=180.0, brightness=0.2, contrast=0.2, saturation=0.1, hue=0.02,
                   grayscale_prob=0.0, solarize_prob=0.0),
    "microscopy": dict(vflip_prob=0.5, rotation=180.0, brightness=0.3, contrast=0.3, saturation=0.0, hue=0.0,
                       grayscale_prob=0.0, solarize_prob=0.0),
}


def byol_views(blur: bool = True, crop_scale: tuple[float, float] = (0.08, 1.0),
               augmentations: str = "full", image_size: int = 224) -> tuple[ViewRecipe, ViewRecipe]:
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
        ViewRecipe(crop_scale=crop_scale, blur_prob=1.0 if blur else 0.0, blur_sigma=sigma, solarize_prob=0.0),
        ViewRecipe(crop_scale=crop_scale, blur_prob=0.1 if blur else 0.0, blur_sigma=sigma, solarize_prob=0.2),
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


def sample_view_params(recipe: ViewRecipe, n: int, height, width, generator: torch.Generator,
                       device=None) -> ViewParams:
    """Draw one view's parameters for ``n`` images of ``height`` × ``width`` (ints, or (N,)
    tensors when the images differ in size)."""
    device = device or generator.device
    crop = _sample_crops(recipe, n, height, width, generator, device)

    def coin(p: float) -> torch.Tensor:
        return torch.rand(n, generator=generator, device=device) < p

    jitter = coin(recipe.jitter_prob)

    def factor(strength: float) -> torch.Tensor:  # U(1 − s, 1 + s), or 1 when jitter is off
        return torch.where(jitter, _uniform(max(0.0, 1 - strength), 1 + strength, n, generator, device), 1.0)

    brightness = torch.where(jitter, _uniform(-recipe.brightness, recipe.brightness, n, generator, device), 0.0)
    contrast, saturation = factor(recipe.contrast), factor(recipe.saturation)
    hue = torch.where(jitter, _uniform(-recipe.hue, recipe.hue, n, generator, device), 0.0)
    order = torch.rand(n, 4, generator=generator, device=device).argsort(dim=1)
    blur_sigma = torch.where(coin(recipe.blur_prob), _uniform(*recipe.blur_sigma, n, generator, device), 0.0)
    flip, vflip = coin(recipe.flip_prob), coin(recipe.vflip_prob)
    angle = _uniform(-1, 1, n, generator, device) * math.radians(recipe.rotation)
    return ViewParams(crop, flip, vflip, angle, order, brightness, contrast, saturation, hue,
                      coin(recipe.grayscale_prob), blur_sigma, coin(recipe.solarize_prob),
                      recipe.blur_kernel_fraction if recipe.blur_prob > 0 else 0.0, recipe.jitter_prob > 0)


def _sample_crops(recipe: ViewRecipe, n: int, height, width, generator, device) -> torch.Tensor:
    """torchvision's RandomResizedCrop.get_params, vectorised over images of their own sizes:
    10 tries per image, the first box that fits wins, a centre crop with clamped ratio if none does."""
    height = torch.as_tensor(height, device=device).expand(n).float()
    width = torch.as_tensor(width, device=device).expand(n).float()
    tries = 10
    area = (height * width)[:, None]
    target_area = area * (recipe.crop_scale[0] + (recipe.crop_scale[1] - recipe.crop_scale[0])
                          * torch.rand(n, tries, generator=generator, device=device))
    log_lo, log_hi = math.log(recipe.crop_ratio[0]), math.log(recipe.crop_ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, tries, generator=generator, device=device))
    w = torch.sqrt(target_area * aspect).round()
    h = torch.sqrt(target_area / aspect).round()
    fits = (w > 0) & (w <= width[:, None]) & (h > 0) & (h <= height[:, None])
    first = fits.int().argmax(dim=1, keepdim=True)  # index of the first fitting try (0 if none)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)

    # Fallback (no try fitted): the whole image, its ratio clamped into crop_ratio.
    in_ratio = width / height
    fallback_w = torch.where(in_ratio > recipe.crop_ratio[1], (height * recipe.crop_ratio[1]).round(), width)
    fallback_h = torch.where(in_ratio < recipe.crop_ratio[0], (width / recipe.crop_ratio[0]).round(), height)
    any_fits = fits.any(dim=1)
    w, h = torch.where(any_fits, w, fallback_w), torch.where(any_fits, h, fallback_h)
    top = (torch.rand(n, generator=generator, device=device) * (height - h + 1)).floor()
    left = (torch.rand(n, generator=generator, device=device) * (width - w + 1)).floor()
    top = torch.where(any_fits, top, ((height - fallback_h) / 2).floor())
    left = torch.where(any_fits, left, ((width - fallback_w) / 2).floor())
    return torch.stack([top, left, h, w], dim=1).long()


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """Images as floats in [0, 1]: uint8 / 255, uint16 / 65535 (16-bit data keeps its levels)."""
    if images.dtype == torch.uint8:
        return images.float() / 255
    if images.dtype == torch.uint16:
        return images.float() / 65535
    return images.float()


class ViewApplier:
    """Applies drawn ``params`` to a batch of images (integer or [0, 1] float): floats in [0, 1]
    (N, C, size, size), normalised when given ``mean`` and ``std``.  ``apply_view`` is the eager one.

    ``compiled`` (the compiled training step's): the colour ops (jitter, grayscale: some sixty
    elementwise kernels per view eager) and the solarize-and-normalise tail become fused
    torch.compile kernels; the crop (one grid_sample) and the blur (grouped convolutions) stay
    library kernels.  Measured on the CPU (BENCHMARKS.md, "Speed"; benchmarks/augment_engines.py
    --compile, RGB, 32 and 64 px): compiling the colour ops made a view 1.82× and 3.13× faster,
    compiling the whole application 0.75× and 0.28× as fast.
    """

    def __init__(self, compiled: bool = False, mode: str = "default"):
        self.colour, self.finish = colour_ops, solarize_and_normalise
        if compiled:
            self.colour, self.finish = torch.compile(self.colour, mode=mode), torch.compile(self.finish, mode=mode)

    def __call__(self, images: torch.Tensor, params: ViewParams, size: int, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None) -> torch.Tensor:
        x = resized_crop(to_unit(images), params.crop, params.flip, size, params.vflip, params.angle)
        x = self.colour(x, params)
        if params.blur_kernel_fraction > 0:
            x = gaussian_blur(x, params.blur_sigma, kernel_size(size, params.blur_kernel_fraction))
        return self.finish(x, params, mean, std)


def colour_ops(x: torch.Tensor, params: ViewParams) -> torch.Tensor:
    """Colour jitter, then grayscale (RGB only), per image."""
    if params.jitter_pass:
        x = color_jitter(x, params)
    if x.shape[1] == 3:
        x = torch.where(params.grayscale[:, None, None, None], grayscale(x).expand_as(x), x)
    return x


def solarize_and_normalise(x: torch.Tensor, params: ViewParams, mean: torch.Tensor | None,
                           std: torch.Tensor | None) -> torch.Tensor:
    x = torch.where(params.solarize[:, None, None, None] & (x >= 0.5), 1 - x, x)
    return x if mean is None else normalise(x, mean, std)


apply_view = ViewApplier()


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


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) → (N, 1, H, W) luma."""
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def color_jitter(x: torch.Tensor, params: ViewParams) -> torch.Tensor:
    """Brightness, contrast, saturation, hue with the official code's semantics (module docstring),
    each image in its own order, each op followed by a clip to [0, 1].

    At each of the four positions every image applies the one op its order puts there, the
    others keeping their pixels; saturation and hue share one HSV round trip per position."""
    rgb = x.shape[1] == 3
    view = (-1, 1, 1, 1)
    for position in range(4):
        op = params.jitter_order[:, position]
        x = torch.where((op == 0).view(view), (x + params.brightness.view(view)).clamp(0, 1), x)
        mean = x.mean(dim=(2, 3), keepdim=True)  # each channel around its own mean
        x = torch.where((op == 1).view(view), ((x - mean) * params.contrast.view(view) + mean).clamp(0, 1), x)
        if rgb:
            in_hsv = (op == 2) | (op == 3)
            changed = adjust_hsv(x, torch.where(op == 2, params.saturation, 1.0), torch.where(op == 3, params.hue, 0.0))
            x = torch.where(in_hsv.view(view), changed, x)
    return x


def rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) RGB in [0, 1] → hue in turns [0, 1), saturation, value, each (N, H, W)."""
    r, g, b = x.unbind(1)
    value, _ = x.max(dim=1)
    delta = value - x.min(dim=1)[0]
    saturation = delta / torch.where(value == 0, torch.ones_like(value), value)
    safe_delta = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = (value - r) / safe_delta, (value - g) / safe_delta, (value - b) / safe_delta
    hue = torch.where(value == r, bc - gc, torch.where(value == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(delta == 0, torch.zeros_like(hue), hue)
    return (hue / 6.0) % 1.0, saturation, value


def hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rgb_to_hsv``: (N, 3, H, W) RGB."""
    i = torch.floor(hue * 6.0)
    f = hue * 6.0 - i
    i = i.long() % 6
    p = (value * (1 - saturation)).clamp(0, 1)
    q = (value * (1 - saturation * f)).clamp(0, 1)
    t = (value * (1 - saturation * (1 - f))).clamp(0, 1)
    # The six sectors of the hue circle: which of (v, q, p, t) is r, g and b.
    candidates = torch.stack([value, q, p, t], dim=1)
    pick = torch.tensor([[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]], device=hue.device)
    return candidates.gather(1, pick[i].permute(0, 3, 1, 2))


def adjust_hsv(x: torch.Tensor, saturation: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Scale S by ``saturation`` (clipped to [0, 1]) and shift H by ``hue`` turns, per image."""
    h, s, v = rgb_to_hsv(x)
    return hsv_to_rgb((h + hue.view(-1, 1, 1)) % 1.0, (s * saturation.view(-1, 1, 1)).clamp(0, 1), v)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift`` turns per image, through HSV."""
    return adjust_hsv(x, torch.ones_like(shift), shift)


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


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def augment(images: torch.Tensor, recipe: ViewRecipe, size: int, mean: torch.Tensor, std: torch.Tensor,
            generator: torch.Generator, sizes: torch.Tensor | None = None, apply=apply_view) -> torch.Tensor:
    """One normalised view of a batch: sample per-image parameters (inside each image's own
    ``sizes`` when given), apply, normalise (``apply``: a ``ViewApplier``)."""
    height, width = (sizes[:, 0], sizes[:, 1]) if sizes is not None else images.shape[2:]
    params = sample_view_params(recipe, images.shape[0], height, width, generator, images.device)
    return apply(images, params, size, mean, std)


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
