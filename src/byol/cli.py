"""``byol`` command line: parse, call the public function, print errors as one line.  Nothing else.

Every command's flags come from its settings dataclass (``settings.add_arguments``); a flag
the user did not give stays out of the call, so the function's defaults (and, for
``pretrain``, the ``--config`` file) apply.
"""
from __future__ import annotations

import argparse
import signal
import sys

from .errors import Interrupted, UserError, command_line
from .settings import add_arguments


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .bench import BenchConfig
    from .config import PretrainConfig
    from .embed import EmbedConfig
    from .evaluate import EvalConfig
    from .export import ExportConfig
    from .finetune import FinetuneSettings
    from .report import ReportConfig
    from .views import ViewsConfig

    parser = Parser(prog="byol", description="BYOL self-supervised pre-training (Grill et al. 2020).")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    pretrain = commands.add_parser(
        "pretrain", help="pre-train an encoder on unlabeled images",
        description="Pre-train with BYOL. Settings: defaults (the CPU preset on Fashion-MNIST), then --config "
                    "YAML, then flags. Ends with k-NN and linear-probe accuracy when the data has labels.")
    pretrain.add_argument("--config", metavar="YAML", default=argparse.SUPPRESS,
                          help="a YAML file of settings (keys as in config.yaml); flags override it")
    add_arguments(pretrain, PretrainConfig)

    tuning = FinetuneSettings.names()
    evaluate = commands.add_parser(
        "eval", help="score a frozen encoder: k-NN vote or linear probe",
        description="Frozen-encoder evaluation (BYOL §4.1): features computed once, then a weighted k-NN vote or a "
                    "logistic-regression probe whose L2 is chosen on a validation split of the training labels.")
    evaluate.add_argument("protocol", choices=("knn", "linear"), help="knn: weighted cosine vote; linear: logistic "
                          "regression, L2 chosen on a validation split of the training set")
    add_arguments(evaluate, EvalConfig, exclude=tuning | {"protocols"})
    tune = commands.add_parser(
        "finetune", help="fine-tune the whole encoder plus a new head on (a fraction of) the labels",
        description="Semi-supervised evaluation (BYOL §4.2): the encoder and a new linear head trained on a "
                    "stratified label fraction with crop/flip augmentation, the epoch chosen on a validation split "
                    "of those labels, scored on the test split.")
    add_arguments(tune, EvalConfig, exclude={"protocols"})
    compare = commands.add_parser(
        "compare", help="several encoders x several protocols on the same split: one table",
        description="E.g. BYOL-pretrained vs random init vs ImageNet-pretrained: every --init is scored by every "
                    "protocol at every label fraction on the same seeded splits; one table.")
    add_arguments(compare, EvalConfig)

    speed = commands.add_parser(
        "bench", help="images/s of pre-training steps, split into augmentation / update / EMA, with FLOP utilisation",
        description="Times BYOL pre-training steps on synthetic images already on the device (the data path is "
                    "excluded), after warm-up; prints one table.")
    add_arguments(speed, BenchConfig)
    report = commands.add_parser(
        "report", help="figures and one self-contained HTML page comparing pre-training runs",
        description="Loss, k-NN accuracy against epoch and wall-clock, learning rate and tau, the collapse "
                    "statistic, a t-SNE map of each run's test embeddings, and a table comparing the runs: PNGs and "
                    "report.html (figures embedded). Needs the [report] extra (matplotlib, scikit-learn).")
    add_arguments(report, ReportConfig)
    export = commands.add_parser(
        "export", help="an encoder for torchvision, timm, ONNX or TorchScript, loadable in one line",
        description="Writes a run's encoder in another library's format and prints the line that loads it, and the "
                    "normalisation its inputs need.")
    add_arguments(export, ExportConfig)
    views = commands.add_parser(
        "views", help="a grid PNG of images next to their augmented views: what the encoder learns to ignore",
        description="One row per image: the image as evaluation sees it, then pairs of the two BYOL views, drawn "
                    "with a run's settings or those byol pretrain would derive for the data.")
    add_arguments(views, ViewsConfig)
    embed = commands.add_parser(
        "embed", help="write an encoder's features of a set of images (.npy + .csv)",
        description="Features of every image (train split, then test split) as a float32 .npy array, with a .csv "
                    "beside it naming each row's split, image file and label.")
    add_arguments(embed, EmbedConfig)
    return parser


def run(command: str, args: dict) -> None:
    """Call the public function behind ``command`` with the flags the user gave."""
    if command == "pretrain":
        from .train import pretrain

        pretrain(**args)
    elif command == "bench":
        from .bench import bench, print_bench

        print_bench(bench(**args))
    elif command == "report":
        from .report import report

        print(f"byol report: wrote {report(**args)}")
    elif command == "views":
        from .views import draw_views

        draw_views(**args)
    elif command == "export":
        from .export import export

        export(**args)
    elif command == "embed":
        from .embed import embed

        if "out" not in args:
            raise UserError("--out is required: the features file, FILE.npy")
        embed(**args)
    else:
        from .evaluate import evaluate

        if command == "eval":
            protocol = args.pop("protocol")
            evaluate(protocols=(protocol,), stem=f"eval-{protocol}", **args)
        else:
            evaluate(**({"protocols": ("finetune",)} if command == "finetune" else {}), stem=command, **args)


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    if hasattr(signal, "SIGXFSZ"):  # a file-size limit: let the write fail with an error we can explain
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        with command_line():
            run(command, args)
    except UserError as error:
        print(f"byol {command}: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as stop:  # SIGTERM / Ctrl-C during pre-training: checkpointed first
        print(f"byol {command}: {stop}", file=sys.stderr)
        return 128 + stop.signal_number
    except KeyboardInterrupt:
        print(f"byol {command}: interrupted", file=sys.stderr)
        return 130
    return 0
