"""Streaming JPEGs on a GPU: DataLoader workers only read each file's bytes, nvJPEG decodes them
on the device (``torchvision.io.decode_jpeg``), and the resize keeping the aspect ratio and
the padding to the canvas happen there too; other files are decoded by the workers."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..base.errors import warn
from .base import Batch, DataError, loader_workers
from .decode import decoded_shape


class EncodedFiles(torch.utils.data.Dataset):
    """JPEG files as their raw bytes (a 1-D uint8 tensor); every other file decoded as ``FileImages`` does."""

    def __init__(self, files):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path = self.files.paths[index]
        if path.suffix.lower() not in (".jpg", ".jpeg") or self.files.bits != 8 or self.files.channels not in (1, 3):
            return self.files[index]
        try:
            return ("jpeg", torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)), str(path)
        except OSError as error:
            return None, f"{path} ({type(error).__name__}: {error})"


def decode_on_device(item, note: str, files, device: torch.device) -> tuple[torch.Tensor, tuple] | None:
    """One worker item as (C, canvas_h, canvas_w) uint8 on ``device`` and its (h, w), like the CPU path."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not isinstance(item, tuple):  # decoded by the worker
        return torch.from_numpy(item).permute(2, 0, 1).to(device, non_blocking=True), note
    try:
        image = decode_jpeg(item[1], mode=ImageReadMode.GRAY if files.channels == 1 else ImageReadMode.RGB,
                            device=device, apply_exif_orientation=True)
    except RuntimeError:  # a JPEG nvJPEG refuses (CMYK, say): the CPU path decodes it
        index = files.paths.index(type(files.paths[0])(note))
        array, size = files[index]
        return (torch.from_numpy(array).permute(2, 0, 1).to(device), size) if array is not None else None
    size = decoded_shape(*image.shape[1:], files.short_side)
    resized = F.interpolate(image[None].float(), size=size, mode="bicubic", antialias=True)
    canvas_h, canvas_w = files.canvas
    resized = resized[:, :, :canvas_h, :canvas_w]
    padded = F.pad(resized, (0, canvas_w - resized.shape[3], 0, canvas_h - resized.shape[2]), mode="replicate")
    return padded[0].clamp_(0, 255).round_().to(torch.uint8), tuple(resized.shape[2:])


def gpu_batches(files, order: torch.Tensor, batch_size: int, device: torch.device, drop_last: bool):
    loader = torch.utils.data.DataLoader(EncodedFiles(files), batch_size=batch_size, sampler=order.tolist(),
                                         drop_last=drop_last, num_workers=loader_workers(), collate_fn=list)
    for items in loader:
        decoded = []
        for item, note in items:
            result = decode_on_device(item, note, files, device) if item is not None else None
            if result is None:
                warn(f"an unreadable image while streaming, used as a blank one: {note}")
            decoded.append(result)
        first = next((d for d in decoded if d is not None), None)
        if first is None:
            raise DataError(f"no readable image in a batch of {len(items)}")
        decoded = [d if d is not None else (torch.zeros_like(first[0]), tuple(first[0].shape[1:])) for d in decoded]
        sizes = torch.tensor([size for _, size in decoded], device=device)
        images = torch.stack([image for image, _ in decoded])
        uniform = bool((sizes == torch.tensor(images.shape[2:], device=device)).all())
        yield Batch(images, None if uniform else sizes)
