"""Each reader on small files written in exactly the format the real datasets ship in."""
import csv
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from byol.data import DataError, detect_format, load_dataset, read_idx
from conftest import RNG, save, small_class_folder, write_csv, write_idx


def test_idx_plain_and_gz_keep_pixels_labels_and_order(tmp_path):
    images = RNG.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9, 2])
    for suffix in ("", ".gz"):
        folder = tmp_path / f"mnist{suffix or '-plain'}"
        folder.mkdir()
        write_idx(folder / f"train-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"train-labels-idx1-ubyte{suffix}", labels)
        write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", images[:3])
        write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", labels[:3])
        dataset = load_dataset(folder)
        assert detect_format(folder) == "idx"
        assert dataset.train.images.shape == (7, 1, 28, 28) and dataset.train.images.dtype == torch.uint8
        assert torch.equal(dataset.train.images[:, 0], torch.from_numpy(images))
        assert dataset.train.labels.tolist() == labels.tolist() and dataset.test.labels.tolist() == [3, 1, 4]


def test_idx_truncated_file_is_a_clear_error(tmp_path):
    write_idx(tmp_path / "x", RNG.integers(0, 256, size=(4, 5, 5)))
    (tmp_path / "x").write_bytes((tmp_path / "x").read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "x")


def cifar_rows(n):
    images = RNG.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    return images, images.reshape(n, 3072)  # R plane, G plane, B plane: row-major per plane


def test_cifar10_python_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    all_images, all_labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images, rows = cifar_rows(4)
        labels = RNG.integers(0, 10, size=4).tolist()
        with open(folder / name, "wb") as handle:  # as the originals: bytes keys, list labels
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": rows}, handle, protocol=2)
        all_images.append(images)
        all_labels.append(labels)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)]}, handle, protocol=2)
    dataset = load_dataset(tmp_path)  # the folder that holds cifar-10-batches-py/
    assert dataset.name == "cifar10" and dataset.classes[3] == "class3"
    assert dataset.train.images.shape == (20, 3, 32, 32)
    assert torch.equal(dataset.train.images, torch.from_numpy(np.concatenate(all_images[:5])))
    assert dataset.train.labels.tolist() == sum(all_labels[:5], [])
    assert torch.equal(dataset.test.images, torch.from_numpy(all_images[5]))


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    images, rows = cifar_rows(6)
    fine, coarse = [5, 99, 0, 42, 7, 7], [1, 19, 0, 3, 2, 2]
    for name in ("train", "test"):
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": rows, b"fine_labels": fine, b"coarse_labels": coarse}, handle, protocol=2)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({b"fine_label_names": [f"f{i}".encode() for i in range(100)]}, handle, protocol=2)
    dataset = load_dataset(folder)
    assert dataset.name == "cifar100" and len(dataset.classes) == 100
    assert dataset.train.labels.tolist() == fine and torch.equal(dataset.train.images, torch.from_numpy(images))


