"""Settings derived from the data: per data kind, named recipes under the flags, and nothing
but the images themselves (never a label) reaching the rules."""
import pytest

from byol import PretrainConfig, pretrain
from byol.settings.pretrain import recipe_names, recipe_values
from byol.settings.recipes import DataFacts, derive, resolve
from conftest import tiny_settings

KINDS = {  # (images, size, channels, bits, files, device)
    "fashion-mnist": DataFacts(60_000, 28, 1, 8, False, "cpu"),
    "a 600-image 64 px CSV set": DataFacts(611, 64, 3, 8, True, "cpu"),
    "a 224 px RGB folder": DataFacts(5_000, 224, 3, 8, True, "cpu"),
    "CIFAR-shaped 32 px RGB": DataFacts(50_000, 32, 3, 8, False, "cpu"),
    "the same folder on a GPU": DataFacts(5_000, 224, 3, 8, True, "cuda"),
    "16-bit 4-band microscopy": DataFacts(2_000, 96, 4, 16, True, "cpu"),
}


def resolved(kind: str, **given) -> PretrainConfig:
    return resolve(PretrainConfig(**given), KINDS[kind])[0]


def test_fashion_mnist_on_a_cpu_resolves_to_the_cpu_preset():
    config = resolved("fashion-mnist")
    preset = recipe_values("fashion-mnist-cpu")
    for name, value in preset.items():
        assert getattr(config, name) == value, name


def test_each_data_kind_gets_settings_that_fit_it():
    small = resolved("a 600-image 64 px CSV set")
    assert small.batch_size == 64 and small.epochs == 40 and small.image_size == 64 and small.blur  # the CPU cap
    assert small.crop_min_scale == 0.08 and small.base_target_momentum < 0.95  # few steps: a faster target
    photos = resolved("a 224 px RGB folder")
    assert photos.image_size == 64 and photos.arch == "narrow_resnet"  # a CPU cannot afford 224 px views
    gpu = resolved("the same folder on a GPU")
    assert gpu.image_size == 224 and gpu.arch == "resnet50" and gpu.hidden_dim == 4096 and gpu.batch_size == 256
    cifar = resolved("CIFAR-shaped 32 px RGB")
    assert cifar.image_size == 32 and not cifar.blur and cifar.epochs == 7  # 9 by √, 7 within the preset's pixels
    assert resolved("a 224 px RGB folder").epochs == 18  # √ gives 28; 18 of 5,000 64-px images = the preset's pixels
    assert resolved("the same folder on a GPU").epochs == 316  # no such cap on a GPU
    bands = resolved("16-bit 4-band microscopy")
    assert bands.augmentations == "microscopy"
    vit = resolve(PretrainConfig(arch="timm:vit_tiny_patch16_224"), KINDS["CIFAR-shaped 32 px RGB"])[0]
    assert vit.optimizer == "adamw" and vit.weight_decay == 0.05


def test_what_the_user_sets_is_never_derived_and_every_derived_value_says_why():
    config, lines = resolve(PretrainConfig(epochs=3, blur=False), KINDS["a 600-image 64 px CSV set"])
    assert config.epochs == 3 and config.blur is False
    assert not any(line.split("=")[0].strip() in ("epochs", "blur") for line in lines)
    assert all("(" in line and line.rstrip().endswith(")") for line in lines)
    names = {name for name, _, _ in derive(PretrainConfig(), KINDS["fashion-mnist"])}
    assert {"arch", "epochs", "batch_size", "base_lr", "base_target_momentum", "blur", "crop_min_scale"} <= names


def test_named_recipes_sit_under_the_config_file_and_the_flags(tiny_idx, tmp_path):
    assert {"auto", "fashion-mnist-cpu", "cifar", "imagenet", "imagenet-300"} <= set(recipe_names())
    for name in recipe_names()[1:]:
        PretrainConfig.create(**recipe_values(name))  # every shipped recipe is valid settings
    assert recipe_values("cifar")["trust_coefficient"] == 0.02 and recipe_values("imagenet")["knn_every"] == 0
    (tmp_path / "mine.yaml").write_text("hidden_dim: 48\n")
    run = pretrain(**tiny_settings(tiny_idx, tmp_path / "run", epochs=1, hidden_dim=None, linear_probe=False,
                                   recipe="fashion-mnist-cpu", image_size=16), config_file=str(tmp_path / "mine.yaml"))
    # the recipe's base_lr, the file's hidden_dim, the flags' batch size
    assert run.config.base_lr == 4.0 and run.config.hidden_dim == 48 and run.config.batch_size == 32


def test_the_recipe_sees_the_images_never_their_labels(tiny_idx, tmp_path):
    from byol.data import load_dataset
    from byol.settings.recipes import data_facts

    dataset = load_dataset(tiny_idx)
    with_labels = data_facts(dataset, "cpu")
    dataset.train.labels = None  # the same images without labels
    dataset.test = None
    assert data_facts(dataset, "cpu") == with_labels


def test_derived_settings_are_printed_once_and_saved(tiny_idx, tmp_path, capsys):
    import yaml

    pretrain(data=str(tiny_idx), out=str(tmp_path / "run"), epochs=1, batch_size=32, hidden_dim=16,
             linear_probe=False)
    printed = capsys.readouterr().out
    assert printed.count("settings derived from the data") == 1 and "base_target_momentum = " in printed
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["arch"] == "narrow_resnet" and saved["crop_min_scale"] is not None and saved["knn_every"] is not None


