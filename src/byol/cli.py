"""``byol`` command line: parse, build the config, call the public API.  Nothing else."""
from __future__ import annotations

import argparse
import dataclasses
import sys

from .config import PretrainConfig, UserError, resolve_config
from .finetune import BALANCING, FinetuneSettings


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    for field in dataclasses.fields(PretrainConfig):
        flag = "--" + field.name.replace("_", "-")
        help_text = f"{field.metadata['help']} [default: {field.default}]".replace("%", "%%")  # argparse formats help with %
        if "bool" in str(field.type):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, default=argparse.SUPPRESS, metavar=field.name.upper(), help=help_text)


INIT_HELP = ("byol:RUN_DIR (or a run directory) | random | pixels (raw-pixel baseline) | a weights file: "
             "byol's .safetensors, or a torchvision .pth state dict of --arch, e.g. ImageNet weights you have")


def _add_eval_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="labelled images: class folders, image,label CSV, idx, CIFAR, STL-10, npz; "
                        "default: Fashion-MNIST")
    parser.add_argument("--test-data", help="test images with labels, when --data has no test split")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="without a test split or --test-data: "
                        "stratified share of the labelled images held out as test set [default: 0.2]")
    parser.add_argument("--label-fraction", type=float, nargs="+", default=[1.0], dest="label_fractions",
                        help="share of the training labels used, stratified and seeded, e.g. 0.01 0.1 1 "
                        "(each subset is saved as subset-F-seedS.csv) [default: 1]")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of those labels held out to "
                        "choose the probe's L2 / the fine-tuning epoch [default: 0.1]")
    parser.add_argument("--subset", help="a subset-*.csv from an earlier run: use exactly its images")
    parser.add_argument("--metric", help="selection metric: top1, balanced_accuracy, macro_f1 or qwk "
                        "[default: qwk with --ordinal, else top1]")
    parser.add_argument("--ordinal", action="store_true", help="labels are ordered grades (e.g. retinopathy "
                        "0/1/2): select by quadratic weighted kappa")
    parser.add_argument("--arch", default="narrow_resnet", help="encoder for random init or a .pth state dict "
                        "[default: narrow_resnet]; byol weights carry their own")
    parser.add_argument("--image-size", type=int, help="side the images are evaluated at; default: the dataset's")
    parser.add_argument("--out", help="folder for the results (.csv, .md, subset files) [default: the run "
                        "directory of a byol: init, else ./byol-eval]")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto [default: auto]")
    parser.add_argument("--knn-k", type=int, default=200, help="neighbours in the vote [default: 200]")
    parser.add_argument("--knn-temperature", type=float, default=0.1, help="vote temperature [default: 0.1]")
    parser.add_argument("--seed", type=int, default=0, help="seed of random init, label subsets, splits "
                        "and fine-tuning [default: 0]")


def _add_finetune_options(parser: argparse.ArgumentParser) -> None:
    defaults = FinetuneSettings()
    group = parser.add_argument_group("fine-tuning")
    group.add_argument("--epochs", type=int, default=defaults.epochs, help="at most this many epochs "
                       f"[default: {defaults.epochs}]")
    group.add_argument("--patience", type=int, default=defaults.patience, help="stop after this many epochs "
                       "without a better validation score; 0: run all epochs (the best validation epoch is "
                       "kept either way; with cosine decay the late epochs improve most) [default: 0]")
    group.add_argument("--batch-size", type=int, default=defaults.batch_size, help=f"[default: {defaults.batch_size}]")
    group.add_argument("--lr", type=float, default=defaults.base_lr, dest="base_lr", help="SGD (Nesterov) "
                       f"learning rate per 256 images, cosine decay [default: {defaults.base_lr}]")
    group.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                       help=f"[default: {defaults.weight_decay}]")
    group.add_argument("--crop-min-scale", type=float, default=defaults.crop_min_scale, help="random resized "
                       f"crop scale (min, 1), plus horizontal flip [default: {defaults.crop_min_scale}]")
    group.add_argument("--balance", choices=BALANCING, default=defaults.balance, help="class imbalance: "
                       "loss = class-weighted cross-entropy, sampler = class-balanced draws [default: none]")


