"""Folders of image files and labelled CSVs: ``train/<class>/*`` and ``test/<class>/*``,
``<class>/*``, any folder of images (searched recursively), or a CSV naming images and their
labels — ``image,label`` beside the images, or a grading challenge's own layout (DRAC22's
``image name`` / ``DR grade`` with the images in another folder; EyePACS, APTOS).

Only headers are read here; the files are decoded later for the views' size (``files.py``).
Unreadable files (empty, truncated header, not an image, no permission) are skipped with one
warning naming the count and the first few, or stop the run with ``strict``.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import torch

from ..base.errors import first_line, setting
from .base import DataError, DataSplits, ImageSet
from .decode import EXTENSIONS
from .files import FileImages, dataset_channels, report_unreadable, scan

# Column names of labelled CSVs as challenges ship them, compared lower-case with _ and - as spaces.
IMAGE_COLUMNS = ("image", "image name", "image id", "imagename", "id code", "filename", "file name", "file",
                 "path", "image path", "img", "id")
LABEL_COLUMNS = ("label", "dr grade", "grade", "diagnosis", "level", "class", "target", "category")


def list_images(folder: Path) -> list[Path]:
    """Every image file under ``folder``, recursively, sorted; hidden files and folders skipped."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def natural_order(name: str) -> tuple:
    """Class names as a reader expects them: numbers by value (2 before 10), then the rest by name."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def class_folders(folder: Path) -> list[Path]:
    """Sub-folders holding images, when every image of ``folder`` sits in one of them, in natural
    order (folders 0 … 10 as grades: 10 after 2)."""
    subfolders = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                        key=lambda p: natural_order(p.name))
    loose = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS]
    if loose or len(subfolders) < 2:
        return []
    return [p for p in subfolders if list_images(p)]


def file_set(paths: list[Path], labels: list[int] | None, root: Path, strict: bool,
             window: tuple[float, float] | None = None) -> ImageSet:
    """The readable files among ``paths`` (headers read, nothing decoded yet), with their labels
    and their names relative to ``root``."""
    kept, facts, unreadable = scan(paths)
    if unreadable and strict:
        report_unreadable(unreadable, strict)
    files = FileImages([paths[i] for i in kept], facts, dataset_channels(facts, str(root)),
                       16 if any(f.bits == 16 for f in facts) else 8, window, unreadable=tuple(unreadable))
    kept_labels = torch.tensor([labels[i] for i in kept], dtype=torch.long) if labels is not None else None
    names = [str(paths[i].relative_to(root)) if paths[i].is_relative_to(root) else str(paths[i]) for i in kept]
    return ImageSet(labels=kept_labels, files=files, names=names)


def _labelled_folder(folder: Path, strict: bool, window, classes: list[str] | None = None) -> tuple[ImageSet, list[str]]:
    classes = classes or [p.name for p in class_folders(folder)]
    paths, labels = [], []
    for index, name in enumerate(classes):
        found = list_images(folder / name) if (folder / name).is_dir() else []
        paths += found
        labels += [index] * len(found)
    if not paths:
        raise DataError(f"{folder}: no images in its class folders")
    return file_set(paths, labels, folder, strict, window), classes


def load_image_folder(folder: Path, strict: bool = False, window=None) -> DataSplits:
    """``folder/train/<class>/*``, ``folder/test/<class>/*`` (test optional), or
    ``folder/<class>/*`` (labelled, no test split), or any other folder of images (unlabeled)."""
    train_dir, test_dir = folder / "train", folder / "test"
    if train_dir.is_dir() and class_folders(train_dir):
        train, classes = _labelled_folder(train_dir, strict, window)
        test = _labelled_folder(test_dir, strict, window, classes)[0] if test_dir.is_dir() else None
        return DataSplits(folder.name, train, test, tuple(classes))
    if class_folders(folder):
        train, classes = _labelled_folder(folder, strict, window)
        return DataSplits(folder.name, train, None, tuple(classes))
    paths = list_images(folder)
    if not paths:
        raise DataError(f"{folder}: no image files found (looked recursively for {', '.join(sorted(EXTENSIONS))})")
    return DataSplits(folder.name, file_set(paths, None, folder, strict, window))


def _normal(name: str) -> str:
    return re.sub(r"\s+", " ", name.lower().replace("_", " ").replace("-", " ")).strip()


def find_column(columns: list[str], given: str | None, known: tuple[str, ...], what: str, option: str,
                path: Path) -> str | None:
    """The CSV column that holds ``what``: the one the user named, else the first known name."""
    by_normal = {_normal(c): c for c in columns}
    if given is not None:
        if _normal(given) in by_normal:
            return by_normal[_normal(given)]
        raise DataError(f"{path}: no column '{given}' ({setting(option)}); its columns are: {', '.join(columns)}")
    return next((by_normal[name] for name in known if name in by_normal), None)


def find_image(root: Path, value: str) -> Path | None:
    """The file a CSV cell names, relative to ``root``; without an extension, the image file of
    that name (EyePACS and APTOS list ids, not files)."""
    path = (root / value.strip()).resolve()
    if path.is_file():
        return path
    if not path.suffix or path.suffix.lower() not in EXTENSIONS:
        for extension in sorted(EXTENSIONS):
            for candidate in (path.with_name(path.name + extension), path.with_name(path.name + extension.upper())):
                if candidate.is_file():
                    return candidate
    return None


def _read_rows(path: Path) -> tuple[list[str], list[dict]]:
    """The header's column names and the rows under it."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # utf-8-sig: spreadsheets write a BOM
            reader = csv.DictReader(handle)
            return list(reader.fieldnames or []), list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path} cannot be read as CSV ({first_line(error)})") from None


def _labels(path: Path, rows: list[dict], column: str, image_column: str) -> tuple[list[int], tuple[str, ...] | None]:
    """Integer grades keep their values; other labels become the sorted class names."""
    names = [(row[column] or "").strip() for row in rows]
    for line, name in enumerate(names, start=2):  # line 1 is the header
        if not name:
            raise DataError(f"{path} row {line} ({rows[line - 2][image_column]}) has no {column}; grade it or drop the row")
        if name.startswith("-") and name[1:].isdigit():
            raise DataError(f"{path} row {line}: {column} {name} is negative; integer labels are grades 0, 1, 2, ...")
    if all(n.isdigit() for n in names):
        return [int(n) for n in names], None
    classes = sorted(set(names))
    return [classes.index(n) for n in names], tuple(classes)


def load_csv(path: Path, strict: bool = False, images: str | None = None, image_column: str | None = None,
             label_column: str | None = None, window=None) -> DataSplits:
    """A CSV with a header row naming an image column and (optionally) a label column; images
    are found relative to ``images`` (default: the CSV's folder) and must stay inside it."""
    columns, rows = _read_rows(path)
    image_col = find_column(columns, image_column, IMAGE_COLUMNS, "images", "image_column", path)
    if image_col is None:
        raise DataError(f"{path}: no image column among its columns ({', '.join(columns)}); name it with "
                        f"{setting('image_column')}")
    if not rows:
        raise DataError(f"{path} has no rows under its header")
    label_col = find_column(columns, label_column, LABEL_COLUMNS, "labels", "label_column", path)
    root = Path(images).resolve() if images else path.parent.resolve()
    if not root.is_dir():
        raise DataError(f"{setting('images')} {images}: no such folder")
    paths, missing = [], []
    for row in rows:
        value = row[image_col] or ""
        if not (root / value.strip()).resolve().is_relative_to(root):
            raise DataError(f"{path}: image path '{value}' points outside {root}; keep the images inside that folder")
        found = find_image(root, value)
        (paths if found else missing).append(found or value)
    if missing:
        listing = ", ".join(str(m) for m in missing[:3])
        raise DataError(f"{path} names {len(missing)} images not found in {root} (first: {listing}); fix the CSV, or "
                        f"point {setting('images')} at the folder that holds them")
    labels, classes = _labels(path, rows, label_col, image_col) if label_col else (None, None)
    return DataSplits(path.stem, file_set(paths, labels, root, strict, window), None, classes)
