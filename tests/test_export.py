"""Every export format loads the way its library's users load it, and gives the encoder's features."""
import numpy as np
import pytest
import torch
import torchvision  # noqa: F401  (the printed one-liners use it)

from byol import create_encoder, save_encoder
from byol.commands.cli import main


def saved(tmp_path, name, channels, size, small_stem=None):
    torch.manual_seed(0)
    encoder = create_encoder(name, channels, small_stem, size).eval()
    save_encoder(encoder, tmp_path / f"{name.replace(':', '-')}.safetensors", normalisation=([0.5] * channels, [0.25] * channels))
    return encoder, tmp_path / f"{name.replace(':', '-')}.safetensors"


def export(capsys, source, fmt, out):
    assert main(["export", str(source), "--format", fmt, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "normalised with mean [0.5" in printed
    return next(line for line in printed.splitlines() if "load:" in line).split("load: ", 1)[1]


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_torchvision_file_loads_into_the_stock_constructor(tmp_path, capsys, name):
    encoder, source = saved(tmp_path, name, 3, 96, small_stem=False)
    usage = export(capsys, source, "torchvision", tmp_path / "tv.pth")
    namespace = {"torch": torch, "torchvision": torchvision}
    exec(usage, namespace)  # e.g. model = torchvision.models.resnet18(); model.fc = Identity(); load_state_dict(...)
    images = torch.randn(2, 3, 96, 96)
    assert torch.allclose(namespace["model"].eval()(images), encoder(images), atol=1e-5)


@pytest.mark.parametrize("name, channels, size", [("timm:convnext_atto", 3, 64), ("timm:vit_tiny_patch16_224", 1, 28)])
def test_timm_file_loads_with_create_model_and_checkpoint_path(tmp_path, capsys, name, channels, size):
    import timm

    encoder, source = saved(tmp_path, name, channels, size)
    usage = export(capsys, source, "timm", tmp_path / "timm.safetensors")
    assert usage.startswith(f"model = timm.create_model('{name[5:]}', checkpoint_path=") and "num_classes=0" in usage
    namespace = {"timm": timm}
    exec(usage, namespace)
    images = torch.randn(2, channels, size, size)
    assert torch.allclose(namespace["model"].eval()(images), encoder(images), atol=1e-5)


@pytest.mark.slow
def test_onnx_file_runs_in_onnxruntime_with_any_batch_size(tmp_path, capsys):
    import onnxruntime

    encoder, source = saved(tmp_path, "resnet18", 1, 32)
    export(capsys, source, "onnx", tmp_path / "encoder.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "encoder.onnx"))
    for batch in (1, 5):
        images = torch.randn(batch, 1, 32, 32)
        features = session.run(None, {"images": images.numpy()})[0]
        reference = encoder(images).detach().numpy()
        assert features.shape == (batch, 512)
        np.testing.assert_allclose(features, reference, atol=1e-4 * np.abs(reference).max(), rtol=0)


def test_torchscript_file_loads_with_jit_load(tmp_path, capsys):
    encoder, source = saved(tmp_path, "narrow_resnet", 1, 28)
    usage = export(capsys, source, "torchscript", tmp_path / "encoder.pt")
    namespace = {"torch": torch, "images": torch.randn(3, 1, 28, 28)}
    exec(usage, namespace)
    assert torch.allclose(namespace["features"], encoder(namespace["images"]), atol=1e-5)


@pytest.mark.parametrize("name, fmt, fragment", [
    ("narrow_resnet", "torchvision", "narrow_resnet is not a torchvision model"),
    ("resnet18", "timm", "resnet18 is not a timm model"),
])
def test_a_format_the_architecture_cannot_do_is_one_line_and_writes_nothing(tmp_path, capsys, name, fmt, fragment):
    _, source = saved(tmp_path, name, 1, 28)
    assert main(["export", str(source), "--format", fmt, "--out", str(tmp_path / "out.pth")]) == 2
    error = capsys.readouterr().err.strip()
    assert fragment in error and "use " in error and len(error.splitlines()) == 1
    assert not (tmp_path / "out.pth").exists() and not list(tmp_path.glob(".out*"))


def test_a_changed_stem_is_not_the_stock_model(tmp_path, capsys):
    _, source = saved(tmp_path, "resnet18", 1, 28)  # 1 channel, 3x3 small stem
    assert main(["export", str(source), "--format", "torchvision", "--out", str(tmp_path / "x.pth")]) == 2
    assert "not the stock one" in capsys.readouterr().err and not (tmp_path / "x.pth").exists()
