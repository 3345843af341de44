"""Image files as a dataset: their headers read first (size, channels, bit depth), then decoded
for views of a given size — into memory when they fit the memory rule, else batch by batch.

Each image keeps its aspect ratio.  Its shorter side is decoded at up to twice the view
size (the random resized crop then draws from the whole picture, at a resolution the view
can use), and it sits at the top-left of a canvas as large as the largest image, the rest
filled by repeating its edges; ``Batch.sizes`` says where each image ends.

DataLoader workers return numpy arrays, which travel through a pipe: collecting tens of
thousands of images opens no file descriptor per image (shared-memory tensors would, and
run into ``ulimit -n``).
"""
from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..base.errors import setting, warn
from .base import Batch, DataError, ImageSet, loader_workers
from .decode import READ_ERRORS, DecodeSettings, FileFacts, decode, decoded_shape, read_facts
from .gpu_jpeg import gpu_batches

# The memory rule: decode into memory when the images take at most this share of the RAM
# available, else stream.  A quarter leaves room for the model, the optimizer, evaluation
# features and the rest of the machine.
MEMORY_FRACTION = 0.25
EVAL_RESIZE = 256 / 224  # the paper's evaluation: resize to 256, centre crop 224


def available_memory() -> int:
    """Bytes of RAM available now (Linux MemAvailable; total free pages elsewhere)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def stored_shape(facts: FileFacts, short_side: int) -> tuple[int, int]:
    """(height, width) of an image decoded with its shorter side at ``short_side``."""
    return decoded_shape(facts.height, facts.width, short_side)


def report_unreadable(bad: list[str], strict: bool) -> None:
    if not bad:
        return
    listing = "; ".join(bad[:3]) + ("; ..." if len(bad) > 3 else "")
    if strict:
        raise DataError(f"{len(bad)} unreadable image files: {listing} (remove them, or drop {setting('strict')} "
                        "to skip them)")
    warn(f"skipped {len(bad)} unreadable image files: {listing}")


def scan(paths: list[Path]) -> tuple[list[int], list[FileFacts], list[str]]:
    """The files that are readable images (their indices), their headers' facts, and the others."""
    kept, facts, bad = [], [], []
    for index, path in enumerate(paths):
        try:
            found = read_facts(path)
        except ImportError as error:
            raise DataError(f"{path}: {error}") from None
        if found is None:
            bad.append(f"{path} (not a readable image)")
        else:
            kept.append(index)
            facts.append(found)
    if not kept:
        listing = "; ".join(bad[:3]) + ("; ..." if len(bad) > 3 else "")
        raise DataError(f"no readable images among the {len(paths)} files found: {listing}")
    return kept, facts, bad


def dataset_channels(facts: list[FileFacts], where: str) -> int:
    """1 when every image is gray, 3 when some are colour, N for N-band images (all alike)."""
    bands = {f.channels for f in facts if f.channels not in (1, 3)}
    if len(bands) > 1 or (bands and any(f.channels == 3 for f in facts)):
        raise DataError(f"{where}: images with {sorted({f.channels for f in facts})} channels mixed; give images "
                        "with one channel count (gray may mix with colour or with one band count)")
    return bands.pop() if bands else (3 if any(f.channels == 3 for f in facts) else 1)


