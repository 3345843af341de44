"""One image file → a numpy array (H, W, C), uint8 or uint16, at a chosen size, keeping its
aspect ratio.  PIL for the common formats (every mode: 1-bit, L, LA, P, RGB, RGBA, CMYK,
16-bit), ``tifffile`` for multi-band TIFF, ``pydicom`` for DICOM (both optional extras).

Bit depth is kept: 16-bit images stay 16-bit (uint16) through resizing, so normalisation
sees every level; 8-bit images in a 16-bit dataset are scaled by 257 (255 → 65535).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".dcm"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
MAX_ASPECT = 2.0  # the decoded longer side at most twice the shorter side's size: panoramas are shrunk, not cut
READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError, KeyError, IndexError,
               AttributeError, TypeError, RuntimeError)


@dataclass(frozen=True)
class FileFacts:
    """What a file's header says: its size, channels and bits per sample."""

    height: int
    width: int
    channels: int  # 1 (gray), 3 (RGB) or the number of bands
    bits: int      # 8 or 16


@dataclass(frozen=True)
class DecodeSettings:
    """How every file of a dataset is decoded: to ``channels`` and ``bits`` (the dataset's), the
    shorter side resized to ``short_side``; DICOM windowed by ``window`` (centre, width) when given."""

    channels: int
    bits: int
    short_side: int
    window: tuple[float, float] | None = None


def is_dicom(path: Path) -> bool:
    return path.suffix.lower() == ".dcm"


def is_tiff(path: Path) -> bool:
    return path.suffix.lower() in (".tif", ".tiff")


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise ImportError("DICOM files need pydicom: pip install 'byol[medical]'") from None
    return pydicom


def read_facts(path: Path) -> FileFacts | None:
    """The header's facts, or None when the file is not a readable image."""
    try:
        if is_dicom(path):
            header = _pydicom().dcmread(path, stop_before_pixels=True)
            return FileFacts(int(header.Rows), int(header.Columns), int(getattr(header, "SamplesPerPixel", 1)),
                             8 if int(getattr(header, "BitsStored", 8)) <= 8 else 16)
        if is_tiff(path):
            facts = _tiff_facts(path)
            if facts is not None:
                return facts
        with Image.open(path) as image:
            channels = 1 if image.mode in GRAY_MODES else 3
            height, width = image.height, image.width
            if image.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF: displayed turned by 90°
                height, width = width, height
            return FileFacts(height, width, channels, 16 if image.mode in SIXTEEN_BIT_MODES else 8)
    except ImportError:
        raise
    except READ_ERRORS:
        return None


def _tiff_facts(path: Path) -> FileFacts | None:
    """Multi-band or 16-bit TIFFs through tifffile, when it is installed (PIL reads the rest)."""
    try:
        import tifffile
    except ImportError:
        return None
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        shape, dtype = page.shape, page.dtype
    height, width, bands = _tiff_layout(shape)
    return FileFacts(height, width, bands, 8 if dtype.itemsize == 1 else 16)


def _tiff_layout(shape: tuple) -> tuple[int, int, int]:
    """(H, W, bands) of a TIFF page shaped (H, W), (H, W, B) or (B, H, W) (bands first when few)."""
    if len(shape) == 2:
        return shape[0], shape[1], 1
    if shape[-1] <= 16:
        return shape[0], shape[1], shape[2]
    return shape[1], shape[2], shape[0]


def _read_pixels(path: Path, settings: DecodeSettings) -> np.ndarray:
    """(H, W, C) at the file's own size, uint8 or uint16 as the dataset's bits say."""
    if is_dicom(path):
        return _dicom_pixels(path, settings)
    if is_tiff(path):
        array = _tiff_pixels(path)
        if array is not None:
            return _to_depth(array, settings.bits)
    with Image.open(path) as image:
        image.load()
        image = ImageOps.exif_transpose(image)
        if image.mode in SIXTEEN_BIT_MODES:
            array = np.asarray(image, dtype=np.float64)
            full = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
            array = np.clip(array / full, 0, 1)[:, :, None]
            if settings.channels == 3:
                array = np.repeat(array, 3, axis=2)
            scale = 65535 if settings.bits == 16 else 255
            return np.round(array * scale).astype(np.uint16 if settings.bits == 16 else np.uint8)
        if settings.channels == 1:
            image = image.convert("L")
        else:
            image = image.convert("RGBA").convert("RGB") if image.mode == "P" else image.convert("RGB")
        array = np.asarray(image)
    return _to_depth(array[:, :, None] if array.ndim == 2 else array, settings.bits)


