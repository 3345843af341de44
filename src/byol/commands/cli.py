"""``byol`` command line: parse, call the public function, print errors as one line.  Nothing else.

Every command's flags come from its settings dataclass (``mechanism.add_arguments``), and every
command takes ``--config FILE.yaml``; a flag the user did not give stays out of the call, so
the function's defaults and the file apply (``Settings.resolve``: defaults < file < flags).
"""
from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import dataclass
from typing import Callable

from ..base.errors import Interrupted, UserError, command_line
from ..evaluation.compare import EvalConfig, evaluate
from ..evaluation.finetune import FinetuneSettings
from ..settings.mechanism import add_arguments
from ..settings.pretrain import PretrainConfig
from ..training.loop import pretrain
from .bench import BenchConfig, bench, print_bench
from .embed import EmbedConfig, embed
from .export import ExportConfig, export
from .report import ReportConfig, report
from .view_grid import ViewsConfig, draw_views


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    description: str
    settings: type                 # the settings class: the flags
    run: Callable[[dict], None]    # calls the public function with the flags given
    exclude: frozenset = frozenset()


def _eval(args: dict) -> None:
    protocol = args.pop("protocol")
    evaluate(protocols=(protocol,), stem=f"eval-{protocol}", **args)


COMMANDS = (
    Command("pretrain", "pre-train an encoder on unlabeled images",
            "Pre-train with BYOL. Settings: derived from the data, then --recipe, then --config YAML, then flags. "
            "Ends with k-NN and linear-probe accuracy when the data has labels.", PretrainConfig,
            lambda args: pretrain(**args)),
    Command("eval", "score a frozen encoder: k-NN vote or linear probe",
            "Frozen-encoder evaluation (BYOL §4.1): features computed once, then a weighted k-NN vote or a "
            "logistic-regression probe whose L2 is chosen on a validation split of the training labels.",
            EvalConfig, _eval, frozenset(FinetuneSettings.names() | {"protocols"})),
    Command("finetune", "fine-tune the whole encoder plus a new head on (a fraction of) the labels",
            "Semi-supervised evaluation (BYOL §4.2): the encoder and a new linear head trained on a stratified "
            "label fraction with crop/flip augmentation, scored on the test split.", EvalConfig,
            lambda args: evaluate(protocols=("finetune",), stem="finetune", **args), frozenset({"protocols"})),
    Command("compare", "several encoders x several protocols on the same splits: one table, paired verdicts",
            "E.g. BYOL-pretrained vs random init vs ImageNet-pretrained: every --init is scored by every protocol "
            "at every label fraction on the same seeded splits; every pair of encoders gets the difference with "
            "a 95 % interval over test images and seeds, and a verdict.", EvalConfig,
            lambda args: evaluate(stem="compare", **args)),
    Command("bench", "images/s of pre-training steps, split into augmentation / update / EMA, with FLOP utilisation",
            "Times BYOL pre-training steps on synthetic images already on the device (the data path is excluded), "
            "after warm-up; prints one table.", BenchConfig, lambda args: print_bench(bench(**args))),
    Command("report", "figures and one self-contained HTML page comparing pre-training runs",
            "Loss, k-NN accuracy against epoch and wall-clock, learning rate and tau, the collapse statistic, a "
            "t-SNE map of each run's test embeddings, and a table comparing the runs: PNGs and report.html (figures "
            "embedded). Needs the [report] extra (matplotlib, scikit-learn).", ReportConfig,
            lambda args: print(f"byol report: wrote {report(**args)}")),
    Command("export", "an encoder for torchvision, timm, ONNX or TorchScript, loadable in one line",
            "Writes a run's encoder in another library's format and prints the line that loads it, and the "
            "normalisation its inputs need.", ExportConfig, lambda args: export(**args)),
    Command("views", "a grid PNG of images next to their augmented views: what the encoder learns to ignore",
            "One row per image: the image as evaluation sees it, then pairs of the two BYOL views, drawn with a "
            "run's settings or those byol pretrain would derive for the data.", ViewsConfig,
            lambda args: draw_views(**args)),
    Command("embed", "write an encoder's features of a set of images (.npy + .csv)",
            "Features of every image (train split, then test split) as a float32 .npy array, with a .csv beside "
            "it naming each row's split, image file and label.", EmbedConfig, lambda args: embed(**args)),
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="byol", description="BYOL self-supervised pre-training (Grill et al. 2020).")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.summary, description=command.description)
        if command.name == "eval":
            sub.add_argument("protocol", choices=("knn", "linear"), help="knn: weighted cosine vote; linear: "
                             "logistic regression, L2 chosen on a validation split of the training set")
        sub.add_argument("--config", dest="config_file", metavar="YAML", default=argparse.SUPPRESS,
                         help="a YAML file of this command's settings (keys as the flags, with _ for -); flags "
                              "override it")
        add_arguments(sub, command.settings, exclude=command.exclude)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    name = args.pop("command")
    command = next(c for c in COMMANDS if c.name == name)
    if hasattr(signal, "SIGXFSZ"):  # a file-size limit: let the write fail with an error we can explain
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        with command_line():
            command.run(args)
    except UserError as error:
        print(f"byol {name}: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as stop:  # SIGTERM / Ctrl-C during pre-training: checkpointed first
        print(f"byol {name}: {stop}", file=sys.stderr)
        return 128 + stop.signal_number
    except KeyboardInterrupt:
        print(f"byol {name}: interrupted", file=sys.stderr)
        return 130
    return 0