def test_stl10_binary_with_unlabeled_split(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    train = RNG.integers(0, 256, size=(3, 3, 96, 96), dtype=np.uint8)
    unlabeled = RNG.integers(0, 256, size=(5, 3, 96, 96), dtype=np.uint8)
    test = RNG.integers(0, 256, size=(2, 3, 96, 96), dtype=np.uint8)
    for name, images in (("train_X.bin", train), ("unlabeled_X.bin", unlabeled), ("test_X.bin", test)):
        images.transpose(0, 1, 3, 2).tofile(folder / name)  # STL-10 stores each plane column-major
    np.array([1, 10, 3], dtype=np.uint8).tofile(folder / "train_y.bin")
    np.array([2, 2], dtype=np.uint8).tofile(folder / "test_y.bin")
    (folder / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    dataset = load_dataset(tmp_path)
    assert dataset.name == "stl10" and dataset.train.labels is None  # pre-training: train + unlabeled
    assert torch.equal(dataset.train.images, torch.from_numpy(np.concatenate([train, unlabeled])))
    assert dataset.eval_train.labels.tolist() == [0, 9, 2] and torch.equal(dataset.eval_train.images, torch.from_numpy(train))
    assert dataset.test.labels.tolist() == [1, 1] and dataset.num_classes == 10


def test_medmnist_npz(tmp_path):
    gray = RNG.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    rgb = RNG.integers(0, 256, size=(3, 28, 28, 3), dtype=np.uint8)
    np.savez(tmp_path / "pneumoniamnist.npz", train_images=gray, train_labels=np.array([[0], [1], [1], [0], [0], [1]]),
             val_images=gray[:2], val_labels=np.array([[0], [1]]), test_images=gray[:3], test_labels=np.array([[1], [0], [1]]))
    dataset = load_dataset(tmp_path / "pneumoniamnist.npz")
    assert dataset.train.images.shape == (6, 1, 28, 28) and dataset.train.labels.tolist() == [0, 1, 1, 0, 0, 1]
    assert dataset.test.labels.tolist() == [1, 0, 1]
    np.savez(tmp_path / "bloodmnist.npz", train_images=rgb, train_labels=np.array([[2], [0], [7]]))
    dataset = load_dataset(tmp_path / "bloodmnist.npz")
    assert torch.equal(dataset.train.images, torch.from_numpy(rgb.transpose(0, 3, 1, 2).copy()))




def test_class_subfolders_with_train_and_test(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for name in ("cat", "dog"):
            for i in range(n):
                save(tmp_path / split / name / f"{i}.png", np.full((20, 30, 3), 40 * i, dtype=np.uint8))
    dataset = load_dataset(tmp_path).prepared(16)
    # aspect ratio kept: the 20 x 30 images at their own size (under twice the 16 px views)
    assert dataset.classes == ("cat", "dog") and dataset.train.images.shape == (6, 3, 20, 30)
    assert dataset.train.labels.tolist() == [0, 0, 0, 1, 1, 1] and dataset.test.labels.tolist() == [0, 0, 1, 1]
    assert dataset.train.images[1].float().mean().item() == pytest.approx(40, abs=1)


def test_unlabeled_folder_is_recursive_and_any_extension(tmp_path):
    save(tmp_path / "a" / "deep" / "x.jpg", RNG.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    save(tmp_path / "b.bmp", RNG.integers(0, 256, (10, 10, 3), dtype=np.uint8))
    save(tmp_path / "c.webp", RNG.integers(0, 256, (33, 21, 3), dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    dataset = load_dataset(tmp_path).prepared(8)
    assert detect_format(tmp_path) == "folder"
    # shorter sides decoded at 16 (twice the view), every image at the top-left of one canvas
    assert dataset.train.images.shape[:2] == (3, 3) and dataset.train.labels is None
    assert sorted(map(tuple, dataset.train.sizes.tolist())) == [(16, 16), (16, 16), (25, 16)]


def mixed_mode_folder(folder):
    """One image per PIL mode, one rotated by EXIF, and the usual broken files."""
    gray = np.tile(np.linspace(0, 255, 16, dtype=np.uint8), (16, 1))
    save(folder / "one_bit.png", gray > 127)
    save(folder / "l.png", gray, "L")
    Image.fromarray(gray, "L").convert("LA").save(folder / "la.png")
    Image.fromarray(np.stack([gray] * 3, -1)).convert("P", palette=Image.ADAPTIVE).save(folder / "p.png")
    Image.fromarray(np.stack([gray] * 3, -1)).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(np.stack([gray] * 3, -1)).convert("CMYK").save(folder / "cmyk.jpg")
    sixteen = Image.fromarray(gray.astype(np.uint16) * 257)
    assert sixteen.mode.startswith("I;16")
    sixteen.save(folder / "sixteen.png")
    save(folder / "rgb.jpg", np.stack([gray] * 3, -1))
    # EXIF orientation 6: the stored pixels must turn 90° clockwise to display upright.
    stored = np.zeros((16, 16, 3), dtype=np.uint8)
    stored[:, :4] = 255  # a bright left edge that, displayed, is the top edge
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(folder / "rotated.jpg", exif=exif)
    (folder / "empty.png").write_bytes(b"")
    (folder / "not_an_image.jpg").write_text("hello")
    full = folder / "truncated.png"
    save(full, RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    full.write_bytes(full.read_bytes()[:200])


def test_every_image_mode_and_broken_files(tmp_path, capsys):
    mixed_mode_folder(tmp_path / "mixed")
    dataset = load_dataset(tmp_path / "mixed").prepared(16)
    warning = capsys.readouterr().err
    assert "skipped 3 unreadable image files" in warning and warning.count("\n") == 1
    assert all(name in warning for name in ("empty.png", "not_an_image.jpg", "truncated.png"))
    images = dataset.train.images
    # RGB: some images are colour modes; 16-bit: one image is, and keeps its levels (8-bit ones scale by 257)
    assert images.shape == (9, 3, 16, 16) and images.dtype == torch.uint16
    names = ["cmyk", "l", "la", "one_bit", "p", "rgb", "rgba", "rotated", "sixteen"]  # sorted file order
    by_name = dict(zip(names, (image.float() / 257 for image in images)))  # back on the 8-bit scale
    ramp = by_name["l"][0].float()
    for name in ("la", "p", "rgba", "sixteen", "rgb", "cmyk"):
        assert (by_name[name][0].float() - ramp).abs().mean() < 6, name  # the same ramp, whatever the mode
    assert by_name["one_bit"].max() == 255 and by_name["one_bit"].min() == 0
    sixteen = images[names.index("sixteen")][0].float()
    assert torch.allclose(sixteen, torch.tensor(np.tile(np.linspace(0, 255, 16, dtype=np.uint8), (16, 1))).float() * 257)
    rotated = by_name["rotated"].float().mean(0)
    assert rotated[:3].mean() > 200 and rotated[-6:].mean() < 50  # EXIF applied: bright edge on top
    with pytest.raises(DataError, match="3 unreadable image files"):
        load_dataset(tmp_path / "mixed", strict=True).prepared(16, strict=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_permissions_are_skipped(tmp_path, capsys):
    save(tmp_path / "ok.png", np.zeros((8, 8, 3), np.uint8))
    save(tmp_path / "locked.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "locked.png").chmod(0)
    assert len(load_dataset(tmp_path).prepared(8).train.images) == 1
    assert "locked.png" in capsys.readouterr().err


def test_grayscale_folder_stays_one_channel(tmp_path):
    for i in range(3):
        save(tmp_path / f"{i}.png", np.full((12, 12), 10 * i, dtype=np.uint8), "L")
    assert load_dataset(tmp_path).prepared(12).train.images.shape == (3, 1, 12, 12)




def test_csv_next_to_an_image_folder(tmp_path):
    for i in range(4):
        save(tmp_path / "images" / f"{i:03d}.png", np.full((24, 24, 3), 50 * i, dtype=np.uint8))
    write_csv(tmp_path / "grades.csv", [("images/000.png", 2), ("images/001.png", 0), ("images/002.png", 1), ("images/003.png", 0)])
    dataset = load_dataset(tmp_path / "grades.csv").prepared(16)
    assert detect_format(tmp_path / "grades.csv") == "csv"
    assert dataset.train.labels.tolist() == [2, 0, 1, 0] and dataset.train.images.shape == (4, 3, 24, 24)
    assert dataset.train.images[2].float().mean().item() == pytest.approx(100, abs=1)


def test_csv_errors_are_one_line_and_clear(tmp_path):
    save(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    write_csv(tmp_path / "missing.csv", [("a.png", 0), ("nope.png", 1)])
    with pytest.raises(DataError, match="names 1 images not found"):
        load_dataset(tmp_path / "missing.csv")
    write_csv(tmp_path / "escape.csv", [("a.png", 0), ("../outside.png", 1)])
    with pytest.raises(DataError, match="outside"):
        load_dataset(tmp_path / "escape.csv")
    (tmp_path / "noheader.csv").write_text("a.png,0\n")
    with pytest.raises(DataError, match=r"no image column among its columns \(a.png, 0\)"):
        load_dataset(tmp_path / "noheader.csv")


def test_empty_folder_and_unknown_format(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "data.bin").write_bytes(b"123")
    with pytest.raises(DataError, match="neither .npz"):
        load_dataset(tmp_path / "data.bin")
    with pytest.raises(DataError, match="unknown format"):
        load_dataset(tmp_path / "empty", dataset="imagenet")


def test_reading_writes_nothing_into_the_data_folder(tmp_path):
    mixed_mode_folder(tmp_path / "mixed")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "mixed").iterdir())
    load_dataset(tmp_path / "mixed").prepared(8)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "mixed").iterdir()) == before




def test_streamed_and_in_memory_paths_give_the_same_images(tmp_path):
    root = small_class_folder(tmp_path / "folder")
    in_memory = load_dataset(root).prepared(16, stream=False)
    streamed = load_dataset(root).prepared(16, stream=True)
    assert in_memory.train.images is not None and streamed.train.images is None and streamed.train.files is not None
    assert len(streamed.train) == len(in_memory.train) == 18 and in_memory.train.image_shape == (3, 20, 24)
    order = torch.tensor([5, 17, 0, 3, 3, 9, 12, 1])
    a = torch.cat([batch.images for batch in in_memory.train.batches(order, 3, "cpu")])
    b = torch.cat([batch.images for batch in streamed.train.batches(order, 3, "cpu")])
    assert torch.equal(a, b) and torch.equal(a, in_memory.train.images[order])
    assert torch.equal(streamed.train.labels, in_memory.train.labels)
    assert len(list(streamed.train.batches(order, 3, "cpu", drop_last=True))) == 2


def test_memory_rule_decodes_smaller_before_it_streams(tmp_path):
    root = small_class_folder(tmp_path / "folder")  # 18 training images of 20 x 24
    # views of 16 px: shorter sides decoded at 20 (their own size, under twice 16) when they fit,
    # else at 19 (the paper's 256/224 above the view), else the files stream
    at_20, at_19 = 18 * 3 * 20 * 24, 18 * 3 * 19 * 23
    assert load_dataset(root).prepared(16, budget=at_20).train.images.shape[2:] == (20, 24)
    assert load_dataset(root).prepared(16, budget=at_20 - 1).train.images.shape[2:] == (19, 23)
    assert load_dataset(root).prepared(16, budget=at_19 - 1).train.images is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_jpeg_decoding_matches_the_cpu_path(tmp_path):
    for i in range(6):
        pixels = np.zeros((40, 56, 3), dtype=np.uint8)
        pixels[:, : 8 * (i + 1)] = (200, 40 * i, 90)
        Image.fromarray(pixels).save(tmp_path / f"{i}.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    save(tmp_path / "plain.png", pixels)  # not a JPEG: decoded on the CPU, then moved
    streamed = load_dataset(tmp_path).prepared(32, stream=True).train
    order = torch.arange(len(streamed))
    gpu_batches, cpu_batches = list(streamed.batches(order, 4, "cuda")), list(streamed.batches(order, 4, "cpu"))
    on_gpu, on_cpu = torch.cat([b.images for b in gpu_batches]), torch.cat([b.images for b in cpu_batches])
    # the rotated file stands 56 high: every image is padded to the 56 x 56 canvas, its own size kept
    assert on_gpu.is_cuda and on_gpu.shape == on_cpu.shape == (8, 3, 56, 56)
    for gpu, cpu in zip(gpu_batches, cpu_batches):
        assert torch.equal(gpu.sizes.cpu(), cpu.sizes)
    # nvJPEG and libjpeg differ in their colour conversion by a level or two.
    assert (on_gpu.cpu().float() - on_cpu.float()).abs().mean() < 3


def drac_layout(root, n=12, grades=(0, 1, 2)):
    """DRAC22 task 3 as it ships: images in one folder, the grades in a CSV in another."""
    images = root / "1. Original Images" / "a. Training Set"
    labels = root / "2. Groundtruths" / "a. DRAC2022_ Diabetic Retinopathy Grading_Training Labels.csv"
    labels.parent.mkdir(parents=True)
    rows = []
    for i in range(n):
        save(images / f"{82 + i}.png", np.full((24, 24, 3), 30 * grades[i % 3], np.uint8))
        rows.append((f"{82 + i}.png", grades[i % 3]))
    write_csv(labels, rows, header=("image name", "DR grade"))
    return labels, images


def test_drac22_layout_as_it_ships(tmp_path):
    labels, images = drac_layout(tmp_path)
    dataset = load_dataset(labels, images=str(images))
    assert dataset.train.labels.tolist() == [0, 1, 2] * 4 and dataset.train.names[0] == "82.png"
    assert dataset.prepared(16).train.images.shape == (12, 3, 24, 24)
    with pytest.raises(DataError, match="12 images not found in .*2. Groundtruths.*point images at the folder"):
        load_dataset(labels)  # the images are not beside the CSV
    with pytest.raises(DataError, match=r"no column 'grade level' \(label_column\); its columns are: image name, DR grade"):
        load_dataset(labels, images=str(images), label_column="grade level")
    (images / "85.png").unlink()
    with pytest.raises(DataError, match=r"names 1 images not found .*first: 85.png"):
        load_dataset(labels, images=str(images))


def test_grading_csvs_with_ids_instead_of_files(tmp_path):
    for i, grade in enumerate((0, 2, 4)):  # EyePACS: image, level; files are ids + .jpeg
        save(tmp_path / "train" / f"{10 + i}_left.jpeg", np.full((20, 20, 3), 50 * i, np.uint8))
    write_csv(tmp_path / "trainLabels.csv", [("10_left", 0), ("11_left", 2), ("12_left", 4)], header=("image", "level"))
    eyepacs = load_dataset(tmp_path / "trainLabels.csv", images=str(tmp_path / "train"))
    assert eyepacs.train.labels.tolist() == [0, 2, 4] and eyepacs.train.names == ["10_left.jpeg", "11_left.jpeg", "12_left.jpeg"]
    write_csv(tmp_path / "aptos.csv", [("10_left", 1), ("12_left", 0)], header=("id_code", "diagnosis"))
    assert load_dataset(tmp_path / "aptos.csv", images=str(tmp_path / "train")).train.labels.tolist() == [1, 0]
    write_csv(tmp_path / "odd.csv", [("10_left", 1)], header=("picture", "score"))
    with pytest.raises(DataError, match=r"no image column among its columns \(picture, score\); name it with image_column"):
        load_dataset(tmp_path / "odd.csv", images=str(tmp_path / "train"))
    odd = load_dataset(tmp_path / "odd.csv", images=str(tmp_path / "train"), image_column="picture", label_column="score")
    assert odd.train.labels.tolist() == [1]


def test_pretraining_sources_add_images_but_not_labels(tmp_path):
    from byol.data import with_unlabeled

    labels, images = drac_layout(tmp_path / "drac")
    for i in range(5):
        save(tmp_path / "test-images" / f"{i}.png", np.zeros((30, 24, 3), np.uint8))
    splits = with_unlabeled(load_dataset(labels, images=str(images)), [load_dataset(tmp_path / "test-images")])
    assert len(splits.train) == 17 and splits.train.labels is None
    assert splits.eval_train.labels.tolist() == [0, 1, 2] * 4  # evaluation keeps the labelled 12
    prepared = splits.prepared(16)
    assert prepared.train.images.shape[0] == 17 and prepared.train.sizes is not None  # 24 x 24 and 30 x 24 mixed


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["folder", "csv"])
def test_thousands_of_files_load_into_memory_under_a_small_open_file_limit(tmp_path, layout):
    import resource
    import subprocess
    import sys

    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5000):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    data = folder
    if layout == "csv":
        write_csv(tmp_path / "grades.csv", [(f"many/{i:04d}.png", i % 3) for i in range(5000)])
        data = tmp_path / "grades.csv"
    limit = 256  # far fewer descriptors than files: one per image would run out
    result = subprocess.run(
        [sys.executable, "-m", "byol", "pretrain", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1",
         "--batch-size", "500", "--image-size", "8", "--hidden-dim", "32", "--no-stream", "--device", "cpu"],
        capture_output=True, text=True, timeout=600,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "5000 images" in result.stdout and "in memory" in result.stdout
    assert (tmp_path / "run" / "encoder.safetensors").is_file()


def test_four_band_sixteen_bit_tiffs_keep_their_bands_and_levels(tmp_path):
    import tifffile

    from byol.views.ops import eval_view

    rng = np.random.default_rng(0)
    (tmp_path / "tiles").mkdir()
    for i in range(6):
        tifffile.imwrite(tmp_path / "tiles" / f"{i}.tif", rng.integers(0, 65535, (20, 24, 4), dtype=np.uint16))
    base = np.full((20, 24, 4), 30000, np.uint16)
    tifffile.imwrite(tmp_path / "tiles" / "a.tif", base)
    tifffile.imwrite(tmp_path / "tiles" / "b.tif", base + 100)  # 100 levels: below one 8-bit step (257)
    dataset = load_dataset(tmp_path / "tiles").prepared(16)
    images = dataset.train.images
    assert images.shape == (8, 4, 20, 24) and images.dtype == torch.uint16
    names = dataset.train.names
    a, b = images[names.index("a.tif")], images[names.index("b.tif")]
    assert int(b[2, 5, 5]) - int(a[2, 5, 5]) == 100
    mean, std = dataset.channel_stats()
    views = (eval_view(torch.stack([a, b]), 16) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    assert (views[1] - views[0]).abs().min() > 0  # the two images stay apart after normalisation


def test_dicom_rescale_and_window_are_applied_and_the_bit_depth_kept(tmp_path):
    from conftest import write_dicom

    stored = np.tile(np.arange(0, 4000, 250, dtype=np.uint16), (16, 1))  # 16 columns of stored values
    write_dicom(tmp_path / "ct" / "a.dcm", stored, slope=1.0, intercept=-1024.0, window=(40.0, 400.0))
    write_dicom(tmp_path / "ct" / "b.dcm", stored, slope=2.0, intercept=-1024.0)  # no window: the stored range
    dataset = load_dataset(tmp_path / "ct").prepared(16)
    assert dataset.train.images.dtype == torch.uint16 and dataset.train.images.shape == (2, 1, 16, 16)
    a = dataset.train.images[dataset.train.names.index("a.dcm"), 0, 0].double()
    hounsfield = stored[0].astype(float) - 1024  # slope 1, intercept -1024
    expected = np.clip((hounsfield - (40 - 200)) / 400, 0, 1) * 65535  # window 40 +- 200 onto 16 bits
    assert np.abs(a.numpy() - expected).max() <= 1
    b = dataset.train.images[dataset.train.names.index("b.dcm"), 0, 0].double().numpy()
    assert b[0] == 0 and b[-1] == 65535  # the file's whole range
    narrow = load_dataset(tmp_path / "ct", window=(0.0, 100.0)).prepared(16).train.images[0, 0, 0].double().numpy()
    assert (narrow == 65535).sum() > (a.numpy() == 65535).sum()  # a narrower window given by the user saturates more
