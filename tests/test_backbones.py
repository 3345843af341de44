import pytest
import torch
import torchvision
from torch import nn

from byol import create_encoder, load_encoder, save_encoder
from byol.models.backbones import adapt_first_conv, as_encoder, feature_width, patch_size_for
from byol.base.errors import UserError


def test_small_stem_is_automatic_for_small_images():
    small = create_encoder("resnet18", image_size=32)
    large = create_encoder("resnet18", image_size=224)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1) and isinstance(small.maxpool, nn.Identity)
    assert large.conv1.kernel_size == (7, 7) and isinstance(large.maxpool, nn.MaxPool2d)
    assert create_encoder("resnet18", image_size=224, small_stem=True).conv1.kernel_size == (3, 3)
    with pytest.raises(UserError, match="no ResNet-style stem"):
        create_encoder("efficientnet_b0", image_size=32, small_stem=True)


@pytest.mark.parametrize("name, channels, size, width", [
    ("resnet18", 1, 32, 512), ("resnet50", 3, 32, 2048), ("narrow_resnet", 1, 28, 256),
    ("efficientnet_b0", 1, 32, 1280), ("mobilenet_v3_small", 3, 32, 1024), ("regnet_x_400mf", 4, 32, 400),
    ("timm:convnext_atto", 1, 32, 320), ("timm:vit_tiny_patch16_224", 1, 28, 192), ("timm:resnet18", 4, 28, 512),
])
def test_any_torchvision_or_timm_model_is_an_encoder_of_feature_vectors(name, channels, size, width):
    encoder = create_encoder(name, in_channels=channels, image_size=size).eval()
    assert encoder.num_features == width
    assert encoder(torch.zeros(2, channels, size, size)).shape == (2, width)


def test_vits_get_patches_that_divide_the_image():
    assert [patch_size_for(s) for s in (28, 32, 64, 96, 224)] == [4, 4, 8, 12, 16]
    vit = create_encoder("timm:vit_tiny_patch16_224", 3, None, 28)
    assert vit.patch_embed.patch_size == (4, 4) and vit.patch_embed.grid_size == (7, 7)


def test_feature_width_is_found_without_touching_batchnorm_statistics():
    body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())  # returns feature maps
    body[1].running_mean.fill_(0.5)
    before = {k: v.clone() for k, v in body.state_dict().items()}
    encoder = as_encoder(body, 3, 16)
    after = body.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and body.training  # untouched, still training
    assert encoder.num_features == 8 and encoder(torch.randn(4, 3, 16, 16)).shape == (4, 8)
    assert feature_width(create_encoder("resnet18", 3, None, 32), 3, 32) == 512


def test_unknown_names_and_sizes_a_model_cannot_take_are_one_line_errors():
    with pytest.raises(UserError, match="'resnet999' is not known.*timm:NAME"):
        create_encoder("resnet999")
    with pytest.raises(UserError, match="timm has no such model"):
        create_encoder("timm:no_such_net")
    with pytest.raises(UserError, match="cannot take 28 px images.*image_size"):
        create_encoder("timm:convnext_atto", 1, None, 28)  # four stride-2 stages eat 28 px


def test_timm_names_without_timm_say_how_to_install_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_timm(name, *args, **kwargs):
        if name == "timm":
            raise ImportError("No module named 'timm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    with pytest.raises(UserError, match=r"timm is not installed; pip install 'byol\[timm\]'"):
        create_encoder("timm:resnet18")


def test_first_convolution_adapts_rgb_filters_to_any_channel_count():
    weight = torch.randn(8, 3, 5, 5)
    gray = adapt_first_conv(weight, 1)
    assert torch.allclose(gray, weight.sum(dim=1, keepdim=True))
    four = adapt_first_conv(weight, 4)
    assert four.shape == (8, 4, 5, 5) and torch.allclose(four[:, 2], weight.sum(dim=1) / 4)
    image = torch.rand(1, 1, 9, 9)  # the same image in every channel: the same activation as gray through RGB
    rgb_out = nn.functional.conv2d(image.expand(1, 3, 9, 9), weight)
    assert torch.allclose(nn.functional.conv2d(image.expand(1, 4, 9, 9), four), rgb_out, atol=1e-5)


def test_saved_encoder_loads_into_torchvision_resnet_and_remembers_its_normalisation(tmp_path):
    encoder = create_encoder("resnet18", in_channels=1, image_size=28)
    save_encoder(encoder, tmp_path / "encoder.safetensors", normalisation=([0.3], [0.2]))
    from safetensors.torch import load_file

    reference = torchvision.models.resnet18()
    reference.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    reference.maxpool = nn.Identity()
    reference.fc = nn.Identity()
    reference.load_state_dict(load_file(str(tmp_path / "encoder.safetensors")), strict=True)

    restored = load_encoder(tmp_path / "encoder.safetensors").eval()
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(restored(x), encoder.eval()(x))
    assert torch.equal(reference.eval()(x), restored(x))
    assert restored.normalisation == ([0.3], [0.2])


def test_imagenet_style_weights_load_for_any_architecture_and_channel_count(tmp_path):
    from byol.models.weights import load_weights

    reference = torchvision.models.efficientnet_b0()
    torch.save(reference.state_dict(), tmp_path / "efficientnet.pth")
    encoder = load_weights(str(tmp_path / "efficientnet.pth"), "efficientnet_b0", 4, 64)
    assert torch.equal(encoder.features[0][0].weight, adapt_first_conv(reference.features[0][0].weight, 4))
    assert torch.equal(encoder.features[3][0].block[0][0].weight, reference.features[3][0].block[0][0].weight)
    import timm

    model = timm.create_model("vit_tiny_patch16_224", num_classes=10)  # a timm checkpoint, with its head
    torch.save(model.state_dict(), tmp_path / "vit.pth")
    vit = load_weights(str(tmp_path / "vit.pth"), "timm:vit_tiny_patch16_224", 1, 32)
    assert torch.equal(vit.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)
    assert vit.patch_embed.proj.weight.shape == (192, 1, 4, 4)  # timm resampled the 16 px patches to 4 px
    with pytest.raises(UserError, match="does not fit arch resnet18"):
        load_weights(str(tmp_path / "efficientnet.pth"), "resnet18", 3, 64)
