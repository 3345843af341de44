"""``byol report RUN_DIR...``: what the runs did, as PNGs and one self-contained HTML page.

Per run it reads ``config.yaml``, ``metrics.csv`` and ``results.json`` (written by
``byol pretrain``), and embeds the test images with ``encoder.safetensors`` for a t-SNE
map.  Figures: loss, k-NN accuracy against epoch and against wall-clock, learning rate
and τ, the collapse statistic, one map per run; then a table comparing the runs.  The
HTML carries every figure inside it (base64), so it can be mailed or archived alone.
"""
from __future__ import annotations

import base64
import dataclasses
import html
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

from ..base.device import resolve_device
from ..base.errors import UserError
from ..base.rundir import RunDir
from ..data import load_dataset
from ..evaluation.frozen import extract_features
from ..models.backbones import load_encoder
from ..models.methods import healthy_spread
from ..settings.mechanism import option, require
from ..settings.options import DeviceOption
from ..settings.pretrain import RESUMABLE_OPTIONS, PretrainConfig

# Settings that say where a run is or how it was launched, not what it learned: those a
# resume may change, and how the images were read.
NOT_COMPARED = RESUMABLE_OPTIONS | {"strict", "stream"}


@dataclass
class ReportConfig(DeviceOption):
    """Settings of ``byol report``."""

    run_dirs: tuple[str, ...] = option((), "run directories of byol pretrain", positional=True, metavar="RUN_DIR")
    out: str | None = option(None, "folder for report.html and the PNGs; default: RUN_DIR/report for one run, "
                             "./byol-report for several")
    map_images: int = option(2000, "test images in each t-SNE map; 0 skips the maps (they need the dataset and "
                             "take ~20 s per run on a CPU)")

    def check(self) -> None:
        super().check()
        require(self.map_images >= 0, "map_images", f"must be >= 0, got {self.map_images}")


@dataclass
class Run:
    name: str
    path: Path
    config: PretrainConfig
    metrics: list[dict]
    results: dict

    def series(self, column: str, x: str = "epoch") -> tuple[list[float], list[float]]:
        """(x, y) of the epochs where ``column`` has a value."""
        points = [(float(row[x]), float(row[column])) for row in self.metrics if row.get(column) not in (None, "")]
        return [p[0] for p in points], [p[1] for p in points]


def load_run(path: str | Path) -> Run:
    run = RunDir(path)
    if not run.is_run():
        raise UserError(f"{run.path} is not a byol run directory (no metrics.csv / config.yaml); give the --out "
                        "folder of a byol pretrain run")
    saved = run.load_config()
    config = PretrainConfig.create(**{k: v for k, v in saved.items() if k in PretrainConfig.names()})
    return Run(run.path.name, run.path, config, run.read_metrics(), run.read_results() or {})


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UserError("byol report needs matplotlib and scikit-learn: pip install 'byol[report]'") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _line_figure(plt, runs: list[Run], panels: list[tuple[str, str, str, str]], path: Path,
                 reference=None) -> Path:
    """One row of panels; each panel (column, x column, title, y label) has a line per run."""
    outside = len(runs) > 4  # a long legend goes right of the panels, not over the lines
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 2.2 * outside, 3.6), squeeze=False)
    colours = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20")  # one colour per run
    for axis, (column, x, title, label) in zip(axes[0], panels):
        for number, run in enumerate(runs):
            xs, ys = run.series(column, x)
            if x == "elapsed_s":
                xs = [value / 60 for value in xs]
            if ys:
                axis.plot(xs, ys, marker="o", markersize=3, label=run.name, color=colours(number % colours.N))
        if reference and column in reference:
            for value, text in reference[column]:
                axis.axhline(value, color="grey", linestyle="--", linewidth=1, label=text)
        axis.set_title(title)
        axis.set_xlabel("wall-clock minutes" if x == "elapsed_s" else "epoch")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    handles = {label: handle for axis in axes[0] for handle, label in zip(*axis.get_legend_handles_labels())}
    if handles:  # one legend per figure, on its last panel
        axes[0][-1].legend(handles.values(), handles.keys(), fontsize=7,
                           **({"loc": "upper left", "bbox_to_anchor": (1.02, 1)} if outside else {}))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def embed_test_images(run: Run, images: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None, tuple]:
    """Features of up to ``images`` test images (the training images when there is no test
    split), a seeded random sample; their labels (or None) and the class names."""
    config = run.config
    dataset = load_dataset(config.data, **config.read_options()).prepared(config.image_size, config.stream)
    images_set = dataset.test if dataset.test is not None else dataset.train
    mean, std = dataset.normalisation(config.mean, config.std)
    index = torch.randperm(len(images_set), generator=torch.Generator().manual_seed(config.seed))[:images]
    sample = images_set.subset(index.sort().values)
    encoder = load_encoder(RunDir(run.path).encoder).to(device)
    features = extract_features(encoder, sample, mean, std, config.image_size, device=device).cpu()
    return features, sample.labels, dataset.classes or ()


