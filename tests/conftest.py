"""Fixtures and helpers shared by the tests: data written in the real on-disk formats, tiny
pre-training settings, and the command-line checks."""
import csv
import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

RNG = np.random.default_rng(0)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an unsigned-byte idx file exactly as MNIST / Fashion-MNIST ship them."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


@pytest.fixture
def tiny_idx(tmp_path) -> Path:
    """A Fashion-MNIST-shaped idx folder: 320 train and 96 test images of 16×16, 4 classes
    (class k is a bright square in corner k, so features can tell them apart)."""
    folder = tmp_path / "tiny-idx"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 320), ("t10k", 96)):
        labels = np.arange(n) % 4
        images = rng.integers(0, 60, size=(n, 16, 16))
        for i, label in enumerate(labels):
            r, c = divmod(int(label), 2)
            images[i, r * 8:r * 8 + 8, c * 8:c * 8 + 8] += 150
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return folder


def tiny_settings(data, out, **overrides) -> dict:
    """Pre-training settings that run in seconds on ``tiny_idx``."""
    values = dict(data=str(data), out=str(out), epochs=2, batch_size=32, hidden_dim=32, projection_dim=16,
                  knn_every=1, knn_k=20, log_every=5, warmup_epochs=0.5)
    values.update(overrides)
    return values


def save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)


def write_csv(path: Path, rows, header=("image", "label")) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def labelled_csv(root, n=120, side=24):
    """A labelled CSV of gray images whose grade is how much of the picture is dark, no test split."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        grade = i % 3
        pixels = rng.integers(120, 255, (side, side), dtype=np.uint8)
        pixels[: side * grade // 3] //= 4
        save(root / "images" / f"{i:03d}.png", pixels, "L")
        rows.append((f"images/{i:03d}.png", grade))
    write_csv(root / "grades.csv", rows)
    return root / "grades.csv"


def small_class_folder(root: Path, n_per_class: int = 6, side: int = 20) -> Path:
    """train/ and test/ with three class folders; each class has its own dominant channel."""
    for split in ("train", "test"):
        for label, name in enumerate(("a", "b", "c")):
            for i in range(n_per_class):
                pixels = RNG.integers(0, 256, (side, side + 4, 3), dtype=np.uint8)
                pixels[:, :, label] = 255 - 20 * i
                save(root / split / name / f"{i}.png", pixels)
    return root


def graded_folder(root: Path, n: int = 24, grades=(0, 1, 2)) -> list[tuple[str, int]]:
    """``root/images/NNN.png`` whose brightness is its grade; returns the (image, grade) rows."""
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        grade = grades[i % len(grades)]
        Image.fromarray(np.full((20, 20, 3), 40 + 80 * grade, np.uint8)).save(root / "images" / f"{i:03d}.png")
        rows.append((f"images/{i:03d}.png", grade))
    return rows


def run_cli(*args, cwd=None, env=None, timeout=300):
    """``python -m byol ARGS`` in a subprocess (mark the test ``slow``)."""
    return subprocess.run([sys.executable, "-m", "byol", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


def assert_one_line_error(result, *fragments):
    """Exit status 2, one line on stderr holding every fragment, no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def write_dicom(path: Path, stored: np.ndarray, slope: float = 1.0, intercept: float = 0.0, window=None,
                bits_stored: int = 12) -> None:
    """A CT-like DICOM file as scanners write them: stored values, rescale slope/intercept, a window."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Modality = "CT"
    dataset.Rows, dataset.Columns = stored.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, bits_stored, bits_stored - 1
    dataset.PixelRepresentation = 0
    dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    dataset.PixelData = stored.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
