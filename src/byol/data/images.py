"""Folders of image files: class sub-folders, unlabeled (recursive), or a CSV of
``image,label``.  Files are decoded in DataLoader workers, normalised to one mode
and one size, and held in memory as uint8 — or, when they would not fit
(``MEMORY_FRACTION``), streamed: decoded batch by batch in DataLoader workers.

Every PIL mode becomes 8-bit L or RGB the same way: 1-bit and P through PIL's
own conversion, 16/32-bit integer scaled by its full range, alpha dropped (LA →
L, RGBA → RGB), CMYK and YCbCr converted to RGB; EXIF orientation is applied
first.  The dataset is grayscale (1 channel) when every image is, else RGB.
Images are resized so the shorter side is ``size`` and centre-cropped square.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import first_line, setting, warn
from .base import DataError, DataSplits, ImageSet

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
DEFAULT_SIZE = 64


def to_8bit(image: Image.Image, channels: int) -> np.ndarray:
    """(H, W, channels) uint8 from any PIL mode (see module docstring)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        array = np.asarray(image, dtype=np.float64)
        full_scale = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / full_scale * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    if channels == 1:
        image = image.convert("L")
    else:
        image = image.convert("RGBA").convert("RGB") if image.mode == "P" else image.convert("RGB")
    array = np.asarray(image)
    return array[:, :, None] if array.ndim == 2 else array


