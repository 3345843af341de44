"""``byol export``: an encoder in the format another library loads in one line.

    torchvision   a state dict for the stock torchvision constructor, its classifier an Identity
    timm          a checkpoint for timm.create_model(NAME, checkpoint_path=FILE, num_classes=0)
    onnx          an ONNX graph, images → features, any batch size (onnxruntime, TensorRT, ...)
    torchscript   torch.jit.load(FILE)(images) → features, no byol needed

Every format takes images normalised as in pre-training (the mean and std are printed and
kept in the encoder file) and returns the pooled features.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..models.backbones import load_encoder, torchvision_names
from ..base.errors import UserError, first_line, setting
from ..settings.mechanism import Settings, option, require
from ..models.weights import weights_path

FORMATS = ("torchvision", "timm", "onnx", "torchscript")


@dataclass
class ExportConfig(Settings):
    """Settings of ``byol export``."""

    source: str = option("", "a run directory (or byol:RUN_DIR) or an encoder.safetensors written by byol",
                         positional=True, metavar="RUN_OR_WEIGHTS")
    format: str = option("torchscript", "torchvision (stock constructor), timm (timm.create_model), onnx or "
                         "torchscript", choices=FORMATS)
    out: str | None = option(None, "the file to write (.pth / .safetensors for torchvision and timm, .onnx, .pt)")
    batch_size: int = option(2, "the example batch the graph is traced with (onnx, torchscript); any batch size "
                             "runs afterwards")

    def check(self) -> None:
        require(self.batch_size >= 1, "batch_size", f"must be at least 1, got {self.batch_size}")


def attribute_path(module_name: str) -> str:
    """'classifier.1' → 'classifier[1]': how Python code reaches a submodule."""
    return re.sub(r"\.(\d+)", r"[\1]", module_name)


def _refuse(config: ExportConfig, why: str, instead: str) -> None:
    raise UserError(f"{setting('format')} {config.format}: {why}; {instead}")


def _torchvision(encoder: nn.Module, config: ExportConfig, out: Path) -> str:
    built = encoder.encoder_config
    if built["name"] not in torchvision_names():
        _refuse(config, f"{built['name']} is not a torchvision model", "use torchscript or onnx")
    if built["small_stem"] or built["in_channels"] != 3:
        _refuse(config, f"this {built['name']} has a {built['in_channels']}-channel "
                f"{'3x3 small' if built['small_stem'] else 'first'} stem, not the stock one",
                "use torchscript or onnx, or byol.load_encoder")
    torch.save({k: v.detach().cpu() for k, v in encoder.state_dict().items()}, out)
    return (f"model = torchvision.models.{built['name']}(); model.{attribute_path(built['classifier'])} = "
            f"torch.nn.Identity(); model.load_state_dict(torch.load('{out}'))")


def _timm(encoder: nn.Module, config: ExportConfig, out: Path) -> str:
    from ..models.backbones import timm_options

    built = encoder.encoder_config
    if not built["name"].startswith("timm:"):
        _refuse(config, f"{built['name']} is not a timm model", "use torchvision, torchscript or onnx")
    if built["small_stem"]:
        _refuse(config, f"this {built['name']} has byol's 3x3 small stem, which timm does not build",
                "use torchscript or onnx, or byol.load_encoder")
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(out))
    else:
        torch.save(state, out)
    options = {k: v for k, v in timm_options(built["name"], built["in_channels"], built["image_size"]).items()
               if not (k == "in_chans" and v == 3)}
    arguments = ", ".join(f"{k}={v!r}" for k, v in options.items())
    return f"model = timm.create_model('{built['name'][5:]}', checkpoint_path='{out}', {arguments})"


def _example(encoder: nn.Module, config: ExportConfig) -> torch.Tensor:
    built = encoder.encoder_config
    return torch.randn(config.batch_size, built["in_channels"], built["image_size"], built["image_size"])


def _onnx(encoder: nn.Module, config: ExportConfig, out: Path) -> str:
    try:
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise UserError(f"{setting('format')} onnx needs onnx and onnxscript: pip install 'byol[export]'") from None
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        torch.onnx.export(encoder, (_example(encoder, config),), str(out), dynamo=True, input_names=["images"],
                          output_names=["features"], dynamic_shapes=({0: batch},), verbose=False)
    except Exception as error:  # an operator the exporter cannot express
        raise UserError(f"{setting('format')} onnx: this encoder does not export ({first_line(error)[:160]}); use "
                        "torchscript") from None
    return f"session = onnxruntime.InferenceSession('{out}'); session.run(None, {{'images': images}})[0]"


def _torchscript(encoder: nn.Module, config: ExportConfig, out: Path) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # PyTorch marks TorchScript deprecated; it still loads
            traced = torch.jit.trace(encoder, _example(encoder, config))
    except Exception as error:
        raise UserError(f"{setting('format')} torchscript: this encoder does not trace ({first_line(error)[:160]}); "
                        "use onnx") from None
    traced.save(str(out))
    return f"model = torch.jit.load('{out}'); features = model(images)"


def export(source: str | None = None, *, config_file: str | None = None, **settings) -> Path:
    """Write the encoder of ``source`` (a run directory or byol encoder file) in ``format`` to
    ``out``; prints the line that loads it and the normalisation its inputs need."""
    config = ExportConfig.create(config_file, **({"source": source} if source else {}), **settings)
    require(bool(config.out), "out", "is required: the file to write")
    path = weights_path(config.source)
    if not path.is_file():
        raise UserError(f"{config.source}: no encoder file at {path}; give a run directory or its encoder.safetensors")
    try:
        encoder = load_encoder(path).eval()
    except Exception as error:
        raise UserError(f"{path}: not an encoder written by byol ({first_line(error)[:120]})") from None
    out = Path(config.out)
    if not out.parent.is_dir():
        raise UserError(f"{setting('out')} {out}: no folder {out.parent}; create it first")
    writer = {"torchvision": _torchvision, "timm": _timm, "onnx": _onnx, "torchscript": _torchscript}[config.format]
    temporary = out.with_name(f".{out.name}.tmp{out.suffix}")
    try:
        usage = writer(encoder, config, temporary)
        temporary.replace(out)
    finally:
        temporary.unlink(missing_ok=True)
    usage = usage.replace(str(temporary), str(out))
    print(f"byol: wrote {out}\n  load: {usage}")
    if getattr(encoder, "normalisation", None):
        mean, std = encoder.normalisation
        print(f"  inputs: images in [0, 1], normalised with mean {mean} and std {std} per channel")
    return out