def _to_depth(array: np.ndarray, bits: int) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if bits == 16:
        return array.astype(np.uint16) * 257 if array.dtype == np.uint8 else array.astype(np.uint16)
    return array if array.dtype == np.uint8 else (array.astype(np.float64) / 257).round().astype(np.uint8)


def _tiff_pixels(path: Path) -> np.ndarray | None:
    try:
        import tifffile
    except ImportError:
        return None
    array = tifffile.imread(path, key=0)
    height, width, bands = _tiff_layout(array.shape)
    if array.ndim == 3 and array.shape[-1] != bands:
        array = np.moveaxis(array, 0, -1)
    if array.dtype.kind == "f":  # float TIFFs: taken as intensities in [0, 1]
        return np.round(np.clip(array, 0, 1) * 65535).astype(np.uint16)
    if array.dtype.itemsize > 2:
        return np.clip(array, 0, 65535).astype(np.uint16)
    return array


def _dicom_pixels(path: Path, settings: DecodeSettings) -> np.ndarray:
    """Stored values × RescaleSlope + RescaleIntercept (e.g. Hounsfield units), then the window
    (``settings.window``, else the file's WindowCenter / WindowWidth, else the stored range)
    mapped to the full range of the dataset's bit depth; MONOCHROME1 inverted."""
    dataset = _pydicom().dcmread(path)
    values = dataset.pixel_array.astype(np.float64)
    values = values * float(getattr(dataset, "RescaleSlope", 1)) + float(getattr(dataset, "RescaleIntercept", 0))
    if settings.window is not None:
        centre, width = settings.window
    elif "WindowCenter" in dataset and "WindowWidth" in dataset:
        first = (lambda v: float(v[0]) if hasattr(v, "__len__") and not isinstance(v, str) else float(v))
        centre, width = first(dataset.WindowCenter), first(dataset.WindowWidth)
    else:
        low, high = values.min(), values.max()
        centre, width = (low + high) / 2, max(high - low, 1e-6)
    unit = np.clip((values - (centre - width / 2)) / max(width, 1e-6), 0, 1)
    if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        unit = 1 - unit
    scale = 65535 if settings.bits == 16 else 255
    array = np.round(unit * scale).astype(np.uint16 if settings.bits == 16 else np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def decoded_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) of an image resized with its shorter side at ``short_side``, aspect ratio
    kept — unless its longer side would exceed ``MAX_ASPECT`` × ``short_side``: then that is
    its longer side (a panorama ends shorter; nothing is cut off)."""
    scale = min(short_side / min(height, width), MAX_ASPECT * short_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_keeping_aspect(array: np.ndarray, short_side: int) -> np.ndarray:
    """``array`` (H, W, C) resized to ``decoded_shape`` (bicubic, antialiased), its dtype kept."""
    size = decoded_shape(*array.shape[:2], short_side)
    if size == array.shape[:2]:
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array).astype(np.float32)).permute(2, 0, 1)[None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # antialias on upsampling is a no-op PyTorch may warn about
        resized = F.interpolate(tensor, size=size, mode="bicubic", antialias=True, align_corners=False)
    top = 65535 if array.dtype == np.uint16 else 255
    return resized[0].permute(1, 2, 0).round().clamp(0, top).numpy().astype(array.dtype)


def decode(path: Path, settings: DecodeSettings) -> np.ndarray:
    """The file as (H, W, C) with the dataset's channels and bits, shorter side ``short_side``."""
    array = _read_pixels(path, settings)
    if array.shape[2] != settings.channels:
        if array.shape[2] == 1:
            array = np.repeat(array, settings.channels, axis=2)
        else:
            raise ValueError(f"{array.shape[2]} channels in a {settings.channels}-channel dataset")
    return resize_keeping_aspect(array, settings.short_side)
