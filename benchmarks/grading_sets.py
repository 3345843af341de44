"""Grading sets shaped like DRAC22 task 3, written in its on-disk layout: a few hundred images
with three imbalanced grades (328 / 213 / 70), the grades in a CSV in another folder, and
unlabeled "test" images beside them.  Nothing is downloaded; every image is synthesised.

    python benchmarks/grading_sets.py octa --out data/octa-a --seed 0 --size 512
    python benchmarks/grading_sets.py fundus --out data/fundus-a --seed 0
    python benchmarks/grading_sets.py fundus --out data/fundus-b --seed 1 --size 96 --style dim
    python benchmarks/grading_sets.py shoes --out data/shoes          # from Fashion-MNIST's shoes

octa: what DRAC22's images are — single-channel en-face OCTA scans of the superficial retina.
A bright capillary mesh on a dark ground (the zero crossings of band-passed noise: a network
of thin, connected, roughly polygonal loops), large vessels branching from the disc's side and
arching around the fovea, the foveal avascular zone (FAZ) at the centre; then the grade, as DR
shows in OCTA: non-perfusion areas (the mesh gone from irregular patches, their area rising
with the grade), an enlarged, irregular FAZ, microaneurysms (small bright dots, many near the
drop-out), and for grade 2 neovascular tufts (dense tangles of small bright loops); then what
the scanner adds: speckle, a gain and an offset per scan, vignetting, blur, and motion lines.
Every set draws its own scanner and anatomy (mesh scale, vessel count and width, noise, disc
side) from its seed, so two seeds give two unlike sets.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from byol.data import load_dataset

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


def shoes_set(out: Path, seed: int, unlabeled: int) -> None:
    fashion = load_dataset()  # Fashion-MNIST, the Debian package's
    images, labels = fashion.train.images[:, 0].numpy(), fashion.train.labels.numpy()
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


@dataclass(frozen=True)
class Scanner:
    """What one OCTA set shares: its anatomy's scale and its scanner's look (drawn from the seed)."""

    mesh_period: float    # capillary loop size, as a share of the side
    mesh_width: float     # line thickness of the capillaries
    vessels: int          # large vessels leaving the disc's side
    vessel_width: float   # their width at the root, as a share of the side
    disc_side: float      # angle (radians) of the side the large vessels come from
    speckle: float        # multiplicative noise strength
    blur: float           # px at 512
    faz: float            # healthy FAZ radius, as a share of the side

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "Scanner":
        return cls(rng.uniform(0.014, 0.024), rng.uniform(0.18, 0.28), int(rng.integers(3, 6)),
                   rng.uniform(0.008, 0.013), rng.choice([0.0, np.pi]) + rng.normal(0, 0.2), rng.uniform(0.15, 0.3),
                   rng.uniform(0.4, 1.0), rng.uniform(0.035, 0.05))


def _band_noise(rng: np.random.Generator, size: int, period: float) -> np.ndarray:
    """White noise band-passed around spatial ``period`` (a share of the side), unit variance."""
    fy, fx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    radius = np.hypot(fy, fx) * period * size  # 1 at the chosen frequency
    band = np.exp(-((radius - 1.0) ** 2) / (2 * 0.25 ** 2))
    field = np.fft.ifft2(np.fft.fft2(rng.normal(size=(size, size))) * band).real
    return field / (field.std() + 1e-9)


def _smooth_noise(rng: np.random.Generator, size: int, period: float) -> np.ndarray:
    fy, fx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    low = np.exp(-(np.hypot(fy, fx) * period * size) ** 2)
    field = np.fft.ifft2(np.fft.fft2(rng.normal(size=(size, size))) * low).real
    return field / (field.std() + 1e-9)


def _curve(rng: np.random.Generator, start, heading: float, steps: int, step: float, wiggle: float,
           bend=None) -> list[tuple[float, float]]:
    points, (x, y) = [start], start
    for _ in range(steps):
        heading += rng.normal(0, wiggle) + (bend(x, y, heading) if bend else 0.0)
        x, y = x + np.cos(heading) * step, y + np.sin(heading) * step
        points.append((x, y))
    return points


def octa(rng: np.random.Generator, grade: int, size: int, scanner: Scanner) -> Image.Image:
    """One en-face OCTA scan of ``grade`` (see the module docstring), gray, ``size`` px."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    centre = 0.5 + rng.normal(0, 0.03, 2)
    distance = np.hypot(yy - centre[0], xx - centre[1])
    # the capillary mesh: thin lines where band-passed noise crosses zero, density varying slowly
    mesh = np.exp(-(_band_noise(rng, size, scanner.mesh_period) / scanner.mesh_width) ** 2)
    mesh *= np.clip(0.75 + 0.25 * _smooth_noise(rng, size, 0.25), 0.3, 1.2)
    # the FAZ, larger and more irregular with the grade
    faz = scanner.faz * (1 + 0.35 * grade + rng.uniform(-0.15, 0.25)) * size
    wobble = 1 + (0.08 + 0.12 * grade) * _smooth_noise(rng, size, 0.08)
    perfused = distance * size * wobble > faz
    # non-perfusion areas: patches of drop-out whose total area rises with the grade
    patches = {0: rng.integers(0, 2), 1: rng.integers(1, 5), 2: rng.integers(3, 8)}[grade]
    dropout = np.zeros((size, size), bool)
    for _ in range(patches):
        cy, cx = rng.uniform(0.12, 0.88, 2)
        radius = rng.uniform(0.03, 0.07) * (0.5 if grade == 0 else 1.0 + 0.35 * grade)
        shape = np.hypot((yy - cy) / rng.uniform(0.6, 1.4), xx - cx) / radius + 0.35 * _smooth_noise(rng, size, 0.05)
        dropout |= shape < 1
    image = 0.85 * mesh * perfused * ~dropout
    # large vessels: branching trees from the disc's side, arching around the fovea
    picture = Image.new("L", (2 * size, 2 * size))
    draw = ImageDraw.Draw(picture)
    origin = (centre[1] + 0.7 * np.cos(scanner.disc_side), centre[0] + 0.7 * np.sin(scanner.disc_side))

    def away_from_fovea(x, y, heading):
        dx, dy = x - centre[1], y - centre[0]
        return 0.05 * np.sign(np.cos(heading) * dy - np.sin(heading) * dx) if np.hypot(dx, dy) < 0.22 else 0.0

    for branch in range(scanner.vessels):  # each a tapering trunk with tapering side branches
        heading = scanner.disc_side + np.pi + rng.normal(0, 0.7)
        width = scanner.vessel_width * rng.uniform(0.7, 1.2)
        trunk = _curve(rng, origin, heading, 50, 0.02, 0.07, away_from_fovea)
        stems = [(trunk, width)]
        for at in range(8, len(trunk) - 8, int(rng.integers(8, 14))):
            side = heading + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
            stems.append((_curve(rng, trunk[at], side, 20, 0.015, 0.15, away_from_fovea),
                          width * 0.6 * (1 - at / len(trunk))))
        for points, w in stems:
            for k in range(len(points) - 1):
                taper = w * (1 - 0.6 * k / len(points))
                segment = [(x * 2 * size, y * 2 * size) for x, y in points[k:k + 2]]
                draw.line(segment, fill=int(rng.uniform(200, 255)), width=max(1, int(taper * 2 * size)))
    vessels = np.asarray(picture.resize((size, size), Image.BILINEAR), np.float64) / 255
    image = np.maximum(image, vessels)
    # microaneurysms near the drop-out, and neovascular tufts (grade 2)
    picture = Image.fromarray((image * 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    edge = np.argwhere(dropout & ~np.roll(dropout, 3, axis=0)) if dropout.any() else np.zeros((0, 2))
    for _ in range({0: rng.integers(0, 3), 1: rng.integers(4, 12), 2: rng.integers(6, 18)}[grade]):
        y, x = edge[rng.integers(len(edge))] if len(edge) and rng.uniform() < 0.7 else rng.uniform(0.1, 0.9, 2) * size
        r = size * rng.uniform(0.004, 0.008)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=int(rng.uniform(200, 255)))
    for _ in range(rng.integers(1, 4) if grade == 2 else 0):
        cy, cx = rng.uniform(0.2, 0.8, 2) * size
        for _ in range(rng.integers(12, 25)):
            loop = _curve(rng, (cx + rng.normal(0, size * 0.015), cy + rng.normal(0, size * 0.015)),
                          rng.uniform(0, 2 * np.pi), 10, size * 0.006, 0.9)
            draw.line(loop, fill=int(rng.uniform(170, 240)), width=max(1, size // 340))
    image = np.asarray(picture, np.float64) / 255
    # the scanner: blur, speckle, vignetting, gain and offset, motion lines
    image = np.asarray(Image.fromarray((image * 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(scanner.blur * size / 512)), np.float64) / 255
    image = image * rng.gamma(1 / scanner.speckle ** 2, scanner.speckle ** 2, (size, size))
    image *= 1 - 0.35 * np.clip(distance - 0.35, 0, None) / 0.35
    image = image * rng.uniform(0.6, 1.25) + rng.uniform(0.0, 0.08)
    for _ in range(rng.integers(0, 3)):
        row, height = int(rng.integers(0, size)), int(rng.integers(2, max(3, size // 40)))
        image[row:row + height] = np.roll(image[row:row + height], int(rng.integers(-size // 30, size // 30)), axis=1)
    return Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8), "L")


def octa_set(out: Path, seed: int, size: int, unlabeled: int) -> None:
    rng = np.random.default_rng(seed)
    scanner = Scanner.draw(rng)
    grades = [grade for grade, count in enumerate(COUNTS) for _ in range(count)]
    rng.shuffle(grades)
    images = [octa(rng, grade, size, scanner) for grade in grades]
    extra = [octa(rng, int(rng.choice(3, p=np.array(COUNTS) / sum(COUNTS))), size, scanner) for _ in range(unlabeled)]
    write_drac_layout(out, images, grades, extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=("octa", "fundus", "shoes"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--style", choices=("bright", "dim"), default="bright")
    parser.add_argument("--unlabeled", type=int, default=386, help="unlabeled 'test' images (DRAC22 has 386)")
    args = parser.parse_args()
    if args.kind == "octa":
        octa_set(Path(args.out), args.seed, args.size, args.unlabeled)
    elif args.kind == "fundus":
        fundus_set(Path(args.out), args.seed, args.size, args.style, args.unlabeled)
    else:
        shoes_set(Path(args.out), args.seed, args.unlabeled)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
