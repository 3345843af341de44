"""The recipe the rules in src/byol/recipes.py resolve for typical data kinds, as one Markdown
table (BENCHMARKS.md, "Settings from the data").  Nothing trains; the facts are given.

    .venv/bin/python benchmarks/recipe_table.py
"""
from byol.settings.pretrain import PretrainConfig
from byol.settings.recipes import DataFacts, derive

KINDS = {  # name: what the recipe knows before training
    "Fashion-MNIST, 28 px gray, CPU": DataFacts(60_000, 28, 1, 8, False, "cpu"),
    "611-image DRAC-like CSV set, 1024 px RGB files, CPU": DataFacts(611, 1024, 3, 8, True, "cpu"),
    "CIFAR-shaped, 32 px RGB arrays, CPU": DataFacts(50_000, 32, 3, 8, False, "cpu"),
    "CIFAR-shaped, 32 px RGB arrays, GPU": DataFacts(50_000, 32, 3, 8, False, "cuda"),
    "224 px RGB photo folder (20k), CPU": DataFacts(20_000, 256, 3, 8, True, "cpu"),
    "224 px RGB photo folder (20k), GPU": DataFacts(20_000, 256, 3, 8, True, "cuda"),
    "4-band 16-bit microscopy tiles (5k, 128 px), GPU": DataFacts(5_000, 128, 4, 16, True, "cuda"),
}
SHOWN = ("arch", "image_size", "batch_size", "epochs", "optimizer", "base_lr", "weight_decay", "warmup_epochs",
         "base_target_momentum", "hidden_dim", "blur", "crop_min_scale", "augmentations")

rows = {name: {setting: value for setting, value, _ in derive(PretrainConfig(), facts)} for name, facts in KINDS.items()}
print("| setting | " + " | ".join(KINDS) + " |")
print("| --- |" + " --- |" * len(KINDS))
for setting in SHOWN:
    print(f"| {setting} | " + " | ".join(str(rows[name][setting]) for name in KINDS) + " |")
print("\nWhy, for the DRAC-like set (as `byol pretrain` prints it):\n")
for setting, value, why in derive(PretrainConfig(), KINDS["611-image DRAC-like CSV set, 1024 px RGB files, CPU"]):
    print(f"    {setting:<20} = {value}  ({why})")
