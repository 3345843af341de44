import torch
import torchvision
from torch import nn

from byol import create_encoder, load_encoder, save_encoder


def test_small_stem_is_automatic_for_small_images():
    small = create_encoder("resnet18", image_size=32)
    large = create_encoder("resnet18", image_size=224)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1) and isinstance(small.maxpool, nn.Identity)
    assert large.conv1.kernel_size == (7, 7) and isinstance(large.maxpool, nn.MaxPool2d)
    assert create_encoder("resnet18", image_size=224, small_stem=True).conv1.kernel_size == (3, 3)


def test_encoders_output_feature_vectors():
    for name, width in (("resnet18", 512), ("resnet34", 512), ("resnet50", 2048), ("narrow_resnet", 256)):
        encoder = create_encoder(name, in_channels=1, image_size=32).eval()
        assert encoder.num_features == width
        assert encoder(torch.zeros(2, 1, 32, 32)).shape == (2, width)


def test_saved_encoder_loads_into_torchvision_resnet(tmp_path):
    encoder = create_encoder("resnet18", in_channels=1, image_size=28)
    save_encoder(encoder, tmp_path / "encoder.safetensors")
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