def test_each_optimizer_gets_a_rate_of_its_own_scale():
    """LARS's CPU rate 4.0 once went to SGD too, where it diverges."""
    assert resolved("fashion-mnist").base_lr == 4.0
    assert resolved("fashion-mnist", optimizer="sgd").base_lr == 0.05
    assert resolved("fashion-mnist", optimizer="adamw").base_lr == 1.5e-4


def test_biases_and_norm_parameters_keep_the_papers_rate_only_beneath_the_cpu_presets():
    """LARS does not adapt them, so the preset's 4.0 would step them 20× the paper's 0.2; every other
    rate — another optimizer's, a GPU recipe's, one the user gave — is theirs too."""
    preset = resolved("fashion-mnist")
    assert (preset.base_lr, preset.bias_norm_lr) == (4.0, 0.2)
    assert resolved("fashion-mnist", optimizer="sgd").bias_norm_lr == 0.05
    assert resolved("fashion-mnist", base_lr=2.0).bias_norm_lr == 2.0
    assert resolved("fashion-mnist", bias_norm_lr=1.0).bias_norm_lr == 1.0
    assert resolved("the same folder on a GPU").bias_norm_lr == resolved("the same folder on a GPU").base_lr == 0.2
    continued = resolved("a 600-image 64 px CSV set", init_from="weights.safetensors")
    assert continued.bias_norm_lr == pytest.approx(0.02) and continued.base_lr == pytest.approx(0.4)


def test_the_predictor_steps_ten_times_faster_only_beneath_the_cpu_recipes_derived_rate():
    """Short CPU runs (at most half the preset's steps) at the derived LARS rate 4.0 give the predictor's
    weights 40; every other rate — the preset's own length, another optimizer's, a GPU recipe's, one the
    user gave — is base-lr's."""
    small = resolved("a 600-image 64 px CSV set")
    assert (small.base_lr, small.predictor_lr) == (4.0, 40.0)
    assert resolved("fashion-mnist").predictor_lr == 4.0  # 1872 steps: the preset keeps the paper's, as chosen
    assert resolved("CIFAR-shaped 32 px RGB").predictor_lr == 4.0  # 1365 steps
    assert resolved("a 600-image 64 px CSV set", optimizer="sgd").predictor_lr == 0.05
    assert resolved("a 600-image 64 px CSV set", base_lr=2.0).predictor_lr == 2.0
    assert resolved("a 600-image 64 px CSV set", predictor_lr=1.0).predictor_lr == 1.0
    assert resolved("the same folder on a GPU").predictor_lr == resolved("the same folder on a GPU").base_lr == 0.2
    continued = resolved("a 600-image 64 px CSV set", init_from="weights.safetensors")
    assert continued.predictor_lr == pytest.approx(4.0) and continued.base_lr == pytest.approx(0.4)


def test_continuing_from_weights_is_gentler_than_starting_from_scratch():
    scratch = resolved("a 600-image 64 px CSV set")
    continued = resolved("a 600-image 64 px CSV set", init_from="weights.safetensors")
    assert continued.base_lr < scratch.base_lr and continued.warmup_epochs < scratch.warmup_epochs
    assert continued.base_target_momentum > scratch.base_target_momentum
    given = resolved("a 600-image 64 px CSV set", init_from="weights.safetensors", base_lr=2.0)
    assert given.base_lr == 2.0  # a rate given is never changed


def test_a_time_budget_spends_its_time_on_a_larger_view_only_when_epochs_allow():
    from byol.settings.recipes import BUDGET_MIN_EPOCHS, budget_size, budget_sizes

    octa = DataFacts(1_000, 512, 1, 8, True, "cpu")
    assert budget_sizes(octa) == [64, 96, 128, 224]
    assert budget_sizes(DataFacts(1_000, 100, 1, 8, True, "cpu")) == [64, 96]
    assert budget_sizes(KINDS["fashion-mnist"]) == [28]  # arrays: their own size
    plenty = {64: 4 * BUDGET_MIN_EPOCHS, 96: 2 * BUDGET_MIN_EPOCHS, 128: BUDGET_MIN_EPOCHS, 224: BUDGET_MIN_EPOCHS // 3}
    assert budget_size(plenty, octa)[0] == 128
    assert budget_size({64: BUDGET_MIN_EPOCHS - 1, 96: 5}, octa)[0] == 64


def test_the_view_chooser_tries_the_paper_table_against_geometry_alone_by_kind_of_image():
    """Gray and colour 8-bit images try the same three views (the paper's table at the recipe's
    crop, geometry from 30 % and 60 %); 16-bit and N-band images the microscopy set in the table's
    place, since the paper's colour operations do not apply to them."""
    from byol.training.choose import candidates

    def names(facts):
        return [candidate.name for candidate in candidates(facts, 0.08)]

    eight_bit = ["full-crop-0.08", "geometric-crop-0.3", "geometric-crop-0.6"]
    assert names(DataFacts(997, 512, 1, 8, True, "cpu")) == eight_bit
    assert names(DataFacts(997, 256, 3, 8, True, "cpu")) == eight_bit  # no colour-only candidate: a proxy less
    for channels, bits in ((1, 16), (4, 16), (4, 8)):
        assert names(DataFacts(500, 64, channels, bits, True, "cpu")) == \
            ["microscopy-crop-0.08", "geometric-crop-0.3", "geometric-crop-0.6"], (channels, bits)