def resize_square(array: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to ``size`` (bicubic, antialiased by PIL), then the centre square."""
    height, width = array.shape[:2]
    if (height, width) == (size, size):
        return array
    scale = size / min(height, width)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    squeeze = array.shape[2] == 1
    image = Image.fromarray(array[:, :, 0] if squeeze else array).resize((new_w, new_h), Image.BICUBIC)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    out = np.asarray(image)[top:top + size, left:left + size]
    return out[:, :, None] if squeeze else out


def loader_workers() -> int:
    """DataLoader workers for decoding files: the cores there are, at most 8."""
    return min(8, os.cpu_count() or 1)


def warn_unreadable(error: str) -> None:
    """Streaming meets a bad file only when a batch decodes it: name it and go on."""
    warn(f"skipped an unreadable image while streaming: {error}")


def collate_decoded(items: list) -> torch.Tensor:
    """Stack the images that decoded; name the ones that did not (streaming path)."""
    for tensor, error in items:
        if tensor is None:
            warn_unreadable(error)
    return torch.stack([tensor for tensor, _ in items if tensor is not None])


class ImageFiles(torch.utils.data.Dataset):
    """Decodes one file per item: (uint8 (C, size, size) tensor or None, error text).
    ``batches`` streams them: decoded by DataLoader workers, or JPEGs by nvJPEG on a GPU."""

    def __init__(self, paths: list[Path], size: int, channels: int):
        self.paths, self.size, self.channels = paths, size, channels

    def subset(self, index: list[int]) -> "ImageFiles":
        return type(self)([self.paths[i] for i in index], self.size, self.channels)

    def __len__(self) -> int:
        return len(self.paths)

    def batches(self, order: torch.Tensor, batch_size: int, device: torch.device, drop_last: bool):
        if device.type == "cuda":  # JPEGs decode on the GPU (nvJPEG); workers only read their bytes
            encoded = EncodedFiles(self.paths, self.size, self.channels)
            loader = torch.utils.data.DataLoader(encoded, batch_size=batch_size, sampler=order.tolist(),
                                                 drop_last=drop_last, num_workers=loader_workers(), collate_fn=list)
            for items in loader:
                yield decode_on_device(items, self, device)
            return
        loader = torch.utils.data.DataLoader(
            self, batch_size=batch_size, sampler=order.tolist(), drop_last=drop_last,
            num_workers=loader_workers(), collate_fn=collate_decoded, pin_memory=device.type == "cuda")
        for batch in loader:
            yield batch.to(device, non_blocking=True)

    def __getitem__(self, index: int):
        try:
            with Image.open(self.paths[index]) as image:
                image.load()
                array = resize_square(to_8bit(image, self.channels), self.size)
            return torch.from_numpy(np.array(array.transpose(2, 0, 1))), ""  # a writable copy
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
            return None, f"{self.paths[index]} ({type(error).__name__}: {error})"


class EncodedFiles(ImageFiles):
    """For GPU decoding: JPEG files come back as their raw bytes (a 1-D uint8 tensor) for
    ``decode_on_device``; every other file is decoded here as ``ImageFiles`` does."""

    def __getitem__(self, index: int):
        path = self.paths[index]
        if path.suffix.lower() in (".jpg", ".jpeg"):
            try:
                return ("jpeg", torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)), str(path)
            except OSError as error:
                return None, f"{path} ({type(error).__name__}: {error})"
        return super().__getitem__(index)


def decode_on_device(items: list, files: ImageFiles, device: torch.device) -> torch.Tensor:
    """A batch from ``EncodedFiles`` on ``device``: JPEG bytes decoded there by nvJPEG
    (``torchvision.io.decode_jpeg``, EXIF orientation applied), resized and centre-cropped
    like the CPU path (antialiased bicubic); CPU-decoded images just move over.  A JPEG
    that nvJPEG refuses (CMYK, say) is decoded by PIL instead."""
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.GRAY if files.channels == 1 else ImageReadMode.RGB
    out = []
    for item, note in items:
        if item is None:
            warn_unreadable(note)
            continue
        if not isinstance(item, tuple):
            out.append(item.to(device, non_blocking=True))
            continue
        try:
            image = decode_jpeg(item[1], mode=mode, device=device, apply_exif_orientation=True)
        except RuntimeError:
            image, error = ImageFiles([Path(note)], files.size, files.channels)[0]
            if image is None:
                warn_unreadable(error)
                continue
            out.append(image.to(device))
            continue
        height, width = image.shape[1:]
        scale = files.size / min(height, width)
        new_h, new_w = max(files.size, round(height * scale)), max(files.size, round(width * scale))
        resized = torch.nn.functional.interpolate(image[None].float(), size=(new_h, new_w), mode="bicubic",
                                                  antialias=True).clamp_(0, 255).round_().to(torch.uint8)[0]
        top, left = (new_h - files.size) // 2, (new_w - files.size) // 2
        out.append(resized[:, top:top + files.size, left:left + files.size])
    return torch.stack(out)


def image_mode(path: Path) -> str | None:
    """The file's PIL mode from its header, or None when it is not a readable image."""
    try:
        with Image.open(path) as image:
            return image.mode
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None


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


# The memory rule: decode into memory when the uint8 tensor takes at most this share of
# the RAM available, else stream.  A quarter leaves room for the model, the optimizer,
# evaluation features and the rest of the machine.
MEMORY_FRACTION = 0.25


def _report_bad(bad: list[str], strict: bool) -> None:
    if not bad:
        return
    listing = "; ".join(bad[:3]) + ("; ..." if len(bad) > 3 else "")
    if strict:
        raise DataError(f"{len(bad)} unreadable image files: {listing} (remove them, or drop {setting('strict')} to skip them)")
    warn(f"skipped {len(bad)} unreadable image files: {listing}")


def make_image_set(paths: list[Path], labels: list[int] | None, size: int, strict: bool,
                   stream: bool | None = None, memory_budget: int | None = None,
                   root: Path | None = None) -> ImageSet:
    """Images of ``paths`` (with ``labels``), decoded into memory or, when the memory rule
    says they do not fit (or ``stream`` is True), streamed from disk batch by batch.

    Unreadable files (empty, not an image, no permission, truncated) are skipped with
    one warning naming the count and the first few, or raise with ``strict``.  Each image
    keeps its file name, relative to ``root`` when given (for ``byol embed``)."""
    modes = [image_mode(p) for p in paths]
    bad = [f"{p} (not a readable image)" for p, mode in zip(paths, modes) if mode is None]
    keep = [i for i, mode in enumerate(modes) if mode is not None]
    channels = 1 if all(modes[i] in GRAY_MODES for i in keep) else 3
    files = ImageFiles([paths[i] for i in keep], size, channels)
    kept_labels = torch.tensor([labels[i] for i in keep], dtype=torch.long) if labels is not None else None
    names = [str(paths[i].relative_to(root)) if root else str(paths[i]) for i in keep]
    budget = MEMORY_FRACTION * available_memory() if memory_budget is None else memory_budget
    if stream is None:
        stream = len(keep) * channels * size * size > budget
    if stream:
        _report_bad(bad, strict)  # truncated files show up only when a batch decodes them
        if not keep:
            raise DataError("no readable images among the files found")
        return ImageSet(labels=kept_labels, files=files, names=names)
    loader = torch.utils.data.DataLoader(files, batch_size=64, num_workers=min(loader_workers(), len(keep) // 256),
                                         collate_fn=list)
    images, decoded = [], []
    for batch_start, batch in zip(range(0, len(keep), 64), loader):
        for offset, (tensor, error) in enumerate(batch):
            if tensor is None:
                bad.append(error)
            else:
                images.append(tensor)
                decoded.append(batch_start + offset)
    _report_bad(bad, strict)
    if not images:
        raise DataError("no readable images among the files found")
    return ImageSet(torch.stack(images), kept_labels[decoded] if kept_labels is not None else None,
                    names=[names[i] for i in decoded])


def list_images(folder: Path) -> list[Path]:
    """Every image file under ``folder``, recursively, sorted; hidden files and folders skipped."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def class_folders(folder: Path) -> list[Path]:
    """Sub-folders holding images, when every image of ``folder`` sits in one of them."""
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS]
    if loose or len(subfolders) < 2:
        return []
    return [p for p in subfolders if list_images(p)]


def _labelled_folder(folder: Path, size: int, strict: bool, stream, memory_budget,
                     classes: list[str] | None = None) -> tuple[ImageSet, list[str]]:
    classes = classes or [p.name for p in class_folders(folder)]
    paths, labels = [], []
    for index, name in enumerate(classes):
        files = list_images(folder / name) if (folder / name).is_dir() else []
        paths += files
        labels += [index] * len(files)
    if not paths:
        raise DataError(f"{folder}: no images in its class folders")
    return make_image_set(paths, labels, size, strict, stream, memory_budget, folder), classes


def load_image_folder(folder: Path, size: int | None, strict: bool, stream: bool | None = None,
                      memory_budget: int | None = None) -> DataSplits:
    """``folder/train/<class>/*``, ``folder/test/<class>/*`` (test optional), or
    ``folder/<class>/*`` (labelled, no test split), or any other folder of images (unlabeled)."""
    size = size or DEFAULT_SIZE
    train_dir, test_dir = folder / "train", folder / "test"
    if train_dir.is_dir() and class_folders(train_dir):
        train, classes = _labelled_folder(train_dir, size, strict, stream, memory_budget)
        test = _labelled_folder(test_dir, size, strict, stream, memory_budget, classes)[0] if test_dir.is_dir() else None
        return DataSplits(folder.name, train, test, tuple(classes))
    if class_folders(folder):
        train, classes = _labelled_folder(folder, size, strict, stream, memory_budget)
        return DataSplits(folder.name, train, None, tuple(classes))
    paths = list_images(folder)
    if not paths:
        raise DataError(f"{folder}: no image files found (looked recursively for {', '.join(sorted(EXTENSIONS))})")
    return DataSplits(folder.name, make_image_set(paths, None, size, strict, stream, memory_budget, folder))


def load_csv(path: Path, size: int | None, strict: bool, stream: bool | None = None,
             memory_budget: int | None = None) -> DataSplits:
    """A CSV with columns ``image,label`` (a header row naming them), image paths relative to the
    CSV's folder — DRAC-style challenge data.  Labels that are all integers keep their
    values; otherwise classes are the sorted label names."""
    root = path.parent.resolve()
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path} cannot be read as CSV ({first_line(error)})") from None
    if not rows or not {"image", "label"} <= set(rows[0]):
        raise DataError(f"{path} needs a header row with columns 'image' and 'label'")
    paths, missing = [], []
    for row in rows:
        file = (root / row["image"]).resolve()
        if not file.is_relative_to(root):
            raise DataError(f"{path}: image path '{row['image']}' points outside {root}; keep images beside the CSV")
        (paths if file.is_file() else missing).append(file)
    if missing:
        listing = ", ".join(str(m) for m in missing[:3])
        raise DataError(f"{path} names {len(missing)} files that do not exist (first: {listing}); fix the CSV or the folder")
    names = [(row["label"] or "").strip() for row in rows]
    for line, name in enumerate(names, start=2):  # line 1 is the header
        if not name:
            raise DataError(f"{path} row {line} ({rows[line - 2]['image']}) has no label; grade it or drop the row")
        if name.startswith("-") and name[1:].isdigit():
            raise DataError(f"{path} row {line}: label {name} is negative; integer labels are grades 0, 1, 2, ...")
    if all(n.lstrip("-").isdigit() for n in names):
        labels, classes = [int(n) for n in names], None
    else:
        classes = sorted(set(names))
        labels = [classes.index(n) for n in names]
    return DataSplits(path.stem, make_image_set(paths, labels, size or DEFAULT_SIZE, strict, stream, memory_budget, root),
                   None, tuple(classes) if classes else None)
