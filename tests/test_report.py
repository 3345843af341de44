import base64
import csv
from html.parser import HTMLParser

import pytest

from byol import pretrain
from byol.commands.cli import main
from byol.commands.report import report
from conftest import tiny_settings


class Page(HTMLParser):
    """Collects <img> sources and table rows, and checks that every opened tag is closed."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.images, self.rows, self.open = [], 0, []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag == "tr":
            self.rows += 1
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open.pop() == tag, f"</{tag}> closes nothing"


@pytest.fixture
def two_runs(tiny_idx, tmp_path):
    runs = [tmp_path / "byol-run", tmp_path / "simclr-run"]
    pretrain(**tiny_settings(tiny_idx, runs[0], linear_probe=False))
    pretrain(**tiny_settings(tiny_idx, runs[1], method="simclr", linear_probe=False))
    return runs


def test_simclr_run_logs_no_target_momentum(two_runs):
    rows = list(csv.DictReader((two_runs[1] / "metrics.csv").open()))
    assert [r["target_momentum"] for r in rows] == ["", ""]
    assert all(float(r["collapse_std"]) > 0 and r["knn_top1"] for r in rows)
    assert (two_runs[1] / "encoder.safetensors").is_file()


def test_report_is_valid_html_that_embeds_every_figure(two_runs, tmp_path):
    out = tmp_path / "report"
    page_path = report([str(r) for r in two_runs], out=str(out), map_images=64, device="cpu")
    page = Page()
    page.feed(page_path.read_text())
    page.close()
    assert page.open == []  # every tag closed: </html> last
    pngs = sorted(out.glob("*.png"))
    names = {p.name for p in pngs}
    assert {"loss.png", "knn.png", "schedules.png", "collapse.png", "map-1.png", "map-2.png"} <= names
    embedded = {base64.b64decode(src.split(",", 1)[1]) for src in page.images if src.startswith("data:image/png;base64,")}
    assert len(page.images) == len(pngs) and all(p.read_bytes() in embedded for p in pngs)
    assert page.rows == 3  # header + one row per run
    text = page_path.read_text()
    assert "method=simclr" in text and "byol-run" in text and "simclr-run" in text


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "is not a byol run directory" in error and "Traceback" not in error and len(error.splitlines()) == 1
