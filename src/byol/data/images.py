"""Folders of image files: class sub-folders, unlabeled (recursive), or a CSV of
``image,label``.  Files are decoded in DataLoader workers, normalised to one mode
and one size, and held in memory as uint8.

Every PIL mode becomes 8-bit L or RGB the same way: 1-bit and P through PIL's
own conversion, 16/32-bit integer scaled by its full range, alpha dropped (LA →
L, RGBA → RGB), CMYK and YCbCr converted to RGB; EXIF orientation is applied
first.  The dataset is grayscale (1 channel) when every image is, else RGB.
Images are resized so the shorter side is ``size`` and centre-cropped square.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .base import DataError, Dataset, ImageSet

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


class ImageFiles(torch.utils.data.Dataset):
    """Decodes one file per item: (uint8 (C, size, size) tensor or None, error text)."""

    def __init__(self, paths: list[Path], size: int, channels: int):
        self.paths, self.size, self.channels = paths, size, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            with Image.open(self.paths[index]) as image:
                image.load()
                array = resize_square(to_8bit(image, self.channels), self.size)
            return torch.from_numpy(np.array(array.transpose(2, 0, 1))), ""  # a writable copy
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
            return None, f"{type(error).__name__}: {error}"


def image_mode(path: Path) -> str | None:
    """The file's PIL mode from its header, or None when it is not a readable image."""
    try:
        with Image.open(path) as image:
            return image.mode
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None


def decode_all(paths: list[Path], size: int, strict: bool, workers: int | None = None) -> tuple[torch.Tensor, list[int]]:
    """Decode ``paths`` into (N_ok, C, size, size) uint8; returns the tensor and the indices kept.

    Unreadable files (empty, truncated, not an image, no permission) are skipped with one
    warning naming the count and the first few, or raise with ``strict``."""
    modes = [image_mode(p) for p in paths]
    channels = 1 if all(m in GRAY_MODES for m in modes if m is not None) else 3
    workers = min(8, len(paths) // 256, torch.get_num_threads()) if workers is None else workers
    loader = torch.utils.data.DataLoader(ImageFiles(paths, size, channels), batch_size=64, num_workers=max(workers, 0),
                                         collate_fn=list)
    images, kept, bad = [], [], []
    for batch_start, batch in zip(range(0, len(paths), 64), loader):
        for offset, (tensor, error) in enumerate(batch):
            if tensor is None:
                bad.append(f"{paths[batch_start + offset]} ({error})")
            else:
                images.append(tensor)
                kept.append(batch_start + offset)
    if bad:
        listing = "; ".join(bad[:3]) + ("; ..." if len(bad) > 3 else "")
        if strict:
            raise DataError(f"{len(bad)} unreadable image files: {listing} (remove them, or drop --strict to skip them)")
        print(f"byol: warning: skipped {len(bad)} unreadable image files: {listing}", file=sys.stderr)
    if not images:
        raise DataError("no readable images among the files found")
    return torch.stack(images), kept


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


def _labelled_folder(folder: Path, size: int, strict: bool, classes: list[str] | None = None) -> tuple[ImageSet, list[str]]:
    classes = classes or [p.name for p in class_folders(folder)]
    paths, labels = [], []
    for index, name in enumerate(classes):
        files = list_images(folder / name) if (folder / name).is_dir() else []
        paths += files
        labels += [index] * len(files)
    if not paths:
        raise DataError(f"{folder}: no images in its class folders")
    images, kept = decode_all(paths, size, strict)
    return ImageSet(images, torch.tensor(labels)[kept]), classes


def load_image_folder(folder: Path, size: int | None, strict: bool) -> Dataset:
    """``folder/train/<class>/*``, ``folder/test/<class>/*`` (test optional), or
    ``folder/<class>/*`` (labelled, no test split), or any other folder of images (unlabeled)."""
    size = size or DEFAULT_SIZE
    train_dir, test_dir = folder / "train", folder / "test"
    if train_dir.is_dir() and class_folders(train_dir):
        train, classes = _labelled_folder(train_dir, size, strict)
        test = _labelled_folder(test_dir, size, strict, classes)[0] if test_dir.is_dir() else None
        return Dataset(folder.name, train, test, tuple(classes))
    if class_folders(folder):
        train, classes = _labelled_folder(folder, size, strict)
        return Dataset(folder.name, train, None, tuple(classes))
    paths = list_images(folder)
    if not paths:
        raise DataError(f"{folder}: no image files found (looked recursively for {', '.join(sorted(EXTENSIONS))})")
    return Dataset(folder.name, ImageSet(decode_all(paths, size, strict)[0]))


def load_csv(path: Path, size: int | None, strict: bool) -> Dataset:
    """A CSV with columns ``image,label`` (a header row naming them), image paths relative to the
    CSV's folder — DRAC-style challenge data.  Labels that are all integers keep their
    values; otherwise classes are the sorted label names."""
    root = path.parent.resolve()
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path} cannot be read as CSV ({error})") from None
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
    names = [row["label"].strip() for row in rows]
    if all(n.lstrip("-").isdigit() for n in names):
        labels, classes = [int(n) for n in names], None
    else:
        classes = sorted(set(names))
        labels = [classes.index(n) for n in names]
    images, kept = decode_all(paths, size or DEFAULT_SIZE, strict)
    return Dataset(path.stem, ImageSet(images, torch.tensor(labels)[kept]), None,
                   tuple(classes) if classes else None)
