"""The README's promises that code can check: its Python section runs as printed, and its map
of the package names every module there is."""
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import save

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, title
    return match.group(1)


@pytest.mark.slow
def test_the_in_python_section_runs_as_printed(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("test", 16)):
        for label, colour in enumerate(((200, 40, 40), (40, 40, 200))):  # two classes a colour apart
            for i in range(n):
                pixels = rng.integers(0, 60, (40, 48, 3), dtype=np.uint8) + np.array(colour, np.uint8)
                save(tmp_path / "photos" / split / f"class{label}" / f"{i}.png", pixels)
    monkeypatch.chdir(tmp_path)
    code = re.search(r"```python\n(.*?)```", section("In Python"), re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["features"].shape == (2 * 64 + 2 * 16, namespace["encoder"].num_features)
    assert {row["init"] for row in namespace["comparison"].rows} == {"byol:runs/photos", "random"}
    assert (tmp_path / "runs" / "photos" / "encoder.safetensors").is_file()


def test_the_map_of_the_package_names_every_module_and_nothing_else():
    block = re.search(r"```\nsrc/byol/\n(.*?)```", section("Where things are"), re.S).group(1)
    named = {line.split()[0] for line in block.splitlines() if re.match(r"  \S", line)}  # not continuation lines
    package = ROOT / "src" / "byol"
    present = {p.name for p in package.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    present |= {p.name + "/" for p in package.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    named -= {"recipes/*.yaml"}  # data files, not modules
    assert named == present