def embedding_map(plt, run: Run, images: int, device: torch.device, path: Path) -> Path | None:
    """t-SNE (scikit-learn) of the run's test embeddings, coloured by class."""
    if not RunDir(run.path).encoder.is_file():
        return None  # a stopped run has no final encoder yet
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    features, labels, classes = embed_test_images(run, images, device)
    points = features.double().numpy()
    if points.shape[1] > 50:  # the usual t-SNE preprocessing: PCA to 50 dimensions first
        points = PCA(50, random_state=0).fit_transform(points)
    points = TSNE(2, init="pca", perplexity=min(30.0, len(points) / 4), random_state=0).fit_transform(points)
    figure, axis = plt.subplots(figsize=(6.4, 5.4))
    if labels is None:
        axis.scatter(points[:, 0], points[:, 1], s=3, color="tab:blue")
    else:
        colours = plt.get_cmap("tab10" if int(labels.max()) < 10 else "tab20")
        for label in sorted(set(labels.tolist())):
            chosen = (labels == label).numpy()
            name = classes[label] if label < len(classes) else str(label)
            axis.scatter(points[chosen, 0], points[chosen, 1], s=3, color=colours(label % colours.N), label=name)
        axis.legend(fontsize=7, markerscale=3, loc="best")
    axis.set_title(f"{run.name}: t-SNE of {len(points)} test embeddings")
    axis.set_xticks([])
    axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def comparison_rows(runs: list[Run]) -> list[dict]:
    """One row per run: what differs from the first run, and how it ended."""
    first = dataclasses.asdict(runs[0].config)
    rows = []
    for run in runs:
        settings = dataclasses.asdict(run.config)
        changed = [f"{k}={settings[k]}" for k in settings if k not in NOT_COMPARED and settings[k] != first[k]]
        last = run.metrics[-1] if run.metrics else {}
        rows.append({
            "run": run.name,
            "method": run.config.method,
            "differs from the first run": ", ".join(changed) or "—",
            "epochs": last.get("epoch", "0"),
            "k-NN top-1 %": _percent(run.results.get("knn_top1")),
            "linear top-1 %": _percent(run.results.get("linear_top1")),
            "final collapse std": f"{float(last['collapse_std']):.4f}" if last.get("collapse_std") else "—",
            "minutes": f"{run.results['seconds'] / 60:.1f}" if "seconds" in run.results else
                       (f"{float(last['elapsed_s']) / 60:.1f}" if last.get("elapsed_s") else "—"),
        })
    return rows


def _percent(value) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) else "—"


def _unique_names(runs: list[Run]) -> None:
    """Runs named by their folder; a repeated folder name gets its parent's name in front."""
    names = [run.name for run in runs]
    for run in runs:
        if names.count(run.name) > 1:
            run.name = f"{run.path.parent.name}/{run.path.name}"