@dataclass
class FileImages(torch.utils.data.Dataset):
    """Image files with their headers' facts; ``decode`` settings once ``prepared``."""

    paths: list[Path]
    facts: list[FileFacts]
    channels: int
    bits: int
    window: tuple[float, float] | None = None  # DICOM window (centre, width), when given
    short_side: int | None = None              # decoded shorter side, once prepared
    canvas: tuple[int, int] | None = None      # (height, width) every batch is padded to
    unreadable: tuple[str, ...] = ()           # files left out when their headers were read

    def __len__(self) -> int:
        return len(self.paths)

    def shapes(self) -> list[tuple[int, int]]:
        return [(f.height, f.width) for f in self.facts]

    def subset(self, index: list[int]) -> "FileImages":
        return FileImages([self.paths[i] for i in index], [self.facts[i] for i in index], self.channels, self.bits,
                          self.window, self.short_side, self.canvas)  # the unreadable files were told of once

    def settings(self) -> DecodeSettings:
        return DecodeSettings(self.channels, self.bits, self.short_side, self.window)

    def __getitem__(self, index: int):
        """(array (canvas_h, canvas_w, C), (h, w)), or (None, error text) for an unreadable file."""
        try:
            array = decode(self.paths[index], self.settings())
        except READ_ERRORS as error:
            return None, f"{self.paths[index]} ({type(error).__name__}: {error})"
        height, width = array.shape[:2]
        canvas_h, canvas_w = self.canvas
        padded = np.pad(array[:canvas_h, :canvas_w], ((0, canvas_h - min(height, canvas_h)),
                                                      (0, canvas_w - min(width, canvas_w)), (0, 0)), mode="edge")
        return padded, (min(height, canvas_h), min(width, canvas_w))

    def prepared(self, image_size: int, stream: bool | None, budget: int | None,
                 strict: bool) -> tuple[ImageSet, list[int] | None]:
        """Decoded for views of ``image_size``: the shorter side at up to twice that (but never
        above the files' own median), smaller where only that fits the memory rule; into memory
        unless ``stream`` or the rule says otherwise.  Returns the images and which of the files
        they are (None: all of them)."""
        native = int(statistics.median(min(f.height, f.width) for f in self.facts))
        largest = max(image_size, min(native, 2 * image_size))
        sides = [largest, min(largest, math.ceil(image_size * EVAL_RESIZE))]
        budget = MEMORY_FRACTION * available_memory() if budget is None else budget
        bytes_per_value = 2 if self.bits == 16 else 1
        for side in sorted(set(sides), reverse=True):
            shapes = [stored_shape(f, side) for f in self.facts]
            canvas = (max(h for h, _ in shapes), max(w for _, w in shapes))
            need = len(self) * self.channels * canvas[0] * canvas[1] * bytes_per_value
            if stream is False or (stream is None and need <= budget):
                return self._decode_all(side, canvas, strict)
        report_unreadable(list(self.unreadable), strict)  # the rest show up when their batch decodes them
        side = max(sides)
        shapes = [stored_shape(f, side) for f in self.facts]
        return ImageSet(files=FileImages(self.paths, self.facts, self.channels, self.bits, self.window, side,
                                         (max(h for h, _ in shapes), max(w for _, w in shapes)))), None

    def _decode_all(self, side: int, canvas: tuple[int, int], strict: bool) -> tuple[ImageSet, list[int]]:
        """Every file decoded by DataLoader workers into one preallocated tensor."""
        files = FileImages(self.paths, self.facts, self.channels, self.bits, self.window, side, canvas)
        dtype = torch.uint16 if self.bits == 16 else torch.uint8
        images = torch.empty((len(files), self.channels, *canvas), dtype=dtype)
        sizes = torch.empty((len(files), 2), dtype=torch.long)
        loader = torch.utils.data.DataLoader(files, batch_size=64, num_workers=min(loader_workers(), len(files) // 256),
                                             collate_fn=list)
        kept, bad, position = [], list(self.unreadable), 0
        for batch in loader:
            for array, extra in batch:
                if array is None:
                    bad.append(extra)
                else:
                    images[len(kept)] = torch.from_numpy(array).permute(2, 0, 1)
                    sizes[len(kept)] = torch.tensor(extra)
                    kept.append(position)
                position += 1
        report_unreadable(bad, strict)
        if not kept:
            raise DataError("no readable images among the files found")
        images, sizes = images[:len(kept)], sizes[:len(kept)]
        uniform = bool((sizes == torch.tensor(canvas)).all())
        return ImageSet(images, sizes=None if uniform else sizes), kept

    def batches(self, order: torch.Tensor, batch_size: int, device: torch.device, drop_last: bool):
        """Decode the files at ``order`` batch by batch in DataLoader workers."""
        if device.type == "cuda":  # JPEGs decode on the GPU (nvJPEG); workers read their bytes
            yield from gpu_batches(self, order, batch_size, device, drop_last)
            return
        loader = torch.utils.data.DataLoader(self, batch_size=batch_size, sampler=order.tolist(), drop_last=drop_last,
                                             num_workers=loader_workers(), collate_fn=collate)
        for images, sizes in loader:
            yield Batch(images.to(device, non_blocking=True), sizes.to(device) if sizes is not None else None)


def collate(items: list) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stack the decoded images (numpy arrays, through the pipe).  A file that fails only now
    (truncated after its header) becomes a blank image, named in a warning: the batch keeps its
    length, so labels and features stay aligned."""
    decoded = [array for array, _ in items if array is not None]
    if not decoded:
        raise DataError(f"no readable image in a batch of {len(items)}: {items[0][1]}")
    arrays, sizes = [], []
    for array, extra in items:
        if array is None:
            warn(f"an unreadable image while streaming, used as a blank one: {extra}")
            array, extra = np.zeros_like(decoded[0]), decoded[0].shape[:2]
        arrays.append(array)
        sizes.append(extra)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    sizes = torch.tensor(sizes)
    return images, None if bool((sizes == torch.tensor(images.shape[2:])).all()) else sizes
