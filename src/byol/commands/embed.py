"""``byol embed`` and ``byol.embed``: an encoder's features of every image, for use elsewhere."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import as_splits
from ..base.device import resolve_device
from ..evaluation.frozen import extract_features
from ..settings.mechanism import option, require
from ..settings.options import DataOptions, DeviceOption
from ..settings.recipes import data_facts, default_arch, default_image_size
from ..models.weights import encoder_config_of, load_weights


@dataclass
class EmbedConfig(DeviceOption, DataOptions):
    """Settings of ``byol embed``."""

    init: str = option("random", "the encoder: byol:RUN_DIR, a run directory, a weights file, or random")
    out: str | None = option(None, "features file FILE.npy (the image list FILE.csv is written beside it)",
                             required_flag=True)
    arch: str | None = option(None, "encoder for random init or a .pth state dict (byol weights carry their own); "
                              "default: the recipe's for this data and device")
    image_size: int | None = option(None, "side the images are resized to; default: the dataset's")
    seed: int = option(0, "seed of a random init")

    def check(self) -> None:
        super().check()
        require(self.out is None or self.out.endswith(".npy"), "out",
                f"{self.out}: give a .npy path (the image list is written beside it as .csv)")


def embed(init="random", data=None, *, config_file: str | None = None,
          **settings) -> tuple[torch.Tensor, list[tuple[str, str, object]]]:
    """Features (N, D) of every image of ``data`` — its train split, then its test split — and
    one (split, image, label) per row.  ``init``: an init name (``byol embed --init``), an
    ``nn.Module``, or what ``byol.pretrain`` returned.  With ``out``, also written as ``out``
    (.npy, float32) and ``out`` with .csv (row, split, image, label)."""
    config = EmbedConfig.create(config_file, **({"init": init} if isinstance(init, str) else {}), **settings)
    device = resolve_device(config.device)
    dataset = as_splits(data if data is not None else config.data, **config.read_options())
    spec = init if not isinstance(init, str) else config.init
    built = encoder_config_of(spec)
    facts = data_facts(dataset, device.type)
    image_size = config.image_size or built.get("image_size") or default_image_size(facts)
    arch = config.arch or default_arch(facts, image_size)[0]
    dataset = dataset.prepared(image_size)
    splits = [("train", dataset.train)] + ([("test", dataset.test)] if dataset.test is not None else [])
    torch.manual_seed(config.seed)
    model = load_weights(getattr(spec, "encoder", spec), arch, dataset.train.channels, image_size).to(device)
    model = model.to(memory_format=torch.channels_last)
    known = getattr(model, "normalisation", None)  # what the encoder was trained with, else the data's
    mean, std = (torch.tensor(known[0]), torch.tensor(known[1])) if known else dataset.channel_stats()
    features, rows = [], []
    for split, images in splits:
        features.append(extract_features(model, images, mean, std, image_size, device=device).cpu())
        names = images.names or [f"{split}/{i}" for i in range(len(images))]
        labels = images.labels.tolist() if images.labels is not None else [""] * len(images)
        rows += [(split, name, label) for name, label in zip(names, labels)]
    features = torch.cat(features)
    if config.out:
        _write(Path(config.out), features, rows)
    return features, rows


def _write(path: Path, features: torch.Tensor, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, features.numpy())
    with path.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "split", "image", "label"])
        writer.writerows((i, *row) for i, row in enumerate(rows))
    print(f"byol: {len(rows)} x {features.shape[1]} features in {path}, image list in {path.with_suffix('.csv')}")
