import colorsys
import dataclasses
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from byol.views.apply import apply_view, augment, colour_ops
from byol.views.ops import EVAL_CROP, eval_view, kernel_size, resized_crop
from byol.views.spec import ViewParams, ViewSpec, byol_views, sample_view_params


def jitter(images, params, masked=False):
    """Colour jitter alone (no grayscale), by index or masked."""
    return colour_ops(images, dataclasses.replace(params, grayscale=torch.zeros_like(params.grayscale)), masked)


def params_for(n, height, width, seed=0, recipe=None):
    return sample_view_params(recipe or ViewSpec(), n, height, width, torch.Generator().manual_seed(seed))


def test_every_image_gets_its_own_draw():
    params = params_for(64, 32, 32)
    assert len({tuple(box) for box in params.crop.tolist()}) > 50
    assert 0 < params.flip.sum() < 64
    jittered = params.contrast != 1
    assert len(set(params.brightness[jittered].tolist())) == int(jittered.sum())
    assert len({tuple(order) for order in params.jitter_order.tolist()}) > 10
    assert len(set(params.blur_sigma.tolist())) == 64


def test_identical_images_come_out_different():
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).expand(16, -1, -1, -1)
    view = augment(image, ViewSpec(), 32, torch.zeros(3), torch.ones(3), torch.Generator().manual_seed(0))
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
            "jitter": (params.contrast != 1).float().mean().item(),
            "grayscale": params.grayscale.float().mean().item(),
        }
        for name, probabilities in expected.items():
            p = probabilities[view]
            tolerance = 4 * (p * (1 - p) / n) ** 0.5 + 1e-9  # 4 standard errors
            assert abs(observed[name] - p) <= tolerance, (view, name, observed[name])
    assert recipe.brightness == 0.4 and recipe.contrast == 0.4 and recipe.saturation == 0.2 and recipe.hue == 0.1


def test_jitter_factors_span_the_paper_ranges():
    params = params_for(20_000, 32, 32)
    on = params.contrast != 1
    assert (params.brightness[~on] == 0).all() and (params.hue[~on] == 0).all()  # no jitter: identity values
    for values, low, high in ((params.brightness[on], -0.4, 0.4), (params.contrast[on], 0.6, 1.4),
                              (params.saturation[on], 0.8, 1.2), (params.hue[on], -0.1, 0.1)):
        assert low <= values.min() < low + 0.01 and high - 0.01 < values.max() <= high


def test_crop_boxes_fit_and_follow_scale_and_ratio():
    params = params_for(5000, 40, 30)
    top, left, h, w = params.crop.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 40).all() and (left + w <= 30).all()
    area = (h * w).float() / (40 * 30)
    assert area.min() >= 0.05 and area.max() <= 1.0  # 0.08 before integer rounding


def reference_jitter(x: torch.Tensor, p: ViewParams, i: int) -> torch.Tensor:
    """Colour jitter of image ``i`` written from the official code's definitions (SPEC): pixel by
    pixel in NumPy and colorsys, each op followed by a clip to [0, 1]."""
    image = x.permute(1, 2, 0).double().numpy().copy()

    def hsv_op(pixels, change):
        out = np.empty_like(pixels)
        for row in range(pixels.shape[0]):
            for col in range(pixels.shape[1]):
                h, s, v = colorsys.rgb_to_hsv(*pixels[row, col])
                out[row, col] = colorsys.hsv_to_rgb(*change(h, s, v))
        return out

    for op in p.jitter_order[i].tolist():
        if op == 0:
            image = image + p.brightness[i].item()
        elif op == 1:
            mean = image.mean(axis=(0, 1), keepdims=True)  # each channel around its own mean
            image = (image - mean) * p.contrast[i].item() + mean
        elif op == 2 and image.shape[2] == 3:
            image = hsv_op(image, lambda h, s, v: (h, min(max(s * p.saturation[i].item(), 0), 1), v))
        elif op == 3 and image.shape[2] == 3:
            image = hsv_op(image, lambda h, s, v: ((h + p.hue[i].item()) % 1.0, s, v))
        image = np.clip(image, 0, 1)
    return torch.from_numpy(image).permute(2, 0, 1).float()


