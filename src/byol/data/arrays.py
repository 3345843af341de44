"""Images handed over from Python: arrays and tensors, (images, labels) pairs, torch Datasets."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import setting
from .base import DataError, DataSplits, ImageSet


def to_uint8_images(images) -> torch.Tensor:
    """(N, C, H, W) uint8 from an array or tensor shaped (N, H, W), (N, C, H, W) or (N, H, W, C);
    floats are taken as [0, 1] intensities."""
    tensor = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).detach().cpu()
    if tensor.ndim == 3:
        tensor = tensor[:, None]
    if tensor.ndim != 4:
        raise DataError(f"{setting('data')}: images of shape {tuple(tensor.shape)}; give (N, H, W), (N, C, H, W) "
                        "or (N, H, W, C)")
    if tensor.shape[1] not in (1, 3) and tensor.shape[-1] in (1, 3):
        tensor = tensor.permute(0, 3, 1, 2)  # channels last -> channels first
    if tensor.is_floating_point():
        if tensor.numel() and (tensor.min() < 0 or tensor.max() > 1):
            raise DataError(f"{setting('data')}: float images must hold intensities in [0, 1]; scale them or give uint8")
        tensor = (tensor * 255).round()
    elif tensor.dtype != torch.uint8 and tensor.numel() and (tensor.min() < 0 or tensor.max() > 255):
        raise DataError(f"{setting('data')}: integer images must be 8-bit (0..255), got values up to {int(tensor.max())}")
    return tensor.to(torch.uint8).contiguous()


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
        array = np.asarray(image) if not isinstance(image, torch.Tensor) else image
        if isinstance(array, np.ndarray) and array.ndim == 3 and array.shape[-1] in (1, 3):
            array = array.transpose(2, 0, 1)  # PIL / HWC arrays
        images.append(torch.as_tensor(array if np.ndim(array) == 3 else np.asarray(array)[None]))
        labels.append(label)
    try:
        stacked = to_uint8_images(torch.stack(images))
    except RuntimeError:
        raise DataError(f"{setting('data')}: the Dataset's images differ in size; resize them to one size") from None
    known = None if any(label is None for label in labels) else _labels(labels, len(labels))
    return DataSplits(type(dataset).__name__, ImageSet(stacked, known))


def from_python(data) -> DataSplits:
    """``data`` given from Python as images, (images, labels) or a torch Dataset."""
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.TensorDataset):
        return from_dataset(data)
    if isinstance(data, torch.utils.data.TensorDataset):
        data = tuple(data.tensors)
    if isinstance(data, (tuple, list)) and len(data) == 2 and np.ndim(data[1]) == 1:
        images = to_uint8_images(data[0])
        return DataSplits("arrays", ImageSet(images, _labels(data[1], len(images))))
    return DataSplits("arrays", ImageSet(to_uint8_images(data)))
