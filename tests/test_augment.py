import dataclasses

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from byol.augment import (ViewParams, ViewRecipe, apply_view, augment, byol_views, kernel_size, resized_crop,
                          sample_view_params)


def params_for(n, height, width, seed=0, recipe=None):
    return sample_view_params(recipe or ViewRecipe(), n, height, width, torch.Generator().manual_seed(seed))


def test_every_image_gets_its_own_draw():
    params = params_for(64, 32, 32)
    assert len({tuple(box) for box in params.crop.tolist()}) > 50
    assert 0 < params.flip.sum() < 64
    jittered = params.brightness != 1
    assert len(set(params.brightness[jittered].tolist())) == int(jittered.sum())
    assert len({tuple(order) for order in params.jitter_order.tolist()}) > 10
    assert len(set(params.blur_sigma.tolist())) == 64


def test_identical_images_come_out_different():
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).expand(16, -1, -1, -1)
    view = augment(image, ViewRecipe(), 32, torch.zeros(3), torch.ones(3), torch.Generator().manual_seed(0))
    flat = view.flatten(1)
    assert all(not torch.allclose(flat[i], flat[j]) for i in range(16) for j in range(i + 1, 16))


def test_two_views_are_drawn_independently():
    generator = torch.Generator().manual_seed(0)
    first, second = byol_views()
    a = sample_view_params(first, 32, 32, 32, generator)
    b = sample_view_params(second, 32, 32, 32, generator)
    assert not torch.equal(a.crop, b.crop) and not torch.equal(a.brightness, b.brightness)


def test_observed_probabilities_match_the_paper_table():
    n = 40_000
    generator = torch.Generator().manual_seed(1)
    first, second = byol_views()
    expected = {  # (view 1, view 2), paper appendix B table 6
        "blur": (1.0, 0.1), "solarize": (0.0, 0.2), "flip": (0.5, 0.5), "jitter": (0.8, 0.8), "grayscale": (0.2, 0.2),
    }
    for view, recipe in enumerate((first, second)):
        params = sample_view_params(recipe, n, 32, 32, generator)
        observed = {
            "blur": (params.blur_sigma > 0).float().mean().item(),
            "solarize": params.solarize.float().mean().item(),
            "flip": params.flip.float().mean().item(),
            "jitter": (params.brightness != 1).float().mean().item(),
            "grayscale": params.grayscale.float().mean().item(),
        }
        for name, probabilities in expected.items():
            p = probabilities[view]
            tolerance = 4 * (p * (1 - p) / n) ** 0.5 + 1e-9  # 4 standard errors
            assert abs(observed[name] - p) <= tolerance, (view, name, observed[name])
    assert recipe.brightness == 0.4 and recipe.contrast == 0.4 and recipe.saturation == 0.2 and recipe.hue == 0.1


def test_jitter_factors_span_the_paper_ranges():
    params = params_for(20_000, 32, 32)
    on = params.brightness != 1
    for values, low, high in ((params.brightness[on], 0.6, 1.4), (params.contrast[on], 0.6, 1.4),
                              (params.saturation[on], 0.8, 1.2), (params.hue[on], -0.1, 0.1)):
        assert low <= values.min() < low + 0.01 and high - 0.01 < values.max() <= high


def test_crop_boxes_fit_and_follow_scale_and_ratio():
    params = params_for(5000, 40, 30)
    top, left, h, w = params.crop.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 40).all() and (left + w <= 30).all()
    area = (h * w).float() / (40 * 30)
    assert area.min() >= 0.05 and area.max() <= 1.0  # 0.08 before integer rounding


def reference_view(image: torch.Tensor, p: ViewParams, i: int, size: int) -> torch.Tensor:
    """The same view from torchvision's per-image functional ops, one image at a time."""
    top, left, h, w = p.crop[i].tolist()
    x = TF.resized_crop(image, top, left, h, w, [size, size], InterpolationMode.BICUBIC, antialias=False).clamp(0, 1)
    if p.flip[i]:
        x = TF.horizontal_flip(x)
    ops = [lambda y: TF.adjust_brightness(y, p.brightness[i].item()),
           lambda y: TF.adjust_contrast(y, p.contrast[i].item()),
           lambda y: TF.adjust_saturation(y, p.saturation[i].item()),
           lambda y: TF.adjust_hue(y, p.hue[i].item())]
    for op in p.jitter_order[i].tolist():
        x = ops[op](x)
    if p.grayscale[i]:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if p.blur_sigma[i] > 0:
        k = kernel_size(size, p.blur_kernel_fraction)
        x = TF.gaussian_blur(x, [k, k], [p.blur_sigma[i].item()] * 2)
    if p.solarize[i]:
        x = TF.solarize(x, 0.5)
    return x


