"""Views of a batch: draw every image's parameters (``spec.py``), then apply them (``ops.py``)
on the batch's own device.  ``augment`` is the whole of it; ``ViewApplier`` the applying half,
eager or compiled."""
from __future__ import annotations

import torch

from .ops import color_jitter, gaussian_blur, grayscale, kernel_size, normalise, resized_crop, solarize, to_unit
from .spec import ViewParams, ViewSpec, sample_view_params


def colour_ops(x: torch.Tensor, params: ViewParams, masked: bool) -> torch.Tensor:
    """Colour jitter, then grayscale (RGB only), per image (``ops.color_jitter`` says what
    ``masked`` changes: the cost, not the result)."""
    if params.jitter_pass:
        x = color_jitter(x, params.jitter_order, (params.brightness, params.contrast, params.saturation, params.hue),
                         masked)
    if x.shape[1] == 3:
        x = torch.where(params.grayscale[:, None, None, None], grayscale(x).expand_as(x), x)
    return x


def solarize_and_normalise(x: torch.Tensor, params: ViewParams, mean: torch.Tensor | None,
                           std: torch.Tensor | None) -> torch.Tensor:
    x = solarize(x, params.solarize)
    return x if mean is None else normalise(x, mean, std)


def _eager_colour(x: torch.Tensor, params: ViewParams) -> torch.Tensor:
    # By index on a CPU (a quarter of the jitter's work: 1.7x faster gray, 3x RGB, measured);
    # masked on a GPU, where nonzero would wait for the device at every op.
    return colour_ops(x, params, masked=x.device.type != "cpu")


def _masked_colour(x: torch.Tensor, params: ViewParams) -> torch.Tensor:
    return colour_ops(x, params, masked=True)


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
        self.colour, self.finish = _eager_colour, solarize_and_normalise
        if compiled:
            self.colour = torch.compile(_masked_colour, mode=mode)
            self.finish = torch.compile(self.finish, mode=mode)

    def __call__(self, images: torch.Tensor, params: ViewParams, size: int, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None) -> torch.Tensor:
        x = resized_crop(to_unit(images), params.crop, params.flip, size, params.vflip, params.angle)
        x = self.colour(x, params)
        if params.blur_kernel_fraction > 0:
            x = gaussian_blur(x, params.blur_sigma, kernel_size(size, params.blur_kernel_fraction))
        return self.finish(x, params, mean, std)


apply_view = ViewApplier()


def augment(images: torch.Tensor, spec: ViewSpec, size: int, mean: torch.Tensor, std: torch.Tensor,
            generator: torch.Generator, sizes: torch.Tensor | None = None, apply=apply_view) -> torch.Tensor:
    """One normalised view of a batch (N, C, H, W) of uint8 / uint16 images on any device: draw
    every image's parameters from ``generator`` (inside each image's own ``sizes`` when given),
    apply them (``apply``: a ``ViewApplier``), normalise.  Returns (N, C, size, size) floats."""
    height, width = (sizes[:, 0], sizes[:, 1]) if sizes is not None else images.shape[2:]
    params = sample_view_params(spec, images.shape[0], height, width, generator, images.device)
    return apply(images, params, size, mean, std)
