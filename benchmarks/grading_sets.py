"""Grading sets shaped like DRAC22 task 3, written in its on-disk layout: a few hundred RGB
images with three imbalanced grades (328 / 213 / 70), the grades in a CSV in another folder,
and unlabeled "test" images beside them.  Nothing is downloaded; every image is synthesised.

    python benchmarks/grading_sets.py fundus --out data/fundus-a --seed 0
    python benchmarks/grading_sets.py fundus --out data/fundus-b --seed 1 --size 96 --style dim
    python benchmarks/grading_sets.py shoes --out data/shoes          # from Fashion-MNIST's shoes

fundus: an orange-red retina on black with an optic disc and vessels; the grade is the lesion
load, small as in retinopathy — grade 0 none or one microaneurysm, grade 1 a few dark-red dots,
grade 2 many dots, blot haemorrhages and yellow exudates.  ``--style dim`` draws darker, greener
retinas with fainter lesions (a second, unlike set).
shoes: Fashion-MNIST's sandals, sneakers and ankle boots as grades 0 / 1 / 2 (how high the shoe
reaches), tinted and upscaled to 64 px, with APTOS's column names (id_code, diagnosis).
"""
from __future__ import annotations

import argparse
import csv
import gzip
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COUNTS = (328, 213, 70)  # DRAC22 task 3's grades 0 / 1 / 2


def _retina(rng: np.random.Generator, size: int, style: str) -> tuple[Image.Image, float, float, float]:
    """The fundus without lesions, and its disc's centre and radius."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cx, cy = size / 2 + rng.normal(0, size * 0.02, 2)
    radius = size * rng.uniform(0.43, 0.48)
    distance = np.hypot(xx - cx, yy - cy) / radius
    base = np.array([0.78, 0.35, 0.16]) if style == "bright" else np.array([0.45, 0.33, 0.17])
    base = base * rng.uniform(0.85, 1.15, 3)  # camera and pigment
    shade = np.clip(1.0 - 0.55 * distance ** 2.5, 0, 1)[..., None]  # vignetting
    texture = rng.normal(0, 0.025, (size, size, 1))
    image = np.clip(base * shade + texture, 0, 1) * (distance < 1)[..., None]
    picture = Image.fromarray((image * 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    angle = rng.uniform(0, 2 * np.pi)  # the optic disc, off-centre, and vessels leaving it
    ox, oy = cx + 0.55 * radius * np.cos(angle), cy + 0.55 * radius * np.sin(angle)
    disc = size * rng.uniform(0.06, 0.08)
    draw.ellipse([ox - disc, oy - disc, ox + disc, oy + disc], fill=(235, 205, 120))
    for _ in range(rng.integers(4, 7)):
        points, x, y, heading = [], ox, oy, rng.uniform(0, 2 * np.pi)
        for _ in range(12):
            heading += rng.normal(0, 0.3)
            x, y = x + np.cos(heading) * size * 0.05, y + np.sin(heading) * size * 0.05
            points.append((x, y))
        draw.line([(ox, oy)] + points, fill=(120, 25, 15), width=max(1, size // 64))
    inside = Image.fromarray(((distance < 1) * 255).astype(np.uint8))  # nothing is drawn outside the retina
    picture = Image.composite(picture, Image.new("RGB", picture.size), inside)
    return picture.filter(ImageFilter.GaussianBlur(0.6)), cx, cy, radius


def fundus(rng: np.random.Generator, grade: int, size: int, style: str) -> Image.Image:
    picture, cx, cy, radius = _retina(rng, size, style)
    draw = ImageDraw.Draw(picture)
    faint = 1.0 if style == "bright" else 0.7
    dots = {0: rng.integers(0, 2), 1: rng.integers(3, 9), 2: rng.integers(10, 26)}[grade]
    blots = {0: 0, 1: rng.integers(0, 2), 2: rng.integers(3, 9)}[grade]
    exudates = {0: 0, 1: 0, 2: rng.integers(4, 11)}[grade]

    def somewhere() -> tuple[float, float]:
        r, a = radius * 0.85 * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
        return cx + r * np.cos(a), cy + r * np.sin(a)

    for count, radius_px, colour in ((dots, size / 110, (90, 10, 10)), (blots, size / 45, (110, 15, 10)),
                                     (exudates, size / 90, (250, 225, 90))):
        for _ in range(count):
            x, y = somewhere()
            r = radius_px * rng.uniform(0.8, 1.4)
            paint = tuple(int(c * faint + (1 - faint) * 120) for c in colour)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=paint)
    return picture


def write_drac_layout(out: Path, images: list[Image.Image], grades: list[int], unlabeled: list[Image.Image],
                      columns: tuple[str, str] = ("image name", "DR grade")) -> None:
    training = out / "1. Original Images" / "a. Training Set"
    testing = out / "1. Original Images" / "b. Testing Set"
    labels = out / "2. Groundtruths" / "a. DRAC2022_ Diabetic Retinopathy Grading_Training Labels.csv"
    for folder in (training, testing, labels.parent):
        folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for number, (image, grade) in enumerate(zip(images, grades)):
        image.save(training / f"{82 + number}.png")
        rows.append((f"{82 + number}.png", grade))
    for number, image in enumerate(unlabeled):
        image.save(testing / f"{1000 + number}.png")
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)


def fundus_set(out: Path, seed: int, size: int, style: str, unlabeled: int) -> None:
    rng = np.random.default_rng(seed)
    grades = [grade for grade, count in enumerate(COUNTS) for _ in range(count)]
    rng.shuffle(grades)
    images = [fundus(rng, grade, size, style) for grade in grades]
    extra = [fundus(rng, int(rng.choice(3, p=np.array(COUNTS) / sum(COUNTS))), size, style) for _ in range(unlabeled)]
    write_drac_layout(out, images, grades, extra)


def shoes_set(out: Path, seed: int, unlabeled: int, fashion: Path = Path("/usr/share/datasets/fashion-mnist")) -> None:
    def read(name: str) -> np.ndarray:
        raw = gzip.open(fashion / name).read()
        dims = raw[3]
        shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
        return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)

    images, labels = read("train-images-idx3-ubyte.gz"), read("train-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.nonzero(labels == label)[0]) for label in (5, 7, 9)]  # sandal, sneaker, ankle boot
    grades = [grade for grade, count in enumerate(COUNTS) for _ in range(count)]
    rng.shuffle(grades)
    taken = [0, 0, 0]

    def picture(index: int) -> Image.Image:
        tint = rng.uniform(0.5, 1.0, 3)
        gray = images[index].astype(np.float64) / 255
        rgb = np.clip(gray[..., None] * tint + rng.uniform(0, 0.15), 0, 1)
        return Image.fromarray((rgb * 255).astype(np.uint8)).resize((64, 64), Image.BICUBIC)

    chosen = []
    for grade in grades:
        chosen.append(picture(pools[grade][taken[grade]]))
        taken[grade] += 1
    extra = [picture(pools[g][taken[g] + i]) for i, g in enumerate(rng.integers(0, 3, unlabeled))]
    write_drac_layout(out, chosen, grades, extra, columns=("id_code", "diagnosis"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=("fundus", "shoes"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--style", choices=("bright", "dim"), default="bright")
    parser.add_argument("--unlabeled", type=int, default=386, help="unlabeled 'test' images (DRAC22 has 386)")
    args = parser.parse_args()
    if args.kind == "fundus":
        fundus_set(Path(args.out), args.seed, args.size, args.style, args.unlabeled)
    else:
        shoes_set(Path(args.out), args.seed, args.unlabeled)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
