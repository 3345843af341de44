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


def test_the_pieces_section_trains_as_printed():
    import torch

    code = re.search(r"```python\n(.*?)```", section("Using the pieces in your own loop"), re.S).group(1)
    batches = [torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8) for _ in range(2)]
    namespace = {"batches": batches, "total_steps": 2, "mean": torch.full((3,), 0.5), "std": torch.full((3,), 0.25)}
    exec(compile(code, "README.md", "exec"), namespace)
    model = namespace["model"]
    assert not all(torch.equal(t, o) for t, o in model.ema_pairs())  # trained, and the target follows slowly


def test_the_map_of_the_package_names_every_module_and_nothing_else():
    block = re.search(r"```\nsrc/byol/\n(.*?)```", section("Where things are"), re.S).group(1)
    named, folders = set(), []
    for line in block.splitlines():
        match = re.match(r"( +)(\S+)", line)
        depth = len(match.group(1)) // 2 - 1
        if not match.group(2).endswith((".py", "/")):
            continue  # a continuation of the line above
        folders = folders[:depth]
        named.add("".join(folders) + match.group(2))
        if match.group(2).endswith("/"):
            folders.append(match.group(2))
    package = ROOT / "src" / "byol"
    present = {str(p.relative_to(package)) for p in package.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    present |= {str(p.parent.relative_to(package)) + "/" for p in package.rglob("__init__.py") if p.parent != package}
    assert named == present
