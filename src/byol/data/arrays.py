"""Images as arrays: from Python (arrays and tensors, (images, labels) pairs, torch Datasets) and
from NumPy files — (N, H, W), (N, H, W, C) or (N, C, H, W) with any number of channels (bands),
uint8 or uint16 (16-bit microscopy keeps every level); floats are taken as [0, 1] intensities
and kept at 16-bit precision."""
from __future__ import annotations

import numpy as np
import torch

from ..base.errors import setting
from .base import DataError, DataSplits, ImageSet


MAX_BANDS = 16


def images_tensor(images, where: str) -> torch.Tensor:
    """(N, C, H, W) uint8 or uint16 from images in any of the layouts above (array or tensor)."""
    images = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if images.dtype.kind == "f":
        if images.size and (np.nanmin(images) < 0 or np.nanmax(images) > 1):
            raise DataError(f"{where}: float images must hold intensities in [0, 1]; scale them or store integers")
        images = np.round(images * 65535).astype(np.uint16)
    elif images.dtype not in (np.uint8, np.uint16):  # other integers: 8-bit when their values are
        if images.size and (images.min() < 0 or images.max() > 65535):
            raise DataError(f"{where}: {images.dtype} values outside 0..65535; store uint8 or uint16 images")
        images = images.astype(np.uint8 if not images.size or images.max() <= 255 else np.uint16)
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] <= MAX_BANDS and images.shape[-1] < images.shape[1]:
        images = images.transpose(0, 3, 1, 2)
    elif not (images.ndim == 4 and images.shape[1] <= MAX_BANDS):
        raise DataError(f"{where}: images of shape {images.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W) "
                        f"with at most {MAX_BANDS} channels")
    return torch.from_numpy(np.ascontiguousarray(images))




def _labels(labels, n: int) -> torch.Tensor:
    labels = torch.as_tensor(np.asarray(labels)).long().reshape(-1)
    if len(labels) != n:
        raise DataError(f"{setting('data')}: {len(labels)} labels for {n} images")
    return labels


def from_dataset(dataset) -> DataSplits:
    """A map-style torch Dataset of images (PIL, arrays or tensors) or (image, label) pairs."""
    images, labels = [], []
    for index in range(len(dataset)):
        item = dataset[index]
        image, label = item if isinstance(item, (tuple, list)) else (item, None)
        array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if array.ndim == 3 and array.shape[-1] <= MAX_BANDS and array.shape[-1] < array.shape[0]:
            array = array.transpose(2, 0, 1)  # PIL and (H, W, C) arrays
        images.append(array if array.ndim == 3 else array[None])
        labels.append(label)
    if len({image.shape for image in images}) > 1:
        raise DataError(f"{setting('data')}: the Dataset's images differ in size; resize them to one size")
    stacked = images_tensor(np.stack(images), setting("data"))
    known = None if any(label is None for label in labels) else _labels(labels, len(labels))
    return DataSplits(type(dataset).__name__, ImageSet(stacked, known))


def from_python(data) -> DataSplits:
    """``data`` given from Python as images, (images, labels) or a torch Dataset."""
    if isinstance(data, torch.utils.data.TensorDataset):
        data = tuple(data.tensors)
    elif isinstance(data, torch.utils.data.Dataset):
        return from_dataset(data)
    if isinstance(data, (tuple, list)) and len(data) == 2 and np.ndim(data[1]) == 1:
        images = images_tensor(data[0], setting("data"))
        return DataSplits("arrays", ImageSet(images, _labels(data[1], len(images))))
    return DataSplits("arrays", ImageSet(images_tensor(data, setting("data"))))