def write_html(path: Path, runs: list[Run], figures: list[tuple[str, Path]], maps: list[tuple[str, Path]],
               rows: list[dict]) -> None:
    def image(title: str, png: Path) -> str:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(title)}">'
                f"<figcaption>{html.escape(title)}</figcaption></figure>")

    header = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values()) + "</tr>"
                   for row in rows)
    sources = "".join(f"<li><code>{html.escape(str(run.path))}</code></li>" for run in runs)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>byol report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }}
th {{ background: #f3f3f3; }}
figure {{ margin: 1.5em 0; }}
.maps {{ display: flex; flex-wrap: wrap; gap: 1em; }}
.maps figure {{ width: 31%; min-width: 320px; margin: 0; }}
img {{ max-width: 100%; }}
figcaption {{ color: #555; font-size: 0.9em; }}
</style></head><body>
<h1>byol report</h1>
<p>{len(runs)} run(s), generated {datetime.now().strftime("%Y-%m-%d %H:%M")}:</p><ul>{sources}</ul>
<h2>Runs</h2>
<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>
<p>k-NN: weighted vote of the 200 nearest training embeddings (cosine); linear: logistic regression on
frozen features, L2 chosen on a validation split. Collapse std: spread of the L2-normalised projections
over a batch; 0 means collapsed, about 1/&radic;d is healthy.</p>
<h2>Figures</h2>
{"".join(image(title, png) for title, png in figures)}
<h2>Test embeddings</h2>
<div class="maps">{"".join(image(title, png) for title, png in maps) or "<p>No maps (--map-images 0).</p>"}</div>
</body></html>
"""
    path.write_text(page)


def report(run_dirs=(), *, config_file: str | None = None, **settings) -> Path:
    """Write report.html and the figures for ``run_dirs`` into ``out`` (default: RUN_DIR/report
    for one run, ./byol-report for several); returns the HTML file."""
    config = ReportConfig.create(config_file, **({"run_dirs": run_dirs} if run_dirs else {}), **settings)
    require(len(config.run_dirs) >= 1, "run_dirs", "needs at least one run directory")
    out, map_images = config.out, config.map_images
    runs = [load_run(path) for path in config.run_dirs]
    _unique_names(runs)
    plt = _pyplot()
    out_dir = Path(out) if out else (runs[0].path / "report" if len(runs) == 1 else Path("byol-report"))
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    healthy = sorted({healthy_spread(run.config.projection_dim) for run in runs})
    figures = [
        ("Training loss (mean over the epoch's last logging window)",
         _line_figure(plt, runs, [("loss", "epoch", "loss", "loss")], out_dir / "loss.png")),
        ("k-NN top-1 on the test split, against epoch and against wall-clock time",
         _line_figure(plt, runs, [("knn_top1", "epoch", "k-NN top-1 by epoch", "accuracy"),
                                  ("knn_top1", "elapsed_s", "k-NN top-1 by wall-clock", "accuracy")],
                      out_dir / "knn.png")),
        ("Learning rate and target momentum τ at the end of each epoch",
         _line_figure(plt, runs, [("lr", "epoch", "learning rate", "lr"),
                                  ("target_momentum", "epoch", "target momentum τ", "τ")], out_dir / "schedules.png")),
        ("Collapse statistic (dashed: the healthy 1/√d)",
         _line_figure(plt, runs, [("collapse_std", "epoch", "std of normalised projections", "std")],
                      out_dir / "collapse.png",
                      reference={"collapse_std": [(value, f"1/√{round(value ** -2)}") for value in healthy]})),
    ]
    maps = []
    if map_images > 0:
        for number, run in enumerate(runs):
            png = embedding_map(plt, run, map_images, device, out_dir / f"map-{number + 1}.png")
            if png:
                maps.append((f"{run.name}: test embeddings, t-SNE, coloured by class", png))
    page = out_dir / "report.html"
    write_html(page, runs, figures, maps, comparison_rows(runs))
    return page