FINETUNE_OPTIONS = {f.name for f in dataclasses.fields(FinetuneSettings)} - {"metric"}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="byol", description="BYOL self-supervised pre-training (Grill et al. 2020).")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    pretrain = commands.add_parser(
        "pretrain", help="pre-train an encoder on unlabeled images",
        description="Pre-train with BYOL. Settings: defaults (the CPU preset on Fashion-MNIST), then --config "
                    "YAML, then flags. Ends with k-NN and linear-probe accuracy when the data has labels.")
    pretrain.add_argument("--config", metavar="YAML", help="settings file (see configs/); flags override it")
    _add_config_options(pretrain)

    evaluate = commands.add_parser(
        "eval", help="score a frozen encoder: k-NN vote or linear probe",
        description="Frozen-encoder evaluation (BYOL §4.1): features computed once, then a weighted k-NN vote or "
                    "a logistic-regression probe whose L2 is chosen on a validation split of the training labels.")
    evaluate.add_argument("method", choices=("knn", "linear"), help="knn: weighted cosine vote; linear: "
                          "logistic regression, L2 chosen on a validation split of the training set")
    evaluate.add_argument("--init", required=True, help=INIT_HELP)
    _add_eval_options(evaluate)

    tune = commands.add_parser(
        "finetune", help="fine-tune the whole encoder plus a new head on (a fraction of) the labels",
        description="Semi-supervised evaluation (BYOL §4.2): the encoder and a new linear head trained on a "
                    "stratified --label-fraction of the labels with crop/flip augmentation, the epoch chosen "
                    "on a validation split of those labels (early stopping), scored on the test split.")
    tune.add_argument("--init", required=True, help=INIT_HELP)
    _add_eval_options(tune)
    _add_finetune_options(tune)

    compare = commands.add_parser(
        "compare", help="several encoders x several methods on the same split: one table",
        description="E.g. BYOL-pretrained vs random init vs ImageNet-pretrained: every --init is scored by every "
                    "--methods at every --label-fraction on the same seeded splits; one table.")
    compare.add_argument("--init", action="append", required=True, help=INIT_HELP + "; repeat for each encoder")
    compare.add_argument("--methods", nargs="+", default=["knn", "linear", "finetune"],
                         choices=("knn", "linear", "finetune"), help="[default: knn linear finetune]")
    _add_eval_options(compare)
    _add_finetune_options(compare)

    speed = commands.add_parser(
        "bench", help="images/s of pre-training steps, split into augmentation / update / EMA, with FLOP utilisation",
        description="Times BYOL pre-training steps on synthetic images already on the device (the data path is "
                    "excluded), after warm-up; prints one table.")
    speed.add_argument("--arch", default="resnet18", help="[default: resnet18]")
    speed.add_argument("--image-size", type=int, default=32, help="[default: 32]")
    speed.add_argument("--batch-size", type=int, default=512, help="[default: 512]")
    speed.add_argument("--channels", type=int, default=3, help="[default: 3]")
    speed.add_argument("--hidden-dim", type=int, default=4096, help="MLP head width [default: 4096]")
    speed.add_argument("--steps", type=int, default=20, help="timed steps per repeat [default: 20]")
    speed.add_argument("--warmup", type=int, default=5, help="untimed steps first [default: 5]")
    speed.add_argument("--repeats", type=int, default=3, help="[default: 3; the median is reported]")
    speed.add_argument("--device", default="auto", help="cuda, cpu or auto [default: auto]")
    speed.add_argument("--compile", action="store_true", help="torch.compile the model first")
    speed.add_argument("--peak-tflops", type=float, help="the device's peak, for the utilisation column "
                       "(known for H100/H200/A100)")

    report = commands.add_parser(
        "report", help="figures and one self-contained HTML page comparing pre-training runs",
        description="Loss, k-NN accuracy against epoch and wall-clock, learning rate and tau, the collapse "
                    "statistic, a t-SNE map of each run's test embeddings, and a table comparing the runs: PNGs "
                    "and report.html (figures embedded). Needs the [report] extra (matplotlib, scikit-learn).")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories of byol pretrain")
    report.add_argument("--out", help="folder for report.html and the PNGs [default: RUN_DIR/report for one run, "
                        "./byol-report for several]")
    report.add_argument("--map-images", type=int, default=2000, help="test images in each t-SNE map; 0 skips the "
                        "maps (they need the dataset and take ~20 s per run on a CPU) [default: 2000]")
    report.add_argument("--device", default="auto", help="where the test images are embedded: cuda, cpu or auto "
                        "[default: auto]")

    embed = commands.add_parser(
        "embed", help="write an encoder's features of a set of images (.npy + .csv)",
        description="Features of every image (train split, then test split) as a float32 .npy array, with a "
                    ".csv beside it naming each row's split, image file and label.")
    embed.add_argument("--init", required=True, help=INIT_HELP)
    embed.add_argument("--data", help="images (any format byol reads; labels optional); default: Fashion-MNIST")
    embed.add_argument("--out", required=True, help="features file, FILE.npy (FILE.csv is written beside it)")
    embed.add_argument("--arch", default="narrow_resnet", help="encoder for random init or a .pth state dict")
    embed.add_argument("--image-size", type=int, help="side the images are resized to; default: the dataset's")
    embed.add_argument("--device", default="auto", help="cuda, cpu or auto [default: auto]")
    embed.add_argument("--seed", type=int, default=0, help="seed of a random init [default: 0]")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    try:
        if command == "pretrain":
            from .train import pretrain

            yaml_path = args.pop("config", None)
            config = resolve_config(yaml_path, args)
            pretrain(config, given_options=set(args))
        elif command == "bench":
            from .bench import bench, print_bench

            result = bench(**args)
            print_bench(result, args["arch"], args["image_size"], args["batch_size"], args["device"], args["compile"])
        elif command == "report":
            from .report import report

            print(f"byol report: wrote {report(**args)}")
        elif command == "embed":
            from .evaluate import embed

            embed(**args)
        else:
            from .evaluate import EvalSettings, run_evaluation

            inits = args.pop("init")
            inits = inits if isinstance(inits, list) else [inits]
            methods = args.pop("methods", None) or [args.pop("method", "finetune")]
            tuning = {name: args.pop(name) for name in FINETUNE_OPTIONS if name in args}
            metric = args["metric"] or ("qwk" if args["ordinal"] else "top1")
            settings = EvalSettings(**args, finetune=FinetuneSettings(**tuning, metric=metric))
            settings.label_fractions = tuple(settings.label_fractions)
            stem = {"eval": f"eval-{methods[0]}", "finetune": "finetune", "compare": "compare"}[command]
            run_evaluation(inits, methods, settings, stem)
    except UserError as error:
        print(f"byol {command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"byol {command}: interrupted; the last finished epoch is in checkpoints/last.pt "
              "(continue with --resume)", file=sys.stderr)
        return 130
    return 0
