"""``byol views``: a grid PNG of images next to their two augmented views, so a user sees what
the encoder is asked to be invariant to before spending hours on it.

One row per image: the image as the evaluation sees it, then ``views`` pairs of (view 1,
view 2) drawn with the run's — or the recipe's — augmentations, un-normalised for display.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..base.errors import UserError, setting
from ..base.rundir import RunDir
from ..data import as_splits
from ..settings.mechanism import option, require
from ..settings.options import DataOptions
from ..settings.pretrain import PretrainConfig
from ..settings.recipes import data_facts, resolve
from ..views.apply import augment
from ..views.ops import eval_view
from ..views.spec import AUGMENTATION_SETS, byol_views

GAP = 4  # pixels between the cells


@dataclass
class ViewsConfig(DataOptions):
    """Settings of ``byol views``."""

    out: str = option("views.png", "the PNG to write")
    run: str | None = option(None, "a run directory: its settings (image size, augmentations, blur, crops); "
                         "default: what byol pretrain would derive for this data, with the flags below")
    rows: int = option(8, "images of the dataset (spread over it), one per row")
    pairs: int = option(2, "(view 1, view 2) pairs per image")
    augmentations: str | None = option(None, "an augmentation set to look at instead", choices=AUGMENTATION_SETS)
    image_size: int | None = option(None, "the views' side; default: as pre-training would")
    crop_min_scale: float | None = option(None, "the random crops' smallest share of the image, to look at "
                                          "instead; default: as pre-training would")
    scale: int = option(2, "each cell is drawn this many times larger")
    seed: int = option(0, "seed of the drawn views")

    def check(self) -> None:
        super().check()
        for name in ("rows", "pairs", "scale"):
            require(getattr(self, name) >= 1, name, f"must be at least 1, got {getattr(self, name)}")
        require(self.out.lower().endswith(".png"), "out", f"{self.out}: give a .png path")
        require(self.crop_min_scale is None or 0 < self.crop_min_scale <= 1, "crop_min_scale",
                f"must be in (0, 1], got {self.crop_min_scale}")


def _settings(config: ViewsConfig, dataset) -> PretrainConfig:
    """The pre-training settings whose views are shown: the run's, or the recipe's for this data."""
    if config.run:
        run = RunDir(config.run)
        if not run.config.is_file():
            raise UserError(f"{setting('run')} {config.run}: no config.yaml there; give a byol pretrain run directory")
        pretrain = PretrainConfig.create(**{k: v for k, v in run.load_config().items() if k in PretrainConfig.names()})
    else:
        pretrain = PretrainConfig()
    pretrain = pretrain.replace(**{k: getattr(config, k) for k in ("augmentations", "image_size", "crop_min_scale")
                                   if getattr(config, k) is not None})
    return resolve(pretrain, data_facts(dataset, "cpu"))[0]


def draw_views(data=None, *, config_file: str | None = None, **settings) -> Path:
    """Write the grid (see the module docstring); returns its path."""
    config = ViewsConfig.create(config_file, **settings)
    dataset = as_splits(data if data is not None else config.data, **config.read_options())
    pretrain = _settings(config, dataset)
    size = pretrain.image_size
    dataset = dataset.prepared(size)
    count = min(config.rows, len(dataset.train))
    index = torch.linspace(0, len(dataset.train) - 1, count).long()
    batch = next(dataset.train.subset(index).batches(torch.arange(count), count, "cpu"))
    zeros, ones = torch.zeros(batch.images.shape[1]), torch.ones(batch.images.shape[1])
    generator = torch.Generator().manual_seed(config.seed)
    recipes = byol_views(pretrain.blur, (pretrain.crop_min_scale, 1.0), pretrain.augmentations, size)
    columns = [eval_view(batch.images, size, sizes=batch.sizes)]
    for _ in range(config.pairs):
        columns += [augment(batch.images, recipe, size, zeros, ones, generator, batch.sizes) for recipe in recipes]
    grid = layout(columns, config.scale)
    out = Path(config.out)
    if not out.parent.is_dir():
        raise UserError(f"{setting('out')} {out}: no folder {out.parent}; create it first")
    grid.save(out)
    print(f"byol: wrote {out}: {count} images (rows), each as evaluation sees it, then {config.pairs} pairs of views "
          f"({pretrain.augmentations} augmentations, {size} px, blur {'on' if pretrain.blur else 'off'}, crops from "
          f"{pretrain.crop_min_scale:g} of the image)")
    return out


def layout(columns: list[torch.Tensor], scale: int) -> Image.Image:
    """Columns of (N, C, S, S) images in [0, 1] as one picture: rows are images; gray for one
    channel, RGB for three, the first three bands otherwise."""
    count, channels, size = columns[0].shape[0], columns[0].shape[1], columns[0].shape[-1]
    cell = size * scale
    canvas = np.full((count * (cell + GAP) - GAP, len(columns) * (cell + GAP) - GAP, 3), 255, np.uint8)
    for c, column in enumerate(columns):
        pixels = column.clamp(0, 1)
        pixels = pixels.expand(-1, 3, -1, -1) if channels == 1 else pixels[:, :3]
        pixels = pixels.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
        for r in range(count):
            top, left = r * (cell + GAP), c * (cell + GAP)
            canvas[top:top + cell, left:left + cell] = (pixels[r].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(canvas)
