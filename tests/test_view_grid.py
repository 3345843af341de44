import numpy as np
from PIL import Image

from byol.commands.cli import main
from byol.commands.view_grid import GAP


def test_the_views_grid_has_a_row_per_image_and_the_original_then_the_pairs(tiny_idx, tmp_path, capsys):
    out = tmp_path / "views.png"
    assert main(["views", "--data", str(tiny_idx), "--out", str(out), "--rows", "5", "--pairs", "3",
                 "--scale", "2"]) == 0
    grid = np.asarray(Image.open(out))
    cell = 16 * 2  # 16 px images, drawn twice as large
    assert grid.shape == (5 * (cell + GAP) - GAP, (1 + 2 * 3) * (cell + GAP) - GAP, 3)
    first_row = grid[:cell]
    cells = [first_row[:, c * (cell + GAP):c * (cell + GAP) + cell] for c in range(7)]
    assert not any(np.array_equal(cells[0], other) for other in cells[1:])  # every view differs from the image
    assert "5 images (rows)" in capsys.readouterr().out


def test_views_follow_a_runs_settings(tiny_idx, tmp_path):
    from byol import pretrain

    pretrain(data=str(tiny_idx), out=str(tmp_path / "run"), epochs=1, batch_size=32, hidden_dim=16,
             linear_probe=False, augmentations="crop")
    assert main(["views", "--data", str(tiny_idx), "--run", str(tmp_path / "run"),
                 "--out", str(tmp_path / "crop.png"), "--rows", "2", "--pairs", "1", "--scale", "1"]) == 0
    grid = np.asarray(Image.open(tmp_path / "crop.png")).astype(int)
    assert grid.shape == (2 * 16 + GAP, 3 * 16 + 2 * GAP, 3)



def test_views_can_show_another_crop_scale(tiny_idx, tmp_path, capsys):
    arguments = ["views", "--data", str(tiny_idx), "--out", str(tmp_path / "v.png"), "--rows", "1", "--pairs", "1"]
    assert main(arguments + ["--crop-min-scale", "0.5", "--augmentations", "geometric"]) == 0
    printed = capsys.readouterr().out
    assert "geometric augmentations" in printed and "crops from 0.5 of the image" in printed
    assert main(arguments + ["--crop-min-scale", "0"]) != 0
    assert "crop-min-scale" in capsys.readouterr().err