def reference_view(image: torch.Tensor, p: ViewParams, i: int, size: int) -> torch.Tensor:
    """The same view from torchvision's per-image functional ops (crop, flip, grayscale, blur,
    solarize) and the reference jitter, one image at a time."""
    top, left, h, w = p.crop[i].tolist()
    x = TF.resized_crop(image, top, left, h, w, [size, size], InterpolationMode.BICUBIC, antialias=False).clamp(0, 1)
    if p.flip[i]:
        x = TF.horizontal_flip(x)
    if p.contrast[i] != 1:
        x = reference_jitter(x, p, i)
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
    recipe = ViewSpec(blur_prob=0.5, solarize_prob=0.5, grayscale_prob=0.3 if channels == 3 else 0.0)
    params = params_for(n, 40, 40, seed=3, recipe=recipe)
    # Whole-image boxes: at a box edge our sampler reads real neighbouring pixels where
    # torchvision repeats the edge pixel, so border-free boxes compare exactly (below).
    params = dataclasses.replace(params, crop=torch.tensor([[0, 0, 40, 40]] * n))
    batched = apply_view(images, params, size)
    for i in range(n):
        torch.testing.assert_close(batched[i], reference_view(images[i], params, i, size), atol=1e-4, rtol=0)


def test_batched_crop_equals_torchvision_inside_the_box():
    torch.manual_seed(0)
    images = torch.rand(16, 3, 48, 48)
    recipe = ViewSpec(jitter_prob=0, grayscale_prob=0, blur_prob=0, crop_scale=(0.3, 1.0))
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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_augment_runs_on_the_batch_device_and_matches_cpu():
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    params = params_for(32, 32, 32, seed=2)
    cuda_params = ViewParams(**{k: v.cuda() if torch.is_tensor(v) else v for k, v in vars(params).items()})
    on_gpu = apply_view(images.cuda(), cuda_params, 32)
    assert on_gpu.is_cuda
    torch.testing.assert_close(on_gpu.cpu(), apply_view(images, params, 32), atol=1e-4, rtol=0)
    generator = torch.Generator(device="cuda").manual_seed(0)
    assert augment(images.cuda(), ViewSpec(), 32, torch.zeros(3, device="cuda"), torch.ones(3, device="cuda"),
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


def test_colour_jitter_follows_the_official_definitions_image_by_image():
    torch.manual_seed(1)
    images = torch.rand(32, 3, 12, 12)
    recipe = ViewSpec(jitter_prob=1.0, brightness=0.4, contrast=0.4, saturation=0.6, hue=0.3)
    params = params_for(32, 12, 12, seed=4, recipe=recipe)
    assert len({tuple(order) for order in params.jitter_order.tolist()}) > 12  # orders drawn per image
    jittered = jitter(images.clone(), params)
    for i in range(32):
        torch.testing.assert_close(jittered[i], reference_jitter(images[i], params, i), atol=1e-5, rtol=0)
    # by index (a CPU's eager path) or masked (GPU and compiled): the same numbers
    assert torch.equal(jitter(images.clone(), params, masked=True), jittered)
    # additive brightness: a gray image moves by delta, unlike torchvision's multiplicative factor
    gray = torch.full((1, 1, 4, 4), 0.5)
    one = dataclasses.replace(params_for(1, 4, 4, recipe=ViewSpec(jitter_prob=1.0)),
                              jitter_order=torch.tensor([[0, 1, 2, 3]]), brightness=torch.tensor([0.25]),
                              contrast=torch.tensor([1.0]))
    assert torch.allclose(jitter(gray, one), torch.full_like(gray, 0.75))


def test_rotation_and_vertical_flip_turn_the_image():
    image = torch.rand(1, 3, 16, 16)
    base = dataclasses.replace(params_for(1, 16, 16), crop=torch.tensor([[0, 0, 16, 16]]))
    quarter = resized_crop(image, base.crop, torch.tensor([False]), 16, torch.tensor([False]), torch.tensor([math.pi / 2]))
    assert torch.allclose(quarter, torch.rot90(image, k=1, dims=(2, 3)), atol=1e-5)  # +90°: a quarter turn
    upside_down = resized_crop(image, base.crop, torch.tensor([False]), 16, torch.tensor([True]), torch.tensor([0.0]))
    assert torch.allclose(upside_down, image.flip(2), atol=1e-5)
    fundus = byol_views(augmentations="fundus")[0]
    params = params_for(4000, 16, 16, recipe=fundus)
    assert params.angle.abs().max() > 3.0 and abs(params.vflip.float().mean() - 0.5) < 0.05
    assert fundus.grayscale_prob == 0 and fundus.brightness < 0.4 and fundus.hue < 0.1


def test_crops_stay_inside_each_images_own_size():
    heights, widths = torch.tensor([20, 40, 10, 40]), torch.tensor([40, 20, 10, 40])
    params = sample_view_params(ViewSpec(), 2000, heights.repeat(500), widths.repeat(500), torch.Generator().manual_seed(0))
    top, left, h, w = params.crop.unbind(1)
    assert (top + h <= heights.repeat(500)).all() and (left + w <= widths.repeat(500)).all()
    assert (left + w == widths.repeat(500)).any() and (top + h == heights.repeat(500)).any()  # edges are reachable


def test_a_marker_near_a_short_edge_is_decoded_and_reaches_training_crops(tmp_path):
    from PIL import Image

    from byol.data import load_dataset

    pixels = np.full((60, 150, 3), 90, np.uint8)  # wide: its short edges are the left and right ones
    pixels[25:35, 2:10] = (255, 0, 0)  # a red marker 2 px from the left edge
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    Image.fromarray(np.full((60, 150, 3), 90, np.uint8)).save(tmp_path / "plain.png")
    train = load_dataset(tmp_path).prepared(32).train
    wide = train.images[train.names.index("wide.png")].float()
    red = (wide[0] > 200) & (wide[1] < 60)
    assert red.any() and red.nonzero()[:, 1].min() < 6  # decoding kept the whole width: the marker is there
    images = wide[None].expand(400, -1, -1, -1).to(torch.uint8)
    sizes = train.sizes[[train.names.index("wide.png")]].expand(400, -1) if train.sizes is not None else None
    views = augment(images, ViewSpec(jitter_prob=0, grayscale_prob=0, blur_prob=0), 32, torch.zeros(3),
                    torch.ones(3), torch.Generator().manual_seed(0), sizes)
    seen = ((views[:, 0] > 0.8) & (views[:, 1] < 0.3)).flatten(1).any(dim=1)
    assert 0 < seen.float().mean() < 1  # some crops show it, others come from elsewhere in the picture


def test_evaluation_view_is_the_centred_square_with_the_papers_ratio():
    images = torch.arange(2 * 64 * 96, dtype=torch.float32).reshape(2, 1, 64, 96) / (2 * 64 * 96)
    view = eval_view(images, 56, EVAL_CROP)  # side 0.875 x 64 = 56: a pure crop, no resampling
    assert torch.equal(view, images[:, :, 4:60, 20:76])
    sizes = torch.tensor([[64, 96], [40, 40]])  # the second image fills only 40 x 40 of the canvas
    per_image = eval_view(images, 35, EVAL_CROP, sizes)
    assert per_image.shape == (2, 1, 35, 35)
    assert torch.equal(per_image[1], images[1, :, 2:37, 2:37])  # 0.875 x 40 = 35, centred in the 40 x 40


def test_sixteen_bit_levels_below_the_8_bit_step_survive_to_the_views():
    levels = np.full((2, 1, 8, 8), 30000, dtype=np.uint16)
    levels[1] += 100  # 100 / 65535 of the range: less than one 8-bit level (257)
    images = torch.from_numpy(levels)
    recipe = ViewSpec(jitter_prob=0, grayscale_prob=0, blur_prob=0, flip_prob=0, crop_scale=(1, 1), crop_ratio=(1, 1))
    views = augment(images, recipe, 8, torch.tensor([0.45]), torch.tensor([0.01]), torch.Generator().manual_seed(0))
    assert (views[1] - views[0]).mean().item() == pytest.approx(100 / 65535 / 0.01, rel=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("channels", [3, 1])
def test_compiled_view_application_agrees_with_eager(channels):
    from byol.views.apply import ViewApplier

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, channels, 40, 36), dtype=torch.uint8, generator=generator)
    mean, std = torch.full((channels,), 0.4), torch.full((channels,), 0.2)
    recipe = dataclasses.replace(ViewSpec(), vflip_prob=0.5, rotation=90.0, solarize_prob=0.5, blur_prob=0.5)
    compiled = ViewApplier(compiled=True)
    for _ in range(2):  # fresh draws: the second call reuses the first call's graphs
        params = sample_view_params(recipe, 16, 40, 36, generator)
        eager = apply_view(images, params, 24, mean, std)
        assert not torch.allclose(eager, apply_view(images, params, 24), atol=0.1)  # normalised
        torch.testing.assert_close(compiled(images, params, 24, mean, std), eager, rtol=0, atol=1e-4)