@pytest.mark.parametrize("channels", [3, 1])
def test_batched_view_equals_torchvision_per_image(channels):
    torch.manual_seed(0)
    n, size = 24, 32
    images = torch.rand(n, channels, 40, 40)
    recipe = ViewRecipe(blur_prob=0.5, solarize_prob=0.5, grayscale_prob=0.3 if channels == 3 else 0.0)
    params = params_for(n, 40, 40, seed=3, recipe=recipe)
    # Whole-image boxes: at a box edge our sampler reads real neighbouring pixels where
    # torchvision repeats the edge pixel, so border-free boxes compare exactly (below).
    params = dataclasses.replace(params, crop=torch.tensor([[0, 0, 40, 40]] * n))
    batched = apply_view(images, params, size)
    for i in range(n):
        torch.testing.assert_close(batched[i], reference_view(images[i], params, i, size), atol=2e-5, rtol=0)


def test_batched_crop_equals_torchvision_inside_the_box():
    torch.manual_seed(0)
    images = torch.rand(16, 3, 48, 48)
    recipe = ViewRecipe(jitter_prob=0, grayscale_prob=0, blur_prob=0, crop_scale=(0.3, 1.0))
    params = params_for(16, 48, 48, seed=5, recipe=recipe)
    batched = apply_view(images, params, 32)
    for i in range(16):
        reference = reference_view(images[i], params, i, 32)
        # Output pixels whose bicubic taps stay inside the box agree exactly.
        torch.testing.assert_close(batched[i][:, 3:-3, 3:-3], reference[:, 3:-3, 3:-3], atol=2e-5, rtol=0)


def test_grayscale_input_keeps_one_channel():
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    first, second = byol_views()
    generator = torch.Generator().manual_seed(0)
    for recipe in (first, second):
        out = augment(images, recipe, 28, torch.tensor([0.5]), torch.tensor([0.25]), generator)
        assert out.shape == (8, 1, 28, 28) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_blur_kernel_is_about_ten_percent_of_the_side():
    assert kernel_size(224, 0.1) == 23 and kernel_size(32, 0.1) == 3 and kernel_size(96, 0.1) == 11


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_augment_runs_on_the_batch_device_and_matches_cpu():
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    params = params_for(32, 32, 32, seed=2)
    cuda_params = ViewParams(**{k: v.cuda() if torch.is_tensor(v) else v for k, v in vars(params).items()})
    on_gpu = apply_view(images.cuda(), cuda_params, 32)
    assert on_gpu.is_cuda
    torch.testing.assert_close(on_gpu.cpu(), apply_view(images, params, 32), atol=1e-4, rtol=0)
    generator = torch.Generator(device="cuda").manual_seed(0)
    assert augment(images.cuda(), ViewRecipe(), 32, torch.zeros(3, device="cuda"), torch.ones(3, device="cuda"),
                   generator).is_cuda


def test_augmentation_subsets_keep_only_what_they_name():
    full = byol_views(blur=True)
    crop_colour = byol_views(blur=True, augmentations="crop-colour")
    crop = byol_views(blur=True, augmentations="crop")
    for full_view, colour_view, crop_view in zip(full, crop_colour, crop):
        assert (colour_view.jitter_prob, colour_view.grayscale_prob) == (full_view.jitter_prob, full_view.grayscale_prob)
        assert colour_view.blur_prob == colour_view.solarize_prob == 0
        assert crop_view.jitter_prob == crop_view.grayscale_prob == crop_view.blur_prob == crop_view.solarize_prob == 0
        assert (crop_view.crop_scale, crop_view.flip_prob) == (full_view.crop_scale, full_view.flip_prob)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    view = augment(images, crop[1], 32, torch.zeros(3), torch.ones(3), torch.Generator().manual_seed(3))
    params = sample_view_params(crop[1], 16, 32, 32, torch.Generator().manual_seed(3))
    resized = resized_crop(images.float() / 255, params.crop, params.flip, 32)
    assert torch.equal(view, resized)  # crop only: the view is the crop, nothing else
    with pytest.raises(ValueError, match="augmentations must be one of"):
        byol_views(augmentations="colour")
